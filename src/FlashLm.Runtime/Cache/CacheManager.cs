using System.Diagnostics;
using Akka.Actor;
using FlashLm.Formats.FlashLayout;
using FlashLm.Runtime.Io;
using FlashLm.Runtime.Loader;

namespace FlashLm.Runtime.Cache;

/// <summary>
/// The DRAM cache manager: owns every layer's <see cref="NeuronCache"/> and every cache row. It turns
/// active sets into reads for the neurons not already cached (coalesced by <see cref="ReadPlanner"/>),
/// keeps the window (neurons used by the last k tokens), and hands compute a pinned <see cref="Lease"/>
/// once every row of it holds its bundle. No row is evicted, moved or reused while a read into it or
/// a compute over it is in flight. Reads in flight are bounded (back-pressure on the loader pool).
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

    /// <summary>Lookahead: start reading these neurons now (no pin, no reply); <paramref name="Session"/> is charged for the reads.</summary>
    public sealed record Prefetch(int Layer, int[] Neurons, long Position, IActorRef? Session = null);

    public sealed record RowsReady(Lease Lease);

    /// <summary>A read for an acquire failed; the generation cannot go on.</summary>
    public sealed record AcquireFailed(int Layer, string Error);

    public sealed record Release(Lease Lease);

    /// <summary>The session's position finished: apply the window and answer with <see cref="TokenCacheStats"/>.</summary>
    public sealed record TokenDone(long Position);

    /// <summary>What the cache did for one token.</summary>
    /// <param name="PrefetchStartTicks">Per layer: when the first lookahead read for it started (Stopwatch ticks; 0 = none).</param>
    public sealed record TokenCacheStats(long Position, long BytesRead, int Reads, int NeuronsActive, int NeuronsLoaded, int NeuronsEvicted,
        int CachedRows, double IoMs, double MemMs, long DramBytes, long ReadStartTicks, long[] PrefetchStartTicks);

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
    public sealed record CacheSettings(int RowsPerLayer, int Window, long CoalesceGap, int MaxRead, int StagingBuffers, int MaxReadsInFlight, bool DirectIo,
        bool SplitParts = false, bool HitsFirst = false, bool PrefillSequential = true, int DemandReserve = 0);

    /// <summary>The demand reserve for a cache of <paramref name="rows"/> rows per layer: a quarter of them, at least one.</summary>
    public static int ReserveFor(int rows) => Math.Max(1, rows / 4);

    /// <summary>DRAM the cache manager will hold for these settings (rows, maps, staging buffers).</summary>
    public static long BytesFor(FfnLayout layout, CacheSettings s) =>
        layout.Layers * NeuronCache.BytesFor(layout.Neurons, s.RowsPerLayer, layout.BundleStride)
        + (long)s.StagingBuffers * StagingSize(layout, s.MaxRead)
        + 4L * layout.Layers * layout.Neurons; // acquire stamps

    /// <summary>A staging buffer holds the largest read: maxRead, but at least one bundle with its page rounding, at most a layer.</summary>
    public static long StagingSize(FfnLayout layout, int maxRead) =>
        Math.Max(Math.Min(maxRead, AlignedBuffer.AlignUp(layout.LayerBytes) + AlignedBuffer.Alignment),
                 AlignedBuffer.AlignUp(layout.BundleBytes) + AlignedBuffer.Alignment);

    private sealed class Pending(Lease lease, IActorRef replyTo)
    {
        public Lease Lease { get; } = lease;
        public IActorRef ReplyTo { get; } = replyTo;

        /// <summary>Rows [0, Checked) of the lease have loaded; a leased row is pinned, so it never starts loading again.</summary>
        public int Checked { get; set; }
    }

    private sealed class Actor : ReceiveActor
    {
        private readonly FfnLayout _layout;
        private readonly CacheSettings _s;
        private readonly IActorRef _loader;
        private readonly DirectFile _file;
        private readonly NeuronCache[] _caches;
        private readonly int[][] _loadingRows;     // (layer, capacity) reads in flight into each row
        private readonly int[][] _stamp;           // (layer, neurons) acquire marks
        private readonly HashSet<int>[] _broken;   // (layer) neurons whose read failed and whose row could not be dropped yet
        private int _stampValue;
        private readonly Stack<AlignedBuffer> _staging = new();
        private readonly Dictionary<long, (PlannedRead Plan, int Layer, AlignedBuffer? Staging, Book? Book)> _inFlight = new();
        // Reads waiting for a slot: the ones compute waits for go first; lookahead reads only fill up to half the slots, so
        // a speculative read never holds up a needed one for long.
        private readonly Queue<(PlannedRead Plan, int Layer, Book? Book, bool Prefetch)> _queuedReads = new(), _queuedPrefetches = new();
        private readonly List<Pending> _pending = new();
        // Demand acquires that found no row they could use (all pinned by reads in flight or by leases): retried in arrival
        // order whenever a pin goes away. Pins only ever belong to reads (which finish) and leases (which compute releases),
        // so a waiting acquire is always admitted in the end.
        private readonly List<(Acquire Acquire, IActorRef ReplyTo, Book Book)> _waiting = new();
        private readonly Dictionary<IActorRef, Book> _books = new();   // live sessions (watched)
        private long _nextId;
        // Global token step: every TokenDone of any session advances it; "last used" and the window count in steps.
        private long _step;

        /// <summary>One session's leases and per-token statistics.</summary>
        private sealed class Book
        {
            public readonly Dictionary<long, Lease> Leases = new();
            public long Bytes, IoBusyTicks, IoBusySince, MemTicks, FirstReadTicks;
            public int Reads, Active, Loaded, Evicted, InFlight;
            public long[] PrefetchStart = [];
        }

        private Book BookOf(IActorRef session)
        {
            if (!_books.TryGetValue(session, out var b))
            {
                _books[session] = b = new Book { PrefetchStart = new long[_layout.Layers] };
                Context.Watch(session);
            }
            return b;
        }

        private readonly Action<string>? _stopped;
        private PipelineException? _failure; // set once the cache manager broke: what every later request is told

        private readonly MessageCount? _messages;

        public Actor(FfnLayout layout, CacheSettings s, IActorRef loader, Action<string>? stopped, Action<int>? hook, MessageCount? messages)
        {
            _messages = messages;
            _stopped = stopped;
            _layout = layout;
            _s = s;
            _loader = loader;
            _file = new DirectFile(layout.FilePath, s.DirectIo);
            _caches = new NeuronCache[layout.Layers];
            _loadingRows = new int[layout.Layers][];
            _stamp = new int[layout.Layers][];
            _broken = new HashSet<int>[layout.Layers];
            for (int l = 0; l < layout.Layers; l++)
            {
                _caches[l] = new NeuronCache(l, layout.Neurons, s.RowsPerLayer, layout.BundleStride);
                _loadingRows[l] = new int[_caches[l].Capacity];
                _stamp[l] = new int[layout.Neurons];
                _broken[l] = new HashSet<int>();
            }
            for (int i = 0; i < s.StagingBuffers; i++) _staging.Push(new AlignedBuffer(StagingSize(layout, s.MaxRead)));

            Receive<Acquire>(a =>
            {
                var book = BookOf(Sender);
                var replyTo = Sender;
                hook?.Invoke(a.Layer);
                Timed(book, () =>
                {
                    if (a.First) book.Active += a.Neurons.Length;
                    // Every row of the layer pinned (reads in flight, other sessions' leases): wait for one to come free.
                    if (!TryAcquire(a, replyTo, book)) _waiting.Add((a, replyTo, book));
                });
            });
            Receive<Prefetch>(p =>
            {
                var book = p.Session is null ? null : BookOf(p.Session);
                Timed(book, () => OnPrefetch(p, book));
            });
            Receive<Release>(r =>
            {
                var book = BookOf(Sender);
                Timed(book, () => OnRelease(r.Lease, book));
            });
            Receive<FlashLoader.ReadDone>(OnReadDone);
            Receive<FlashLoader.ReadFailed>(OnReadFailed);
            Receive<TokenDone>(t =>
            {
                var book = BookOf(Sender);
                Timed(book, () => OnTokenDone(t, book));
            });
            Receive<Terminated>(t => OnSessionGone(t.ActorRef));
            Receive<GetPins>(_ => Sender.Tell(new Pins(_caches.Sum(c => c.PinnedRows),
                _books.Values.Sum(b => b.Leases.Count), _pending.Count + _waiting.Count, _books.Count, _inFlight.Count)));
            Receive<GetSnapshot>(g => Sender.Tell(TakeSnapshot(g.Layer)));
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
                if (_failure is null) Break(e, message);
                return true;
            }
        }

        private void Break(Exception e, object message)
        {
            var error = new PipelineException("cache manager", $"handling {message.GetType().Name} failed: {e.Message}", e);
            _failure = error;
            _waiting.Clear();
            _pending.Clear();
            _queuedPrefetches.Clear();
            foreach (var session in _books.Keys) session.Tell(new Status.Failure(error));
            if (!_books.ContainsKey(Sender) && !Sender.IsNobody()) Sender.Tell(new Status.Failure(error));
            _stopped?.Invoke(error.Message);
        }

        private long CacheBytes => _caches.Sum(c => c.Bytes) + _staging.Count * StagingSize(_layout, _s.MaxRead)
                                   + _inFlight.Values.Count(v => v.Staging is not null) * StagingSize(_layout, _s.MaxRead)
                                   + 4L * _layout.Layers * _layout.Neurons;

        private static void Timed(Book? book, Action a)
        {
            long t = Stopwatch.GetTimestamp();
            a();
            if (book is not null) book.MemTicks += Stopwatch.GetTimestamp() - t;
        }

        /// <summary>
        /// Pins the rows of <paramref name="a"/> that can be had now (hits, and rows appended for misses, their reads started)
        /// and queues the lease; false when not one row can be had yet (nothing is changed then but the neurons' last use).
        /// </summary>
        private unsafe bool TryAcquire(Acquire a, IActorRef replyTo, Book book)
        {
            var cache = _caches[a.Layer];
            if (_broken[a.Layer].Count > 0) _broken[a.Layer].RemoveWhere(cache.Drop);
            cache.Touch(a.Neurons, _step);
            int stamp = ++_stampValue;
            var marks = _stamp[a.Layer];
            foreach (var n in a.Neurons) marks[n] = stamp;

            int missing = 0;
            foreach (var n in a.Neurons) if (!cache.Contains(n)) missing++;
            // Make room: least recently used first, never the rows of this request or pinned rows.
            if (missing > cache.Capacity - cache.Count)
                book.Evicted += cache.EvictLeastRecent(missing - (cache.Capacity - cache.Count), _step + 1, marks, stamp);
            // Still short: speculative reads not started yet give their rows back (the demand is what compute waits for).
            if (missing > cache.Capacity - cache.Count && CancelPrefetches(a.Layer, marks, stamp) > 0)
                book.Evicted += cache.EvictLeastRecent(missing - (cache.Capacity - cache.Count), _step + 1, marks, stamp);

            var batchRows = new List<int>(a.Neurons.Length);
            var batchNeurons = new List<int>(a.Neurons.Length);
            var remaining = new List<int>();
            var loads = new List<(int, int, nint)>();
            foreach (var n in a.Neurons.Order())
            {
                int row = cache.RowOf(n);
                if (row < 0)
                {
                    row = cache.Append(n, _step);
                    if (row < 0)
                    {
                        remaining.Add(n);
                        continue;
                    }
                    loads.Add((n, row, 0));
                }
                batchNeurons.Add(n);
                batchRows.Add(row);
            }
            // Decode: when some neurons are cached and others must be read, the cached ones go out first and the ones
            // being read follow as the lease's remainder, so the FFN over the hits runs while the misses are read.
            if (_s.HitsFirst && !a.Prefill && loads.Count > 0 && loads.Count < batchRows.Count)
            {
                // loads is the subsequence of batchNeurons being read, in the same (sorted) order: walk both at once.
                var later = new List<int>(loads.Count + remaining.Count);
                int kept = 0, next = 0;
                for (int i = 0; i < batchNeurons.Count; i++)
                {
                    if (next < loads.Count && loads[next].Item1 == batchNeurons[i])
                    {
                        later.Add(batchNeurons[i]);
                        next++;
                    }
                    else
                    {
                        batchNeurons[kept] = batchNeurons[i];
                        batchRows[kept++] = batchRows[i];
                    }
                }
                batchNeurons.RemoveRange(kept, batchNeurons.Count - kept);
                batchRows.RemoveRange(kept, batchRows.Count - kept);
                later.AddRange(remaining);
                remaining = later;
            }
            // Not one row: nothing was appended or pinned (loads are a subset of the batch); wait for a pin to go.
            if (batchRows.Count == 0 && remaining.Count > 0) return false;
            // Pin before planning reads: row addresses must stay put from here until release.
            foreach (var r in batchRows) cache.Pin(r);
            Load(a.Layer, loads, a.Prefill, book, prefetch: false);
            var addresses = new nint[batchRows.Count];
            for (int i = 0; i < addresses.Length; i++) addresses[i] = (nint)cache.RowPointer(batchRows[i]);
            var lease = new Lease(++_nextId, a.Layer, batchRows.ToArray(), addresses, batchNeurons.ToArray(), remaining.ToArray(), a.First);
            book.Leases[lease.Id] = lease;
            _pending.Add(new Pending(lease, replyTo));
            AnswerReady();
            return true;
        }

        /// <summary>
        /// Withdraws the queued (not yet started) lookahead reads of <paramref name="layer"/> whose rows nobody else pins and
        /// whose neurons the demand does not ask for, and frees their rows. Returns how many rows were freed.
        /// </summary>
        private int CancelPrefetches(int layer, int[] marks, int stamp)
        {
            if (_queuedPrefetches.Count == 0) return 0;
            var cache = _caches[layer];
            var loading = _loadingRows[layer];
            int freed = 0;
            var kept = new Queue<(PlannedRead Plan, int Layer, Book? Book, bool Prefetch)>(_queuedPrefetches.Count);
            var gone = new List<int>();
            foreach (var q in _queuedPrefetches)
            {
                bool cancel = q.Layer == layer;
                if (cancel)
                    foreach (var row in q.Plan.Rows)
                        if (cache.PinsOf(row) != 1 || marks[cache.NeuronAt(row)] == stamp)
                        {
                            cancel = false;
                            break;
                        }
                if (!cancel)
                {
                    kept.Enqueue(q);
                    continue;
                }
                // Neurons first: dropping one row may move another (unpinned) row, never a pinned one of a queued read.
                gone.Clear();
                foreach (var row in q.Plan.Rows)
                {
                    gone.Add(cache.NeuronAt(row));
                    loading[row]--;
                    cache.Unpin(row);
                }
                foreach (var n in gone)
                    if (cache.Drop(n)) freed++;
                if (q.Book is { } b) b.Loaded -= q.Plan.Rows.Length;
            }
            _queuedPrefetches.Clear();
            foreach (var q in kept) _queuedPrefetches.Enqueue(q);
            return freed;
        }

        /// <summary>A pin went away: admit the waiting demand acquires that now find rows, oldest first.</summary>
        private void AdmitWaiting()
        {
            for (int i = 0; i < _waiting.Count; i++)
            {
                var (a, replyTo, book) = _waiting[i];
                if (!TryAcquire(a, replyTo, book)) continue;
                _waiting.RemoveAt(i--);
            }
        }

        private void OnPrefetch(Prefetch p, Book? book)
        {
            var cache = _caches[p.Layer];
            int stamp = ++_stampValue;
            var marks = _stamp[p.Layer];
            foreach (var n in p.Neurons) marks[n] = stamp;
            // A prefetch pins at most the rows above the demand reserve: the demand of this layer always finds rows.
            int allowed = cache.Capacity - _s.DemandReserve - cache.PinnedRows;
            if (allowed <= 0) return;
            int missing = Math.Min(allowed, p.Neurons.Count(n => !cache.Contains(n)));
            int free = cache.Capacity - cache.Count;
            // A prefetch never evicts what the current token uses.
            if (missing > free)
            {
                int evicted = cache.EvictLeastRecent(missing - free, _step, marks, stamp);
                if (book is not null) book.Evicted += evicted;
            }
            var loads = new List<(int, int, nint)>();
            foreach (var n in p.Neurons.Order())
            {
                if (cache.Contains(n)) continue;
                if (loads.Count == allowed) break;
                int row = cache.Append(n, _step - 1); // recorded as used by the step the prediction came from
                if (row < 0) break;
                loads.Add((n, row, 0));
            }
            Load(p.Layer, loads, prefill: false, book, prefetch: true);
        }

        private unsafe void Load(int layer, List<(int Neuron, int Row, nint Address)> loads, bool prefill, Book? book, bool prefetch)
        {
            if (loads.Count == 0) return;
            var cache = _caches[layer];
            for (int i = 0; i < loads.Count; i++)
            {
                var (n, row, _) = loads[i];
                loads[i] = (n, row, (nint)cache.RowPointer(row));
            }
            if (book is not null) book.Loaded += loads.Count;
            bool sequential = prefill && _s.PrefillSequential;
            long gap = sequential ? _s.MaxRead : _s.CoalesceGap;
            foreach (var plan in ReadPlanner.Plan(_layout, layer, loads, gap, _s.MaxRead, _s.SplitParts && !sequential))
            {
                foreach (var row in plan.Rows)
                {
                    cache.Pin(row); // each read's own pin, released when that read is done
                    _loadingRows[layer][row]++;
                }
                (prefetch ? _queuedPrefetches : _queuedReads).Enqueue((plan, layer, book, prefetch));
            }
            Dispatch();
        }

        private void Dispatch()
        {
            while (_inFlight.Count < _s.MaxReadsInFlight)
            {
                var queue = _queuedReads.Count > 0 ? _queuedReads
                    : _queuedPrefetches.Count > 0 && _inFlight.Count < Math.Max(1, _s.MaxReadsInFlight / 2) ? _queuedPrefetches
                    : null;
                if (queue is null) break;
                var (plan, layer, book, prefetch) = queue.Peek();
                AlignedBuffer? staging = null;
                if (!plan.Direct)
                {
                    if (_staging.Count == 0) break; // wait for a staging buffer to come back
                    staging = _staging.Pop();
                }
                queue.Dequeue();
                long id = ++_nextId;
                _inFlight[id] = (plan, layer, staging, book);
                if (book is not null)
                {
                    long now = Stopwatch.GetTimestamp();
                    if (book.InFlight++ == 0) book.IoBusySince = now;
                    if (book.FirstReadTicks == 0) book.FirstReadTicks = now;
                    if (prefetch && book.PrefetchStart[layer] == 0) book.PrefetchStart[layer] = now;
                }
                _loader.Tell(new FlashLoader.ReadRequest(id, _file, plan.FileOffset, plan.Length, plan.Destination, staging,
                    plan.Direct ? null : plan.Copies, Self));
            }
        }

        private void OnReadDone(FlashLoader.ReadDone d)
        {
            long t = Stopwatch.GetTimestamp();
            if (!_inFlight.Remove(d.Id, out var entry)) return; // duplicate answers are ignored (never expected)
            if (entry.Book is { } book)
            {
                if (--book.InFlight == 0) book.IoBusyTicks += t - book.IoBusySince;
                book.Bytes += d.Bytes;
                book.Reads++;
            }
            if (entry.Staging is not null) _staging.Push(entry.Staging);
            var cache = _caches[entry.Layer];
            foreach (var row in entry.Plan.Rows)
            {
                _loadingRows[entry.Layer][row]--;
                cache.Unpin(row);
            }
            Dispatch();
            AnswerReady();
            if (_waiting.Count > 0) AdmitWaiting();
            if (entry.Book is { } b) b.MemTicks += Stopwatch.GetTimestamp() - t;
        }

        private void OnReadFailed(FlashLoader.ReadFailed f)
        {
            if (!_inFlight.Remove(f.Id, out var entry)) return;
            if (entry.Book is { } book && --book.InFlight == 0) book.IoBusyTicks += Stopwatch.GetTimestamp() - book.IoBusySince;
            if (entry.Staging is not null) _staging.Push(entry.Staging);
            var cache = _caches[entry.Layer];
            var brokenNeurons = entry.Plan.Rows.Select(cache.NeuronAt).ToArray();
            foreach (var row in entry.Plan.Rows)
            {
                _loadingRows[entry.Layer][row]--;
                cache.Unpin(row);
            }
            // Whoever waits on this layer cannot get correct rows: fail them, release their pins, and drop the
            // rows whose bytes never arrived so no later token uses them.
            foreach (var p in _pending.Where(p => p.Lease.Layer == entry.Layer).ToList())
            {
                _pending.Remove(p);
                foreach (var r in p.Lease.Rows) cache.Unpin(r);
                if (_books.TryGetValue(p.ReplyTo, out var owner)) owner.Leases.Remove(p.Lease.Id);
                p.ReplyTo.Tell(new AcquireFailed(entry.Layer, f.Error));
            }
            // Rows whose bytes never arrived must not be used: drop them now, or at the next acquire if still pinned.
            foreach (var n in brokenNeurons)
                if (!cache.Drop(n)) _broken[entry.Layer].Add(n);
            Dispatch();
            if (_waiting.Count > 0) AdmitWaiting();
        }

        private void AnswerReady()
        {
            for (int i = 0; i < _pending.Count; i++)
            {
                var p = _pending[i];
                var loading = _loadingRows[p.Lease.Layer];
                var rows = p.Lease.Rows;
                while (p.Checked < rows.Length && loading[rows[p.Checked]] == 0) p.Checked++;
                if (p.Checked < rows.Length) continue;
                _pending.RemoveAt(i--);
                p.ReplyTo.Tell(new RowsReady(p.Lease));
            }
        }

        private void OnRelease(Lease lease, Book book)
        {
            if (!book.Leases.Remove(lease.Id)) return; // released already (or never this session's): never unpin twice
            var cache = _caches[lease.Layer];
            foreach (var r in lease.Rows) cache.Unpin(r);
            if (_waiting.Count > 0) AdmitWaiting();
        }

        /// <summary>A session stopped (finished, cancelled or crashed): release everything it held or waited for.</summary>
        private void OnSessionGone(IActorRef session)
        {
            if (!_books.Remove(session, out var book)) return;
            _waiting.RemoveAll(w => w.ReplyTo.Equals(session));
            foreach (var p in _pending.Where(p => p.ReplyTo.Equals(session)).ToList()) _pending.Remove(p);
            foreach (var lease in book.Leases.Values)
            {
                var cache = _caches[lease.Layer];
                foreach (var r in lease.Rows) cache.Unpin(r);
            }
            book.Leases.Clear();
            foreach (var key in _inFlight.Where(kv => kv.Value.Book == book).Select(kv => kv.Key).ToList())
                _inFlight[key] = _inFlight[key] with { Book = null };
            foreach (var queue in new[] { _queuedReads, _queuedPrefetches })
            {
                var queued = queue.ToArray();
                queue.Clear();
                foreach (var q in queued) queue.Enqueue(q.Book == book ? q with { Book = null } : q);
            }
            if (_waiting.Count > 0) AdmitWaiting();
        }

        private void OnTokenDone(TokenDone t, Book book)
        {
            // Window: keep neurons used in the last k steps of every live session (k steps per session), so the
            // cache holds the union of what the sessions need; k = 0 keeps nothing once the token is done.
            long span = (long)_s.Window * Math.Max(1, _books.Count);
            long oldestKept = _s.Window == 0 ? _step + 1 : _step - span + 1;
            int cached = 0;
            foreach (var c in _caches)
            {
                book.Evicted += c.EvictOlderThan(oldestKept);
                cached += c.Count;
            }
            _step++;
            if (_waiting.Count > 0) AdmitWaiting();
            long now = Stopwatch.GetTimestamp();
            long ioTicks = book.IoBusyTicks + (book.InFlight > 0 ? now - book.IoBusySince : 0);
            if (book.InFlight > 0) book.IoBusySince = now;
            Sender.Tell(new TokenCacheStats(t.Position, book.Bytes, book.Reads, book.Active, book.Loaded, book.Evicted, cached,
                ioTicks * 1000.0 / Stopwatch.Frequency, book.MemTicks * 1000.0 / Stopwatch.Frequency, CacheBytes, book.FirstReadTicks,
                (long[])book.PrefetchStart.Clone()));
            Array.Clear(book.PrefetchStart);
            book.Bytes = book.IoBusyTicks = book.MemTicks = book.FirstReadTicks = 0;
            book.Reads = book.Active = book.Loaded = book.Evicted = 0;
        }

        private unsafe Snapshot TakeSnapshot(int layer)
        {
            var c = _caches[layer];
            var neurons = new int[c.Count];
            var bytes = new byte[c.Count][];
            for (int r = 0, i = 0; r < c.Rows; r++)
            {
                if (c.NeuronAt(r) < 0) continue; // a hole
                neurons[i] = c.NeuronAt(r);
                bytes[i++] = new ReadOnlySpan<byte>(c.RowPointer(r), (int)_layout.BundleBytes).ToArray();
            }
            return new Snapshot(layer, neurons, bytes, CacheBytes);
        }

        protected override void PostStop()
        {
            foreach (var c in _caches) c.Dispose();
            while (_staging.Count > 0) _staging.Pop().Dispose();
            foreach (var v in _inFlight.Values) v.Staging?.Dispose();
            _file.Dispose();
            base.PostStop();
        }
    }
}
