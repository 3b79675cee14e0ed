using System.Diagnostics;
using Akka.Actor;
using Akka.Cluster;
using FlashLm.Formats;
using FlashLm.Models.Sampling;
using FlashLm.Runtime;
using FlashLm.Runtime.Session;

namespace FlashLm.Cluster;

/// <summary>
/// A node's stage of a pipeline across nodes (layers across nodes): runs each <see cref="StageStep"/> through the layers its
/// runtime holds (flashlm.layers), one position at a time per conversation in the order they came, then hands the hidden
/// state to the node holding the next layers (found by its cluster role, layers-FROM-TO) or, holding the last layers, runs the
/// head, samples and answers the driver. Every node of a layers cluster runs one, at /user/stage.
/// </summary>
internal sealed class StageWorker : ReceiveActor
{
    public const string Name = "stage";

    private sealed class Conversation
    {
        public required Task<FlashSession> Session;
        public Task Tail = Task.CompletedTask;
        public long SamplerTurn = -1;
        public Sampler? Sampler;
        public bool Failed;
        public required IActorRef Driver;
        public Address? Next; // the node holding the next layers, fixed at the conversation's first position
    }

    private readonly ClusterNode.Local _node;
    private readonly FlashRuntime _runtime;
    private readonly LayerRange _layers;
    private readonly bool _last;
    private readonly Dictionary<string, Conversation> _conversations = new(StringComparer.Ordinal);
    private readonly ActorSystem _system;
    private readonly Akka.Cluster.Cluster _cluster;
    private readonly HashSet<string> _released = new(StringComparer.Ordinal); // recently released, so a late step is dropped
    private readonly Queue<string> _releasedOrder = new();

    public StageWorker(ClusterNode.Local node)
    {
        _node = node;
        _runtime = node.Runtime;
        _layers = _runtime.Layers;
        _last = _layers.To == _runtime.ModelLayers;
        _system = Context.System;
        _cluster = Akka.Cluster.Cluster.Get(_system);
        Receive<StageStep>(Step);
        Receive<StageRelease>(Release);
        Receive<Terminated>(t =>
        {
            // The driving node went away: its conversations end here too.
            foreach (var (id, c) in _conversations.Where(kv => kv.Value.Driver.Equals(t.ActorRef)).ToList()) Release(new StageRelease(id));
        });
    }

    protected override void PostStop()
    {
        foreach (var c in _conversations.Values)
            if (c.Session.IsCompletedSuccessfully) c.Session.Result.Dispose();
    }

    /// <summary>The node holding the layers after this stage's, as the cluster looks from here now (up and reachable), or null.
    /// Read from the cluster's own snapshot (safe from any thread), not tracked apart.</summary>
    private Address? NextStage()
    {
        var state = _cluster.State;
        foreach (var m in state.Members)
            if (m.Status == MemberStatus.Up && !state.Unreachable.Contains(m))
                foreach (var role in m.Roles)
                    if (ClusterNode.TryParseLayersRole(role, out var range) && range.From == _layers.To) return m.Address;
        return null;
    }

    /// <summary>The next stage, waiting up to flashlm.cluster.start-timeout for it: a node that has just joined may not be up
    /// in this node's view of the cluster yet, though the driver already sees it.</summary>
    private async Task<Address> WaitForNextStageAsync()
    {
        var waited = Stopwatch.StartNew();
        while (true)
        {
            if (NextStage() is { } address) return address;
            if (waited.Elapsed > _node.Settings.StartTimeout)
                throw new InvalidOperationException($"no node of the cluster holds layers {_layers.To}- (the next stage left or never joined; waited {_node.Settings.StartTimeout.TotalSeconds:0} s)");
            await Task.Delay(100).ConfigureAwait(false);
        }
    }

    private ActorSelection Selection(Address address) => _system.ActorSelection(new RootActorPath(address) / "user" / Name);

    /// <summary>
    /// Ends a conversation here after the positions already queued for it, then hands the release on: sent from the tail, it
    /// cannot overtake those positions on their way to the next stage (which would then open a session nobody releases).
    /// </summary>
    private void Release(StageRelease r)
    {
        if (_released.Add(r.Conversation))
        {
            _releasedOrder.Enqueue(r.Conversation);
            if (_releasedOrder.Count > 1024) _released.Remove(_releasedOrder.Dequeue());
        }
        var self = Self;
        if (!_conversations.Remove(r.Conversation, out var c))
        {
            if (!_last && NextStage() is { } address) Selection(address).Tell(r, self);
            return;
        }
        if (!_conversations.Values.Any(o => o.Driver.Equals(c.Driver))) Context.Unwatch(c.Driver);
        c.Tail = c.Tail.ContinueWith(_ =>
        {
            if (c.Session.IsCompletedSuccessfully) c.Session.Result.Dispose();
            if (!_last && (c.Next ?? NextStage()) is { } next) Selection(next).Tell(r, self);
        }, TaskScheduler.Default);
    }

    private void Step(StageStep s)
    {
        if (_released.Contains(s.Conversation)) return; // a position that came after its conversation ended (the driver gave up)
        if (!_conversations.TryGetValue(s.Conversation, out var c))
        {
            c = new Conversation { Session = _runtime.CreateSessionAsync(), Driver = s.Driver };
            _conversations[s.Conversation] = c;
            Context.Watch(s.Driver);
        }
        var self = Self;
        string where = $"node {_node.Address} (layers {_layers} of {_runtime.ModelLayers})";
        // Positions of one conversation run in the order they came (each continues the KV cache of the one before).
        c.Tail = c.Tail.ContinueWith(async _ =>
        {
            if (c.Failed) return; // an earlier position failed and said so; the driver has ended the turn
            try
            {
                var session = await c.Session.ConfigureAwait(false);
                var output = await _runtime.RunStageAsync(session, s.Position, s.Token, s.Hidden, head: _last && s.NeedToken, s.Prefill).ConfigureAwait(false);
                double[] stageMs = [.. s.StageMs, output.TotalMs];
                long bytes = s.BytesRead + output.BytesRead;
                int active = s.Active + output.NeuronsActive, hits = s.Hits + output.NeuronsHit;
                if (!_last)
                {
                    // The next stage is fixed for the conversation: its KV cache holds this conversation's earlier positions, so
                    // a node that came up with the same layers later would hold none of them (its output would be silently wrong).
                    var current = await WaitForNextStageAsync().ConfigureAwait(false);
                    c.Next ??= current;
                    if (c.Next != current)
                        throw new InvalidOperationException($"the node holding layers {_layers.To}- changed from {c.Next} to {current} during the conversation");
                    Selection(current).Tell(new StageStep(s.Conversation, s.Turn, s.Position, -1, output.Output, s.Prefill, s.NeedToken, s.Sampling, s.Driver, stageMs, bytes, active, hits), self);
                    return;
                }
                int token = -1;
                if (s.NeedToken)
                {
                    // One sampler per turn, as a whole runtime has: the same seed gives the same tokens.
                    if (c.SamplerTurn != s.Turn)
                    {
                        c.Sampler = new Sampler(_runtime.Config.VocabSize, s.Sampling, new XorShiftRandom(s.Sampling.Seed));
                        c.SamplerTurn = s.Turn;
                    }
                    token = c.Sampler!.Sample(output.Output);
                }
                s.Driver.Tell(new StageResult(s.Conversation, s.Position, token, stageMs, bytes, active, hits, null), self);
            }
            catch (Exception e)
            {
                c.Failed = true;
                s.Driver.Tell(new StageResult(s.Conversation, s.Position, -1, s.StageMs, s.BytesRead, s.Active, s.Hits, $"{where}, position {s.Position}: {e.Message}"), self);
            }
        }, TaskScheduler.Default).Unwrap();
    }
}
