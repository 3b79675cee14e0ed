using FlashLm.Formats;
using FlashLm.Hosting;
using FlashLm.Models.Sampling;
using FlashLm.Runtime;
using FlashLm.Runtime.Session;

namespace FlashLm.Server;

/// <summary>
/// What the OpenAI server generates with: the runtime of this process (<see cref="LocalModel"/>), or a cluster of them
/// (conversations sharded across nodes, or layers across nodes; FlashLm.Cluster).
/// </summary>
public interface IServedModel
{
    /// <summary>True while it can generate.</summary>
    bool IsRunning { get; }

    /// <summary>The model's tokenizer (requests are tokenized where they arrive).</summary>
    ITextTokenizer Tokenizer { get; }

    /// <summary>The model's chat template (Jinja text), or null.</summary>
    string? ChatTemplate { get; }

    /// <summary>The model's name (the default model id).</summary>
    string Name { get; }

    /// <summary>Positions one conversation holds.</summary>
    int Capacity { get; }

    /// <summary>Generations that may run at once (requests beyond queue).</summary>
    int MaxConcurrent { get; }

    /// <summary>The runtime's counters, where there is one runtime (null otherwise).</summary>
    RuntimeStats? Stats { get; }

    /// <summary>More Prometheus metrics for /metrics (a cluster's hops), or empty.</summary>
    string ExtraMetrics() => "";

    /// <summary>
    /// One generation: feeds <paramref name="tokens"/> (BOS included) and samples until <paramref name="maxPositions"/> positions
    /// (prompt included) or the model ends the text. <paramref name="conversation"/> names a conversation whose KV cache may be
    /// kept between requests (null: a fresh one). <paramref name="served"/> hears which node serves it, where that is known.
    /// The caller stops reading after a token in <paramref name="stopTokens"/>; a model may end the turn there itself.
    /// </summary>
    IAsyncEnumerable<TokenEvent> GenerateAsync(string? conversation, int[] tokens, int maxPositions, SamplingOptions sampling,
        IReadOnlyList<int> stopTokens, Action<ServedBy>? served, CancellationToken cancellation);

    /// <summary>Members of the cluster that are up (null: not a cluster).</summary>
    int? ClusterMembers => null;
}

/// <summary>Where a generation ran: the node, and how many positions of the conversation's KV cache it reused.</summary>
public sealed record ServedBy(string Node, int ReusedPositions);

/// <summary>The model cannot take the generation now (e.g. every session of the node holding the conversation is busy): 429.</summary>
public sealed class ModelBusyException(string message) : Exception(message);

/// <summary>The hosted runtime of this process: every request in a fresh session.</summary>
internal sealed class LocalModel(IFlashLm lm) : IServedModel
{
    public bool IsRunning => lm.IsRunning;
    public ITextTokenizer Tokenizer => lm.Tokenizer;
    public string? ChatTemplate => lm.Runtime.ChatTemplate;
    public string Name => lm.Runtime.Config.Name;
    public int Capacity => lm.Runtime.Positions;
    public int MaxConcurrent => lm.Runtime.Settings.MaxSessions;
    public RuntimeStats? Stats => lm.IsRunning ? lm.Stats : null;

    public async IAsyncEnumerable<TokenEvent> GenerateAsync(string? conversation, int[] tokens, int maxPositions, SamplingOptions sampling,
        IReadOnlyList<int> stopTokens, Action<ServedBy>? served, [System.Runtime.CompilerServices.EnumeratorCancellation] CancellationToken cancellation)
    {
        await using var session = await lm.Runtime.CreateSessionAsync(cancellation).ConfigureAwait(false);
        await foreach (var ev in session.GenerateTokensAsync(tokens, maxPositions, sampling, cancellation).ConfigureAwait(false))
            yield return ev;
    }
}
