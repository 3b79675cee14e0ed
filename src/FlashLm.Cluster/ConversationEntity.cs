using Akka.Actor;
using Akka.Cluster.Sharding;
using FlashLm.Server;

namespace FlashLm.Cluster;

/// <summary>
/// A conversation, sharded across the cluster's whole-model nodes (Akka.Cluster.Sharding): its KV cache stays on the node that
/// holds it. Each <see cref="Turn"/> carries the whole transcript; the entity re-feeds only what differs from what its cache
/// holds (the longest common prefix is kept), so a chat's next turn pays only for the new messages. Tokens go to the requester
/// with at most <see cref="Credits"/> unacknowledged (back-pressure across nodes); a requester that goes away (or sends
/// <see cref="TurnCancel"/>) stops the turn. A turn that comes while the last one is ending waits for it. Idle for
/// flashlm.cluster.conversation-idle (never while a turn runs), the entity passivates and gives its session back. When the
/// node leaves, the conversation's shard moves to a node that remains and its next turn restarts from the transcript there.
/// </summary>
internal sealed class ConversationEntity : ReceiveActor, IWithStash
{
    /// <summary>Tokens sent but not yet acknowledged, at most.</summary>
    public const int Credits = 16;

    private sealed record Finished(long Request);

    private sealed class Running(Turn turn, CancellationTokenSource cancel)
    {
        public Turn Turn { get; } = turn;
        public CancellationTokenSource Cancel { get; } = cancel;
        public SemaphoreSlim Credits { get; } = new(ConversationEntity.Credits, ConversationEntity.Credits);
        public int Acked; // tokens acknowledged (acknowledgements are cumulative: a lost one is made good by the next)
        public volatile bool Ending; // the turn's end has been sent; only its bookkeeping is left
    }

    private readonly ClusterNode.Local _node;
    private readonly string _id;
    private readonly SessionPool.Slot _slot = new();
    private List<int> _fed = []; // the tokens whose keys and values the session's cache holds, by position
    private Running? _running;
    private readonly Queue<long> _done = new(); // the last turns that ran here, so a repeat of one is not run twice

    public IStash Stash { get; set; } = null!;

    public ConversationEntity(ClusterNode.Local node, string id)
    {
        _node = node;
        _id = id;
        Receive<Turn>(Start);
        Receive<TurnAck>(a =>
        {
            if (_running is not { } r || r.Turn.Request != a.Request) return;
            int newly = a.Seq + 1 - r.Acked;
            if (newly <= 0) return;
            r.Acked = a.Seq + 1;
            r.Credits.Release(newly);
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
            r.Cancel.Dispose();
            _running = null;
            _done.Enqueue(f.Request);
            if (_done.Count > 16) _done.Dequeue();
            Context.SetReceiveTimeout(_node.Settings.ConversationIdle);
            Stash.UnstashAll();
        });
        Receive<ReceiveTimeout>(_ =>
        {
            // Idle: give the session back (the shard stops this entity; a later turn starts a new one from the transcript).
            if (_running is null) Context.Parent.Tell(new Passivate(PoisonPill.Instance));
        });
        Context.SetReceiveTimeout(_node.Settings.ConversationIdle);
    }

    private void Start(Turn t)
    {
        // A turn sent again (it was not taken in time; see ShardedModel) that this entity already runs or ran.
        if (_running?.Turn.Request == t.Request || _done.Contains(t.Request)) return;
        if (_running is { } r)
        {
            // The last turn is ending (its end was sent, or it was cancelled): this one runs right after it.
            if (r.Ending || r.Cancel.IsCancellationRequested) Stash.Stash();
            else t.ReplyTo.Tell(new TurnEnd(t.Request, $"conversation {_id} is already generating a turn (one at a time)", Busy: true));
            return;
        }
        var running = new Running(t, new CancellationTokenSource());
        _running = running;
        Context.SetReceiveTimeout(null);
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
        bool held = false, drop = false;
        void End(string? error, bool busy = false)
        {
            running.Ending = true;
            t.ReplyTo.Tell(new TurnEnd(t.Request, error, busy), self);
        }
        try
        {
            // What only the request can get wrong is refused before the session is touched (its cache stays).
            if (tokens.Length == 0 || t.MaxPositions < tokens.Length || t.MaxPositions > _node.Runtime.Positions)
                throw new ArgumentException($"a turn of {tokens.Length} tokens up to position {t.MaxPositions}; conversations hold {_node.Runtime.Positions} positions");
            // The pool's wait ends before the requester's own start timeout, so a busy node is answered as busy (429).
            var (session, kept) = await _node.Pool.AcquireAsync(_slot, _node.Settings.StartTimeout * 0.75, ct).ConfigureAwait(false);
            held = true;
            if (!kept) _fed = [];
            // Keep the longest prefix the cache already holds (at least one token is fed, to produce the next one's logits).
            int common = 0;
            while (common < _fed.Count && common < tokens.Length && _fed[common] == tokens[common]) common++;
            int reuse = Math.Min(common, tokens.Length - 1);
            session.Rewind(reuse);
            t.ReplyTo.Tell(new TurnStarted(t.Request, _node.Address, reuse), self);
            int seq = 0, lastPosition = -1;
            try
            {
                await foreach (var ev in session.GenerateTokensAsync(tokens[reuse..], t.MaxPositions - reuse, t.Sampling, ct).ConfigureAwait(false))
                {
                    if (ev.FromPrompt) continue;
                    generated.Add(ev.Token);
                    lastPosition = ev.Position;
                    await running.Credits.WaitAsync(ct).ConfigureAwait(false);
                    t.ReplyTo.Tell(new TurnToken(t.Request, seq++, ev.Position, ev.Token, ev.Piece, ev.Stats.BytesRead, ev.Stats.NeuronsActive,
                        ev.Stats.NeuronsWindowHit + ev.Stats.NeuronsPinnedHit, ev.Stats.TotalMs), self);
                    if (Array.IndexOf(t.StopTokens, ev.Token) >= 0) break; // the requester ends the text here; so does the turn
                }
            }
            finally
            {
                // A turn left early (a stop token, a cancel) leaves the session where the turn began; every position up to the
                // last token produced is whole in the cache, so the conversation continues after it, that token pending.
                if (lastPosition >= 0 && session.Position <= lastPosition) session.Advance(lastPosition + 1, generated[^1]);
                // What the cache holds now: the transcript and the tokens fed after it, up to the session's position.
                _fed = tokens.Concat(generated).Take(session.Position).ToList();
            }
            End(null);
        }
        catch (ModelBusyException e)
        {
            End($"node {_node.Address}: {e.Message}", busy: true);
        }
        catch (OperationCanceledException) when (ct.IsCancellationRequested)
        {
            End("the turn was cancelled");
        }
        catch (ArgumentException e)
        {
            End($"node {_node.Address}: {e.Message}");
        }
        catch (Exception e)
        {
            drop = true; // whatever broke, the next turn starts on a fresh session
            End($"node {_node.Address}: {e.Message}");
        }
        finally
        {
            if (held) _node.Pool.Release(_slot, drop);
            if (drop) _fed = [];
        }
    }

    protected override void PostStop()
    {
        _running?.Cancel.Cancel();
        _node.Pool.Forget(_slot);
    }
}
