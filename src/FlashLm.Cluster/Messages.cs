using Akka.Actor;
using FlashLm.Models.Sampling;

namespace FlashLm.Cluster;

/// <summary>Every message between nodes; <see cref="ClusterSerializer"/> writes them (a compact binary form, not JSON).</summary>
public interface IClusterMessage;

// ---- conversations sharded across nodes ------------------------------------------------------------------------------

/// <summary>One turn of a conversation (to its shard region): feed <paramref name="Tokens"/> (the whole transcript, BOS
/// included; the entity re-feeds only what its KV cache does not hold) and sample up to <paramref name="MaxPositions"/>
/// positions of the transcript; tokens go to <paramref name="ReplyTo"/>. A generated token in <paramref name="StopTokens"/> (the
/// end of text, the chat format's end of turn) is sent and ends the turn.</summary>
public sealed record Turn(string Conversation, long Request, int[] Tokens, int MaxPositions, SamplingOptions Sampling, IActorRef ReplyTo, int[] StopTokens) : IClusterMessage;

/// <summary>The entity took the turn: which node holds the conversation, and how many positions of its KV cache it reused.</summary>
public sealed record TurnStarted(long Request, string Node, int Reused) : IClusterMessage;

/// <summary>A generated token (at most <see cref="ConversationEntity.Credits"/> unacknowledged: back-pressure across nodes).</summary>
public sealed record TurnToken(long Request, int Seq, int Position, int Token, byte[] Piece, long BytesRead, int Active, int Hits, double TotalMs) : IClusterMessage;

/// <summary>The receiver took token <paramref name="Seq"/>: one more may come.</summary>
public sealed record TurnAck(long Request, int Seq) : IClusterMessage;

/// <summary>The turn ended; <paramref name="Error"/> says why it failed (null: it completed); <paramref name="Busy"/>: the node
/// had no session free in time (the server answers 429).</summary>
public sealed record TurnEnd(long Request, string? Error, bool Busy = false) : IClusterMessage;

/// <summary>The requester went away: stop the turn.</summary>
public sealed record TurnCancel(string Conversation, long Request) : IClusterMessage;

// ---- layers across nodes ---------------------------------------------------------------------------------------------

/// <summary>
/// One position of a conversation through the pipeline: the first stage takes <paramref name="Token"/>, each later one the
/// <paramref name="Hidden"/> state the stage before produced. The last stage runs the head and, when <paramref name="NeedToken"/>,
/// samples with <paramref name="Sampling"/> (its sampler lives per <paramref name="Turn"/>) and answers <paramref name="Driver"/>
/// with a <see cref="StageResult"/>. Each stage appends its own time to <paramref name="StageMs"/> and adds what it read.
/// </summary>
public sealed record StageStep(string Conversation, long Turn, int Position, int Token, float[]? Hidden, bool Prefill, bool NeedToken,
    SamplingOptions Sampling, IActorRef Driver, double[] StageMs, long BytesRead, int Active, int Hits) : IClusterMessage;

/// <summary>The last stage's answer for a position: the sampled token (-1 for a prompt position), what each stage took and
/// read; or the error of the stage that failed.</summary>
public sealed record StageResult(string Conversation, int Position, int Token, double[] StageMs, long BytesRead, int Active, int Hits, string? Error) : IClusterMessage;

/// <summary>The conversation ended: every stage frees its session (forwarded down the pipeline).</summary>
public sealed record StageRelease(string Conversation) : IClusterMessage;
