using System.Runtime.CompilerServices;
using System.Threading.Channels;
using Akka.Actor;
using FlashLm.Formats;
using FlashLm.Models.Sampling;
using FlashLm.Runtime;
using FlashLm.Runtime.Session;
using FlashLm.Server;

namespace FlashLm.Cluster;

/// <summary>A node's cluster could not finish a generation (a node left mid-turn, no node took it); the message says which and why.</summary>
public sealed class ClusterException(string message) : Exception(message);

/// <summary>
/// The OpenAI server's model on a sessions node: each generation is a <see cref="Turn"/> of a conversation entity, wherever
/// the cluster holds it; its tokens come back through a receiver actor on this node into a channel (acknowledged as the
/// server takes them). A request without a conversation id is a conversation of its own.
/// </summary>
internal sealed class ShardedModel(ClusterNode.Local node, ActorSystem system, IActorRef region) : IServedModel
{
    /// <summary>How long a turn waits for a node to take it before it is sent again.</summary>
    private static readonly TimeSpan ResendAfter = TimeSpan.FromSeconds(2);

    public bool IsRunning => !system.WhenTerminated.IsCompleted && node.Runtime.StoppedBecause is null;
    public ITextTokenizer Tokenizer => node.Runtime.Tokenizer;
    public string? ChatTemplate => node.Runtime.ChatTemplate;
    public string Name => node.Runtime.Config.Name;
    public int Capacity => node.Runtime.Positions;
    public int MaxConcurrent => node.Settings.MaxRequests;
    public RuntimeStats? Stats => node.Runtime.Stats;
    public int? ClusterMembers => Akka.Cluster.Cluster.Get(system).State.Members.Count(m => m.Status == Akka.Cluster.MemberStatus.Up);

    public async IAsyncEnumerable<TokenEvent> GenerateAsync(string? conversation, int[] tokens, int maxPositions, SamplingOptions sampling,
        IReadOnlyList<int> stopTokens, Action<ServedBy>? served, [EnumeratorCancellation] CancellationToken cancellation)
    {
        conversation ??= "anon-" + Guid.NewGuid().ToString("N");
        long request = Random.Shared.NextInt64(); // unique across the nodes that send turns of one conversation
        var channel = Channel.CreateUnbounded<object>(new UnboundedChannelOptions { SingleReader = true });
        var receiver = system.ActorOf(Props.Create(() => new TurnReceiver(channel.Writer, conversation, node.Settings.StartTimeout)));
        var turn = new Turn(conversation, request, tokens, maxPositions, sampling, receiver, [.. stopTokens]);
        var started = System.Diagnostics.Stopwatch.StartNew();
        region.Tell(turn, receiver);
        IActorRef? entity = null;
        bool ended = false;
        try
        {
            while (true)
            {
                object message;
                try
                {
                    var read = channel.Reader.ReadAsync(cancellation).AsTask();
                    // Until a node has taken the turn, the turn is sent again every ResendAfter: sharding delivers at most once,
                    // and a turn sent to a node that died but is not yet removed is lost (the entity ignores a repeat it has).
                    while (entity is null && !read.IsCompleted)
                    {
                        var wait = node.Settings.StartTimeout - started.Elapsed;
                        if (wait <= TimeSpan.Zero) throw new TimeoutException();
                        try
                        {
                            await read.WaitAsync(wait < ResendAfter ? wait : ResendAfter, cancellation).ConfigureAwait(false);
                        }
                        catch (TimeoutException)
                        {
                            region.Tell(turn, receiver);
                        }
                    }
                    message = await read.ConfigureAwait(false);
                }
                catch (ChannelClosedException e) when (e.InnerException is not null)
                {
                    throw e.InnerException;
                }
                catch (TimeoutException)
                {
                    throw new ClusterException($"no node of the cluster took conversation {conversation} within {node.Settings.StartTimeout.TotalSeconds:0.#} s (flashlm.cluster.start-timeout)");
                }
                switch (message)
                {
                    case (TurnStarted s, IActorRef from):
                        entity = from;
                        served?.Invoke(new ServedBy(s.Node, s.Reused));
                        continue;
                    case TurnToken t:
                        var stats = new TokenStats
                        {
                            TokenIndex = t.Position, BytesRead = t.BytesRead, NeuronsActive = t.Active, NeuronsWindowHit = t.Hits, TotalMs = t.TotalMs,
                        };
                        yield return new TokenEvent(t.Position, t.Token, t.Piece, false, stats);
                        entity?.Tell(new TurnAck(request, t.Seq), receiver); // cumulative: all up to Seq
                        continue;
                    case TurnEnd { Error: null }:
                        ended = true;
                        yield break;
                    case TurnEnd e:
                        ended = true;
                        if (e.Busy) throw new ModelBusyException(e.Error!);
                        throw new ClusterException(e.Error!);
                }
            }
        }
        finally
        {
            if (!ended) region.Tell(new TurnCancel(conversation, request), receiver);
            receiver.Tell(PoisonPill.Instance);
        }
    }
}

/// <summary>
/// Receives one turn's messages on the requesting node and writes them to the generation's channel; watches the entity once
/// it has answered, so a node that leaves mid-turn fails the turn with an error naming it, and fails a turn no node takes in time.
/// </summary>
internal sealed class TurnReceiver : ReceiveActor
{
    protected override void PreStart() =>
        Akka.Cluster.Cluster.Get(Context.System).Subscribe(Self, Akka.Cluster.ClusterEvent.SubscriptionInitialStateMode.InitialStateAsEvents,
            typeof(Akka.Cluster.ClusterEvent.UnreachableMember));

    protected override void PostStop() => Akka.Cluster.Cluster.Get(Context.System).Unsubscribe(Self);

    public TurnReceiver(ChannelWriter<object> output, string conversation, TimeSpan startTimeout)
    {
        string? node = null;
        SetReceiveTimeout(startTimeout);
        Receive<TurnStarted>(s =>
        {
            SetReceiveTimeout(null);
            node = s.Node;
            Context.Watch(Sender);
            output.TryWrite((s, Sender));
        });
        Receive<TurnToken>(t => output.TryWrite(t));
        Receive<TurnEnd>(e =>
        {
            SetReceiveTimeout(null);
            output.TryWrite(e);
            Context.Stop(Self);
        });
        void Lost(string how)
        {
            output.TryComplete(new ClusterException(
                $"node {node} holding conversation {conversation} {how} during the turn; the conversation restarts from its transcript on its next request, on a node that remains"));
            Context.Stop(Self);
        }
        Receive<Terminated>(_ => Lost("left the cluster"));
        // Unreachable is enough to give up on the turn (the node may be removed seconds later): the client hears at once.
        Receive<Akka.Cluster.ClusterEvent.UnreachableMember>(m =>
        {
            if (node is not null && m.Member.Address.ToString() == node) Lost("became unreachable");
        });
        Receive<ReceiveTimeout>(_ =>
        {
            output.TryComplete(new ClusterException($"no node of the cluster took conversation {conversation} within {startTimeout.TotalSeconds:0.#} s (flashlm.cluster.start-timeout)"));
            Context.Stop(Self);
        });
        ReceiveAny(_ => { });
    }
}
