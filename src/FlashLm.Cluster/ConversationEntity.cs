using Akka.Actor;
using FlashLm.Runtime;
using FlashLm.Server;

namespace FlashLm.Cluster;

/// <summary>
/// A conversation, sharded across the cluster's whole-model nodes (Akka.Cluster.Sharding): its KV cache stays on the node that
/// holds it. Each <see cref="Turn"/> carries the whole transcript; the entity re-feeds only what differs from what its cache
/// holds (the longest common prefix is kept), so a chat's next turn pays only for the new messages. Tokens go to the requester
/// with at most <see cref="Credits"/> unacknowledged (back-pressure across nodes); a requester that goes away (or sends
/// <see cref="TurnCancel"/>) stops the turn. When the node leaves, the conversation's shard moves to a node that remains and
/// its next turn restarts from the transcript there.
/// </summary>
internal sealed class ConversationEntity : ReceiveActor
{
    /// <summary>Tokens sent but not yet acknowledged, at most.</summary>
    public const int Credits = 16;

    private sealed record Finished(long Request);

    private sealed class Running(Turn turn, CancellationTokenSource cancel)
    {
        public Turn Turn { get; } = turn;
        public CancellationTokenSource Cancel { get; } = cancel;
        public SemaphoreSlim Credits { get; } = new(ConversationEntity.Credits, ConversationEntity.Credits);
    }

    private readonly ClusterNode.Local _node;
    private readonly string _id;
    private readonly SessionPool.Slot _slot = new();
    private List<int> _fed = []; // the tokens whose keys and values the session's cache holds, by position
    private Running? _running;
    private readonly Queue<long> _done = new(); // the last turns that ran here, so a repeat of one is not run twice

    public ConversationEntity(ClusterNode.Local node, string id)
    {
        _node = node;
        _id = id;
        Receive<Turn>(Start);
        Receive<TurnAck>(a =>
        {
            if (_running is { } r && r.Turn.Request == a.Request) r.Credits.Release();
        });
        Receive<TurnCancel>(c =>
        {
            if (_running is { } r && r.Turn.Request == c.Request) r.Cancel.Cancel();
        });
        Receive<Terminated>(t =>
        {
            if (_running is { } r && r.Turn.ReplyTo.Equals(t.ActorRef)) r.Cancel.Cancel();
        });
        Receive<Finished>(f =>
        {
            if (_running is not { } r || r.Turn.Request != f.Request) return;
            Context.Unwatch(r.Turn.ReplyTo);
            _done.Enqueue(f.Request);
            if (_done.Count > 16) _done.Dequeue();
            r.Cancel.Dispose();
            _running = null;
        });
    }

    private void Start(Turn t)
    {
        // A turn sent again (it was not taken in time; see ShardedModel) that this entity already runs or ran.
        if (_running?.Turn.Request == t.Request || _done.Contains(t.Request)) return;
        if (_running is not null)
        {
            t.ReplyTo.Tell(new TurnEnd(t.Request, $"conversation {_id} is already generating a turn (one at a time)", Busy: true));
            return;
        }
        var running = new Running(t, new CancellationTokenSource());
        _running = running;
        Context.Watch(t.ReplyTo);
        var self = Self;
        _ = Task.Run(async () =>
        {
            try
            {
                await RunAsync(running, self).ConfigureAwait(false);
            }
            finally
            {
                self.Tell(new Finished(t.Request));
            }
        });
    }

    /// <summary>The turn, off the actor's thread (it touches only this conversation's session and transcript; turns run one at a time).</summary>
    private async Task RunAsync(Running running, IActorRef self)
    {
        var t = running.Turn;
        var ct = running.Cancel.Token;
        var generated = new List<int>();
        int[] tokens = t.Tokens;
        bool held = false, failed = true;
        try
        {
            if (tokens.Length == 0 || t.MaxPositions < tokens.Length) throw new ArgumentException($"a turn of {tokens.Length} tokens up to {t.MaxPositions} positions");
            var (session, kept) = await _node.Pool.AcquireAsync(_slot, _node.Settings.StartTimeout, ct).ConfigureAwait(false);
            held = true;
            if (!kept) _fed = [];
            // Keep the longest prefix the cache already holds (at least one token is fed, to produce the next one's logits).
            int common = 0;
            while (common < _fed.Count && common < tokens.Length && _fed[common] == tokens[common]) common++;
            int reuse = Math.Min(common, tokens.Length - 1);
            session.Rewind(reuse);
            t.ReplyTo.Tell(new TurnStarted(t.Request, _node.Address, reuse), self);
            int seq = 0;
            try
            {
                await foreach (var ev in session.GenerateTokensAsync(tokens[reuse..], t.MaxPositions - reuse, t.Sampling, ct).ConfigureAwait(false))
                {
                    if (ev.FromPrompt) continue;
                    generated.Add(ev.Token);
                    await running.Credits.WaitAsync(ct).ConfigureAwait(false);
                    t.ReplyTo.Tell(new TurnToken(t.Request, seq++, ev.Position, ev.Token, ev.Piece, ev.Stats.BytesRead, ev.Stats.NeuronsActive,
                        ev.Stats.NeuronsWindowHit + ev.Stats.NeuronsPinnedHit, ev.Stats.TotalMs), self);
                }
            }
            finally
            {
                // What the cache holds now: the transcript and the tokens fed after it, up to the session's position (a
                // turn that failed or was cancelled leaves the position where the turn began).
                _fed = tokens.Concat(generated).Take(session.Position).ToList();
            }
            failed = false;
            t.ReplyTo.Tell(new TurnEnd(t.Request, null), self);
        }
        catch (ModelBusyException e)
        {
            t.ReplyTo.Tell(new TurnEnd(t.Request, $"node {_node.Address}: {e.Message}", Busy: true), self);
        }
        catch (OperationCanceledException) when (ct.IsCancellationRequested)
        {
            t.ReplyTo.Tell(new TurnEnd(t.Request, "the turn was cancelled"), self);
        }
        catch (Exception e)
        {
            t.ReplyTo.Tell(new TurnEnd(t.Request, $"node {_node.Address}: {e.Message}"), self);
        }
        finally
        {
            // A turn that failed leaves the session to the runtime (whatever broke, the next turn starts clean).
            if (held) _node.Pool.Release(_slot, drop: failed && !ct.IsCancellationRequested);
            if (failed && !ct.IsCancellationRequested) _fed = [];
        }
    }

    protected override void PostStop()
    {
        _running?.Cancel.Cancel();
        _node.Pool.Forget(_slot);
    }
}
