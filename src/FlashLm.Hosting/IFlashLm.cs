using FlashLm.Formats;
using FlashLm.Models.Sampling;
using FlashLm.Runtime;

namespace FlashLm.Hosting;

/// <summary>
/// The flash runtime as a DI service. Usable between the host's start and stop: before start calls throw
/// <see cref="InvalidOperationException"/>, after stop <see cref="ObjectDisposedException"/>.
/// </summary>
public interface IFlashLm
{
    /// <summary>True between a successful start and stop.</summary>
    bool IsRunning { get; }

    /// <summary>The flash-layout folder in use (after conversion, if the model was not one).</summary>
    string LayoutFolder { get; }

    /// <summary>The model's tokenizer (e.g. to count a prompt's positions).</summary>
    ITextTokenizer Tokenizer { get; }

    /// <summary>The underlying runtime, for what the facade does not cover.</summary>
    FlashRuntime Runtime { get; }

    /// <summary>Runtime-wide counters.</summary>
    RuntimeStats Stats { get; }

    /// <summary>A conversation whose context is kept across turns; waits for a free slot when all are in use (per configuration).</summary>
    Task<IFlashLmSession> CreateSessionAsync(CancellationToken cancellation = default);

    /// <summary>One-shot generation in a fresh session: the prompt with BOS, up to <paramref name="maxPositions"/> positions (prompt included).</summary>
    IAsyncEnumerable<FlashLmToken> GenerateAsync(string prompt, int maxPositions, SamplingOptions sampling, CancellationToken cancellation = default);
}

/// <summary>A conversation on <see cref="IFlashLm"/>: its own KV cache, kept across turns.</summary>
public interface IFlashLmSession : IAsyncDisposable, IDisposable
{
    /// <summary>Positions of context already held.</summary>
    int Position { get; }

    /// <summary>Positions the session can hold.</summary>
    int Capacity { get; }

    /// <summary>One turn after the context so far: feeds <paramref name="prompt"/>, then samples until <paramref name="maxPositions"/> positions are used in this turn (prompt included; 0 = up to capacity) or the model ends the text.</summary>
    IAsyncEnumerable<FlashLmToken> GenerateAsync(string prompt, int maxPositions, SamplingOptions sampling, CancellationToken cancellation = default);
}
