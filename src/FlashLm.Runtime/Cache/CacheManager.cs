using Akka.Actor;
using FlashLm.Formats.FlashLayout;
using FlashLm.Runtime.Io;
using FlashLm.Runtime.Compute;
using FlashLm.Runtime.Loader;
using FlashLm.Runtime.Session;

namespace FlashLm.Runtime.Cache;

/// <summary>
/// The DRAM cache manager: owns every layer's <see cref="NeuronCache"/> and every cache row. It turns
/// active sets into reads for the neurons not already cached (coalesced by <see cref="ReadPlanner"/>),
/// keeps the window (neurons used by the last k tokens), and hands compute a pinned <see cref="Lease"/>
/// once every row of it holds its bundle. No row is evicted, moved or reused while a read into it or
/// a compute over it is in flight. Reads in flight are bounded (back-pressure on the loader pool).
/// The decisions are <see cref="CacheCore"/>'s (plain, tested without actors); this file holds the messages, the
/// settings and the actor that carries them to and from the core.
/// </summary>
internal static class CacheManager
{
    /// <summary>Rows of one layer pinned for compute: Rows[i] holds Neurons[i]; Remaining are still to come.</summary>
    /// <remarks>Addresses[i] is row i's bundle in DRAM; valid until the lease is released (the rows are pinned).</remarks>
    public sealed record Lease(long Id, int Layer, int[] Rows, nint[] Addresses, int[] Neurons, int[] Remaining, bool First)
    {
        public bool Last => Remaining.Length == 0;
    }

    /// <summary>Load and pin <paramref name="Neurons"/> of a layer for the session's <paramref name="Position"/>; answered with <see cref="RowsReady"/>.</summary>
    /// <param name="First">False for the follow-up of a lease that had Remaining neurons.</param>
    public sealed record Acquire(int Layer, int[] Neurons, long Position, bool Prefill, bool First = true);

    /// <summary>The forward path: load and pin <paramref name="Neurons"/> of a layer for the route's session (charged to it, released
    /// for it when it stops) and hand the ready lease to the route's compute as <see cref="LayerCompute.RunLeasedFfn"/>.</summary>
    /// <param name="Sent">When the rows were asked for (Stopwatch ticks), passed on for the wait time.</param>
    /// <param name="First">False for the follow-up of a lease that had Remaining neurons.</param>
    public sealed record AcquireFor(LayerPath.Route Route, int Layer, int[] Neurons, LayerPath.Tally Tally, long Sent, bool First = true);

    /// <summary>Lookahead: start reading these neurons now (no pin, no reply); <paramref name="Session"/> is charged for the reads.</summary>
    public sealed record Prefetch(int Layer, int[] Neurons, long Position, IActorRef? Session = null);

    public sealed record RowsReady(Lease Lease);

    /// <summary>A read for an acquire failed; the generation cannot go on.</summary>
    public sealed record AcquireFailed(int Layer, string Error);

    /// <param name="Session">Whose lease it is, when the sender is not the session itself (compute on the forward path).</param>
    public sealed record Release(Lease Lease, IActorRef? Session = null);

    /// <summary>The session's position finished: apply the window and answer with <see cref="TokenCacheStats"/>.</summary>
    public sealed record TokenDone(long Position);

    /// <summary>What the cache did for one token.</summary>
    /// <param name="PrefetchStartTicks">Per layer: when the first lookahead read for it started (Stopwatch ticks; 0 = none).</param>
    public sealed record TokenCacheStats(long Position, long BytesRead, int Reads, int NeuronsActive, int NeuronsLoaded, int NeuronsEvicted,
        int CachedRows, double IoMs, double MemMs, long DramBytes, long ReadStartTicks, long[] PrefetchStartTicks)
    {
        /// <summary>Of <see cref="NeuronsActive"/>, the neurons found in pinned (hot) rows.</summary>
        public int PinnedHits { get; init; }
        /// <summary>Of <see cref="NeuronsActive"/>, the neurons found in the window cache (cached, or already being read by a lookahead).</summary>
        public int WindowHits { get; init; }
    }

    /// <summary>For tests and accounting: how many rows are pinned, and by how many live sessions.</summary>
    public sealed record GetPins;

    public sealed record Pins(int PinnedRows, int Leases, int PendingAcquires, int Sessions, int ReadsInFlight);

    /// <summary>For tests: the cached neurons of a layer and a copy of each row's bundle bytes.</summary>
    public sealed record GetSnapshot(int Layer);

    public sealed record Snapshot(int Layer, int[] Neurons, byte[][] RowBytes, long CacheBytes);

    /// <param name="stopped">Called once if the cache manager breaks (an exception while it handled a message): its state can no
    /// longer be trusted, so every session is failed and the runtime must stop.</param>
    /// <param name="hook">Test hook called before each acquire is handled, with its layer (e.g. to throw).</param>
    /// <param name="messages">Counts the messages handled (a finished read counts twice: the reader's request and its answer).</param>
    internal static Props Props(FfnLayout layout, CacheSettings settings, IActorRef loader, Action<string>? stopped = null, Action<int>? hook = null,
        MessageCount? messages = null) =>
        Akka.Actor.Props.Create(() => new Actor(layout, settings, loader, stopped, hook, messages));

    /// <summary>Sizes fixed at start (from the DRAM budget) and I/O shaping.</summary>
    /// <param name="SplitParts">Read each bundle part separately (the unbundled ablation rungs of the benchmark).</param>
    /// <param name="HitsFirst">Decode acquires answer with the cached neurons first and hand the ones being read back as the
    /// lease's remainder, so the FFN over the hits overlaps the reads of the misses.</param>
    /// <param name="PrefillSequential">Prompt tokens' reads coalesce across gaps up to the largest read (long sequential reads),
    /// whole bundles at a time; off: they are planned as decode reads are.</param>
    /// <param name="DemandReserve">Rows of each layer a lookahead prefetch never pins: a prefetch only starts reads while more than
    /// this many rows are unpinned, so the layer's demand acquire always finds rows it can use (see <see cref="ReserveFor"/>).</param>
    /// <param name="Hot">Per layer, the neurons pinned for good (hot-neuron pinning): read once when the cache starts, never evicted;
    /// they take that many of the layer's <paramref name="RowsPerLayer"/>, the rest is the window cache. Null: none.</param>
    public sealed record CacheSettings(int RowsPerLayer, int Window, long CoalesceGap, int MaxRead, int StagingBuffers, int MaxReadsInFlight, bool DirectIo,
        bool SplitParts = false, bool HitsFirst = false, bool PrefillSequential = true, int DemandReserve = 0, int[][]? Hot = null, long ResidentSkip = 0)
    {
        /// <summary>Pinned rows over all layers.</summary>
        public int HotRows => Hot?.Sum(h => h.Length) ?? 0;
    }

    /// <summary>The demand reserve for a cache of <paramref name="rows"/> rows per layer: a quarter of them, at least one.</summary>
    public static int ReserveFor(int rows) => Math.Max(1, rows / 4);

    /// <summary>DRAM the cache manager will hold for these settings (rows, maps, staging buffers).</summary>
    public static long BytesFor(FfnLayout layout, CacheSettings s) =>
        layout.Layers * NeuronCache.BytesFor(layout.Neurons, s.RowsPerLayer, layout.BundleStride)
        + (long)s.StagingBuffers * StagingSize(layout, s.MaxRead)
        + 4L * layout.Layers * layout.Neurons // acquire stamps
        + DiscardSize(layout, s.CoalesceGap)
        + HotBytes(layout, s.Hot);

    /// <summary>DRAM of these settings that lives outside the managed heap: the cache rows, staging buffers and the discard buffer.</summary>
    public static long NativeBytesFor(FfnLayout layout, CacheSettings s) =>
        layout.Layers * AlignedBuffer.AlignUp((long)Math.Min(s.RowsPerLayer, layout.Neurons) * layout.BundleStride)
        + (long)s.StagingBuffers * StagingSize(layout, s.MaxRead) + DiscardSize(layout, s.CoalesceGap);

    /// <summary>The scratch buffer the gaps of scatter reads land in: the coalescing gap in whole pages (at least one); none when
    /// bundles are smaller than a page (those ranges are staged).</summary>
    public static int DiscardSize(FfnLayout layout, long coalesceGap) =>
        layout.BundleStride % AlignedBuffer.Alignment != 0 ? 0 : (int)Math.Max(AlignedBuffer.Alignment, AlignedBuffer.AlignUp(coalesceGap));

    /// <summary>The pinning bookkeeping: a flag per neuron per layer and the pinned lists (0 without pinning).</summary>
    public static long HotBytes(FfnLayout layout, int[][]? hot) =>
        hot is null ? 0 : (long)layout.Layers * layout.Neurons + 4L * hot.Sum(h => (long)h.Length);

    /// <summary>A staging buffer holds the largest read: maxRead, but at least one bundle with its page rounding, at most a layer.</summary>
    public static long StagingSize(FfnLayout layout, int maxRead) =>
        Math.Max(Math.Min(maxRead, AlignedBuffer.AlignUp(layout.LayerBytes) + AlignedBuffer.Alignment),
                 AlignedBuffer.AlignUp(layout.BundleBytes) + AlignedBuffer.Alignment);

    /// <summary>
    /// The actor around <see cref="CacheCore"/>: it turns messages into core calls and the core's effects into Tells,
    /// watches sessions, and owns the failure contract (the broken state) and the ffn.bin handle the reads use.
    /// </summary>
    private sealed class Actor : ReceiveActor
    {
        private readonly IActorRef _loader;
        private readonly DirectFile _file;
        private readonly CacheCore _core;
        private readonly Action<string>? _stopped;
        private PipelineException? _failure; // set once the cache manager broke: what every later request is told
        private readonly MessageCount? _messages;
        // Per session: its forward-path acquire being served (a session has at most one acquire pending), so the
        // ready lease goes to its compute with what the layer measured so far.
        private readonly Dictionary<IActorRef, AcquireFor> _forward = new();

        public Actor(FfnLayout layout, CacheSettings s, IActorRef loader, Action<string>? stopped, Action<int>? hook, MessageCount? messages)
        {
            _messages = messages;
            _stopped = stopped;
            _loader = loader;
            _file = new DirectFile(layout.FilePath, s.DirectIo);
            try
            {
                _core = new CacheCore(layout, s);
            }
            catch
            {
                _file.Dispose();
                throw;
            }

            Receive<Acquire>(a =>
            {
                Join(Sender);
                hook?.Invoke(a.Layer);
                Send(_core.Acquire(Sender, a.Layer, a.Neurons, a.Prefill, a.First));
            });
            Receive<AcquireFor>(a =>
            {
                var session = a.Route.Session;
                Join(session);
                hook?.Invoke(a.Layer);
                _forward[session] = a;
                Send(_core.Acquire(session, a.Layer, a.Neurons, a.Route.Prefill, a.First));
            });
            Receive<Prefetch>(p =>
            {
                if (p.Session is { } session) Join(session);
                Send(_core.Prefetch(p.Session, p.Layer, p.Neurons));
            });
            Receive<Release>(r =>
            {
                var session = r.Session ?? Sender;
                Join(session);
                Send(_core.Release(session, r.Lease));
            });
            Receive<FlashLoader.ReadDone>(d => Send(_core.ReadDone(d.Id, d.Bytes)));
            Receive<FlashLoader.ReadsDone>(d => Send(_core.ReadsDone(d.Items.Select(x => (x.Id, x.Bytes)).ToArray())));
            Receive<FlashLoader.ReadFailed>(f => Send(_core.ReadFailed(f.Id, f.Error)));
            Receive<TokenDone>(t =>
            {
                Join(Sender);
                var stats = _core.TokenDone(Sender, t.Position, out var effects);
                Send(effects);
                Sender.Tell(stats);
            });
            Receive<Terminated>(t =>
            {
                _forward.Remove(t.ActorRef);
                Send(_core.SessionGone(t.ActorRef));
            });
            Receive<GetPins>(_ => Sender.Tell(new Pins(_core.PinnedRows, _core.Leases, _core.PendingAcquires, _core.Sessions, _core.ReadsInFlight)));
            Receive<GetSnapshot>(g =>
            {
                var (neurons, bytes) = _core.Snapshot(g.Layer);
                Sender.Tell(new Snapshot(g.Layer, neurons, bytes, _core.CacheBytes));
            });
        }

        /// <summary>Pinned neurons are read as the cache starts.</summary>
        protected override void PreStart()
        {
            base.PreStart();
            Send(_core.LoadHot());
        }

        /// <summary>A session the core did not know yet is watched, so its leases and acquires go when it stops.</summary>
        private void Join(IActorRef session)
        {
            if (_core.Join(session)) Context.Watch(session);
        }

        /// <summary>Delivers what the core decided: reads to the loader, then failed acquires, then ready leases.</summary>
        private void Send(CacheCore.Effects effects)
        {
            foreach (var r in effects.Reads)
                _loader.Tell(new FlashLoader.ReadRequest(r.Id, _file, r.Plan.FileOffset, r.Plan.Length, r.Plan.Destination, r.Staging,
                    r.Plan.Direct ? null : r.Plan.Copies, Self, Fill: r.Plan.Fill, Segments: r.Plan.Segments));
            foreach (var f in effects.Failures)
            {
                var session = (IActorRef)f.Session;
                _forward.Remove(session);
                session.Tell(new AcquireFailed(f.Layer, f.Error));
            }
            foreach (var ready in effects.ReadyLeases)
            {
                var session = (IActorRef)ready.Session;
                if (_forward.Remove(session, out var a))
                    a.Route.Compute.Tell(new LayerCompute.RunLeasedFfn(a.Route, ready.Lease, a.Tally, a.Sent));
                else session.Tell(new RowsReady(ready.Lease));
            }
        }

        /// <summary>
        /// An exception while handling a message leaves the rows, pins and reads in an unknown state: the cache manager is
        /// broken. It fails every session it knows (they stop and their leases are released as they go), answers every
        /// later acquire with the same error, and tells the runtime to stop. It does not free or reuse anything: reads in
        /// flight still land in their rows, which are freed only when the runtime is disposed, after the loader stopped.
        /// </summary>
        protected override bool AroundReceive(Receive receive, object message)
        {
            _messages?.Add(message is FlashLoader.ReadDone or FlashLoader.ReadFailed ? 2 : 1);
            if (_failure is { } broken)
            {
                switch (message)
                {
                    case Acquire or TokenDone:
                        Sender.Tell(new Status.Failure(broken));
                        return true;
                    case AcquireFor a:
                        a.Route.Session.Tell(new Status.Failure(broken));
                        return true;
                    case Prefetch:
                        return true;
                }
            }
            try
            {
                return base.AroundReceive(receive, message);
            }
            catch (Exception e)
            {
                // What the core decided before it threw still happens (reads it started, leases it found ready).
                if (_core.TakeInterrupted() is { } done) Send(done);
                if (_failure is null) Break(e, message);
                return true;
            }
        }

        private void Break(Exception e, object message)
        {
            var error = new PipelineException("cache manager", $"handling {message.GetType().Name} failed: {e.Message}", e);
            _failure = error;
            // Forward-path messages come from another stage on a session's behalf: that session is the one to tell.
            var asker = message switch
            {
                AcquireFor a => a.Route.Session,
                Release { Session: { } s } => s,
                _ => Sender,
            };
            bool known = _core.Knows(asker);
            foreach (var session in _core.Abandon()) ((IActorRef)session).Tell(new Status.Failure(error));
            if (!known && !asker.IsNobody()) asker.Tell(new Status.Failure(error));
            _stopped?.Invoke(error.Message);
        }

        protected override void PostStop()
        {
            _core.Dispose();
            _file.Dispose();
            base.PostStop();
        }
    }
}
