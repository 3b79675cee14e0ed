using System.Runtime.CompilerServices;
using Akka;
using Akka.Streams.Dsl;
using FlashLm.Models;
using FlashLm.Models.Sampling;

namespace FlashLm.Runtime.Session;

/// <summary>
/// A conversation on a <see cref="FlashRuntime"/>: its own KV cache, kept across turns, so a chat continues
/// where it stopped. One turn runs at a time; sessions run concurrently with each other.
/// </summary>
public sealed class FlashSession : IAsyncDisposable, IDisposable
{
    private readonly FlashRuntime _runtime;
    private readonly SemaphoreSlim _turn = new(1, 1);
    private int? _pending;   // the last token produced, not yet fed (the next turn feeds it first)
    private bool _disposed;

    internal FlashSession(FlashRuntime runtime, int id, InferenceState state)
    {
        _runtime = runtime;
        Id = id;
        State = state;
    }

    /// <summary>Identifies the session within its runtime.</summary>
    public int Id { get; }

    internal InferenceState State { get; }

    internal Task Running { get; set; } = Task.CompletedTask;

    /// <summary>The actor that runs this session's positions as a stage of a pipeline across nodes (null until it stages).</summary>
    internal Akka.Actor.IActorRef? StageActor { get; set; }

    /// <summary>Positions of the context already in the KV cache.</summary>
    public int Position { get; private set; }

    /// <summary>Positions this session can hold (the runtime's KV size).</summary>
    public int Capacity => State.Positions;

    internal void Advance(int position, int pending)
    {
        Position = position;
        _pending = pending;
    }

    /// <summary>
    /// One turn: feeds <paramref name="prompt"/> (with BOS on the first turn) after the context so far, then
    /// samples until <paramref name="maxPositions"/> positions are used in this turn (prompt included, like
    /// run.c's -n; 0 = up to the session's capacity) or the model emits BOS.
    /// </summary>
    public IAsyncEnumerable<TokenEvent> GenerateAsync(string prompt, int maxPositions, SamplingOptions sampling, CancellationToken cancellation = default)
    {
        var tokens = _runtime.Tokenizer.Encode(prompt, addBos: Position == 0 && _pending is null);
        return GenerateTokensAsync(tokens, maxPositions, sampling, cancellation);
    }

    /// <summary>As <see cref="GenerateAsync"/>, with the prompt already tokenized (no BOS is added).</summary>
    public IAsyncEnumerable<TokenEvent> GenerateTokensAsync(int[] prompt, int maxPositions, SamplingOptions sampling, CancellationToken cancellation = default) =>
        GenerateTokensAsync(prompt, maxPositions, sampling, prefill: null, cancellation);

    /// <summary>
    /// As above; only the first <paramref name="prefill"/> prompt tokens are prefill, the rest are fed one per step as
    /// forced decode steps (how benchmarks follow a fixed, non-repeating text).
    /// </summary>
    public async IAsyncEnumerable<TokenEvent> GenerateTokensAsync(int[] prompt, int maxPositions, SamplingOptions sampling, int? prefill,
        [EnumeratorCancellation] CancellationToken cancellation = default)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        await _turn.WaitAsync(cancellation).ConfigureAwait(false);
        try
        {
            int[] input = _pending is { } p ? [p, .. prompt] : prompt;
            if (input.Length == 0) throw new ArgumentException("the prompt is empty and there is no context to continue");
            int room = Capacity - Position;
            int limit = maxPositions <= 0 ? Capacity : Math.Min(Capacity, Position + maxPositions);
            if (input.Length > Math.Min(room, limit - Position))
                throw new ArgumentException($"the prompt needs {input.Length} positions; the session has {room} of {Capacity} left (context so far {Position})");
            await foreach (var ev in _runtime.RunTurn(this, input, Position, limit, sampling, prefill is { } p2 && _pending is not null ? p2 + 1 : prefill, cancellation).ConfigureAwait(false))
                yield return ev;
        }
        finally
        {
            _turn.Release();
        }
    }

    /// <summary>
    /// Keeps the first <paramref name="position"/> positions of the context and forgets the rest (and the last token produced,
    /// not yet fed), so the next turn continues after them: a conversation whose new prompt shares only a prefix with what the
    /// KV cache holds re-feeds only what differs. Not while a turn runs.
    /// </summary>
    public void Rewind(int position)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (position < 0 || position > Position)
            throw new ArgumentOutOfRangeException(nameof(position), position, $"the session holds {Position} positions");
        if (!_turn.Wait(0)) throw new InvalidOperationException("a turn is running on this session");
        try
        {
            Position = position;
            _pending = null;
        }
        finally
        {
            _turn.Release();
        }
    }

    /// <summary>The same turn as an Akka.Streams source.</summary>
    public Source<TokenEvent, NotUsed> GenerateSource(string prompt, int maxPositions, SamplingOptions sampling, CancellationToken cancellation = default) =>
        Source.From(() => GenerateAsync(prompt, maxPositions, sampling, cancellation));

    /// <summary>Closes the session and frees its slot (its KV cache is dropped).</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _runtime.Closed(this);
    }

    /// <summary>As <see cref="Dispose"/>.</summary>
    public ValueTask DisposeAsync()
    {
        Dispose();
        return ValueTask.CompletedTask;
    }
}
