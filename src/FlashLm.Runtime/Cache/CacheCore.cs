using System.Diagnostics;
using FlashLm.Formats.FlashLayout;
using FlashLm.Runtime.Io;
using static FlashLm.Runtime.Cache.CacheManager;

namespace FlashLm.Runtime.Cache;

/// <summary>
/// The cache manager's state and decisions, with no actor around them: every layer's <see cref="NeuronCache"/>, the reads
/// in flight into each row, the demand reserve for lookahead prefetches, the read queues (demand first, prefetches up to
/// half the slots), the leases, the acquires that wait for their rows or for a row at all, the window at token end and
/// per-session statistics. A session is an opaque key (the actor uses the session's actor ref; compared with Equals).
/// Each operation returns an <see cref="Effects"/>: the reads to start, the leases that became ready and the acquires
/// that failed; the caller delivers them in that order. No row is evicted, moved or reused while a read into it or a
/// compute over it is in flight.
/// </summary>
internal sealed class CacheCore : IDisposable
{
    /// <summary>A read to start now: the caller sends it to the loader and later reports <see cref="ReadDone"/> or <see cref="ReadFailed"/> with its id.</summary>
    /// <param name="Staging">The staging buffer the read lands in (null: straight into the rows); the core owns it.</param>
    public readonly record struct ReadStart(long Id, PlannedRead Plan, AlignedBuffer? Staging);

    /// <summary>The lease of <paramref name="Session"/> holds its bundles: compute may run.</summary>
    public readonly record struct Ready(object Session, Lease Lease);

    /// <summary>An acquire of <paramref name="Session"/> on <paramref name="Layer"/> cannot be served (a read failed); its pins are gone.</summary>
    public readonly record struct Failed(object Session, int Layer, string Error);

    /// <summary>What one operation asks the caller to do: start <see cref="Reads"/>, then tell <see cref="Failures"/>, then <see cref="ReadyLeases"/>
    /// (each list in the order it happened; a failure never follows a ready lease of the same operation).</summary>
    public sealed class Effects
    {
        internal static readonly Effects None = new();
        private List<ReadStart>? _reads;
        private List<Ready>? _ready;
        private List<Failed>? _failed;

        public IReadOnlyList<ReadStart> Reads => _reads ?? (IReadOnlyList<ReadStart>)[];
        public IReadOnlyList<Ready> ReadyLeases => _ready ?? (IReadOnlyList<Ready>)[];
        public IReadOnlyList<Failed> Failures => _failed ?? (IReadOnlyList<Failed>)[];

        internal void Add(ReadStart r) => (_reads ??= []).Add(r);
        internal void Add(Ready r) => (_ready ??= []).Add(r);
        internal void Add(Failed f) => (_failed ??= []).Add(f);
    }

    private sealed class Pending(Lease lease, object session)
    {
        public Lease Lease { get; } = lease;
        public object Session { get; } = session;

        /// <summary>Rows [0, Checked) of the lease have loaded; a leased row is pinned, so it never starts loading again.</summary>
        public int Checked { get; set; }
    }

    /// <summary>A demand acquire that found no row it could use yet.</summary>
    private sealed record Waiting(object Session, int Layer, int[] Neurons, bool Prefill, bool First, Book Book);

    /// <summary>One session's leases and per-token statistics.</summary>
    private sealed class Book
    {
        public readonly Dictionary<long, Lease> Leases = new();
        public long Bytes, IoBusyTicks, IoBusySince, MemTicks, FirstReadTicks;
        public int Reads, Active, Loaded, Evicted, InFlight, PinnedHits, WindowHits;
        public long[] PrefetchStart = [];
    }

    private readonly record struct Queued(PlannedRead Plan, int Layer, Book? Book, bool Prefetch);

    private readonly FfnLayout _layout;
    private readonly CacheSettings _s;
    private readonly NeuronCache[] _caches;
    private readonly int[][] _loadingRows;     // (layer, capacity) reads in flight into each row
    private readonly int[][] _stamp;           // (layer, neurons) acquire marks
    private readonly HashSet<int>[] _broken;   // (layer) neurons whose read failed and whose row could not be dropped yet
    private readonly bool[][]? _hot;           // (layer, neurons) pinned for good (hot-neuron pinning); null: no pinning
    private int _hotRows;                      // rows holding a hot neuron's permanent pin
    private bool _hotLoaded;
    private int _stampValue;
    private readonly Stack<AlignedBuffer> _staging = new();
    private readonly AlignedBuffer? _discard;  // where the gaps of scatter reads land (never read back); null: no scatter reads
    private readonly Dictionary<long, (PlannedRead Plan, int Layer, AlignedBuffer? Staging, Book? Book)> _inFlight = new();
    // Reads waiting for a slot: the ones compute waits for go first; lookahead reads only fill up to half the slots, so
    // a speculative read never holds up a needed one for long.
    private readonly Queue<Queued> _queuedReads = new(), _queuedPrefetches = new();
    private readonly List<Pending> _pending = new();
    // Demand acquires that found no row they could use (all pinned by reads in flight or by leases): retried in arrival
    // order whenever a pin goes away. Pins only ever belong to reads (which finish) and leases (which compute releases),
    // so a waiting acquire is always admitted in the end.
    private readonly List<Waiting> _waiting = new();
    private readonly Dictionary<object, Book> _books = new();   // live sessions
    private long _nextId;
    // Global token step: every TokenDone of any session advances it; "last used" and the window count in steps.
    private long _step;
    private Effects? _out; // the effects of the operation running now
    private Effects? _interrupted; // the effects of an operation that threw, before it threw

    public CacheCore(FfnLayout layout, CacheSettings s)
    {
        _layout = layout;
        _s = s;
        _caches = new NeuronCache[layout.Layers];
        _loadingRows = new int[layout.Layers][];
        _stamp = new int[layout.Layers][];
        _broken = new HashSet<int>[layout.Layers];
        try
        {
            for (int l = 0; l < layout.Layers; l++)
            {
                _caches[l] = new NeuronCache(l, layout.Neurons, s.RowsPerLayer, layout.BundleStride);
                _loadingRows[l] = new int[_caches[l].Capacity];
                _stamp[l] = new int[layout.Neurons];
                _broken[l] = new HashSet<int>();
            }
            if (s.Hot is { } hot)
            {
                if (hot.Length != layout.Layers) throw new ArgumentException($"cache: {hot.Length} hot lists for {layout.Layers} layers");
                _hot = new bool[layout.Layers][];
                for (int l = 0; l < layout.Layers; l++)
                {
                    _hot[l] = new bool[layout.Neurons];
                    CheckLayer(l, hot[l]);
                    // Every row pinned is allowed only when every neuron is (no acquire then needs a window row).
                    if (hot[l].Length > _caches[l].Capacity || (hot[l].Length == _caches[l].Capacity && hot[l].Length < layout.Neurons))
                        throw new ArgumentException($"cache: layer {l} pins {hot[l].Length} neurons but has {_caches[l].Capacity} rows; the window needs rows of its own");
                    foreach (var n in hot[l])
                    {
                        if (_hot[l][n]) throw new ArgumentException($"cache: neuron {n} of layer {l} is pinned twice");
                        _hot[l][n] = true;
                    }
                }
            }
            for (int i = 0; i < s.StagingBuffers; i++) _staging.Push(new AlignedBuffer(StagingSize(layout, s.MaxRead)));
            if (DiscardSize(layout, s.CoalesceGap) is > 0 and var discard) _discard = new AlignedBuffer(discard);
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    /// <summary>The cache of one layer (read-only use: tests and snapshots).</summary>
    public NeuronCache CacheOf(int layer) => _caches[layer];

    /// <summary>Rows pinned by reads in flight and leases (hot rows' permanent pins are not counted: see <see cref="HotRows"/>).</summary>
    public int PinnedRows => _caches.Sum(c => c.PinnedRows) - _hotRows;
    /// <summary>Rows holding a pinned (hot) neuron, over all layers.</summary>
    public int HotRows => _hotRows;
    /// <summary>Whether <paramref name="neuron"/> of <paramref name="layer"/> is pinned for good.</summary>
    public bool IsHot(int layer, int neuron) => _hot is { } h && h[layer][neuron];
    public int Leases => _books.Values.Sum(b => b.Leases.Count);
    /// <summary>Acquires not answered yet: leases waiting for their reads, and acquires waiting for a row at all.</summary>
    public int PendingAcquires => _pending.Count + _waiting.Count;
    public int Sessions => _books.Count;
    public int ReadsInFlight => _inFlight.Count;
    public bool Knows(object session) => _books.ContainsKey(session);

    /// <summary>DRAM held now: rows and maps, staging buffers (free or under a read), acquire stamps.</summary>
    public long CacheBytes => _caches.Sum(c => c.Bytes) + _staging.Count * StagingSize(_layout, _s.MaxRead)
                              + _inFlight.Values.Count(v => v.Staging is not null) * StagingSize(_layout, _s.MaxRead)
                              + 4L * _layout.Layers * _layout.Neurons + (_discard?.Length ?? 0) + HotBytes(_layout, _s.Hot);

    /// <summary>Starts the books of <paramref name="session"/>; true when it was not known yet (the actor watches it then).</summary>
    public bool Join(object session)
    {
        if (_books.ContainsKey(session)) return false;
        _books[session] = new Book { PrefetchStart = new long[_layout.Layers] };
        return true;
    }

    private Book BookOf(object session)
    {
        Join(session);
        return _books[session];
    }

    /// <summary>Runs one operation with its own effects, timing it into <paramref name="book"/>'s memory-management time.</summary>
    private Effects Run(Book? book, Action a)
    {
        long t = Stopwatch.GetTimestamp();
        var effects = _out = new Effects();
        try
        {
            a();
        }
        catch
        {
            _interrupted = effects;
            throw;
        }
        finally
        {
            _out = null;
        }
        if (book is not null) book.MemTicks += Stopwatch.GetTimestamp() - t;
        return effects;
    }

    /// <summary>
    /// The effects an operation produced before it threw (reads it already took a slot and a staging buffer for, leases it
    /// found ready), once; null when none threw. The owner delivers them as if the operation had finished.
    /// </summary>
    public Effects? TakeInterrupted()
    {
        var e = _interrupted;
        _interrupted = null;
        return e;
    }

    private Effects Out => _out ?? throw new InvalidOperationException("cache core: an effect outside an operation");

    /// <summary>
    /// Load and pin <paramref name="neurons"/> of <paramref name="layer"/> for <paramref name="session"/>. The lease comes back
    /// as ready in these or later effects; when every row of the layer is pinned, the acquire waits for a pin to go away.
    /// </summary>
    /// <param name="first">False for the follow-up of a lease that had remaining neurons (not counted as active again).</param>
    public Effects Acquire(object session, int layer, int[] neurons, bool prefill, bool first = true)
    {
        CheckLayer(layer, neurons);
        var book = BookOf(session);
        return Run(book, () =>
        {
            if (first)
            {
                book.Active += neurons.Length;
                var cache = _caches[layer];
                var hot = _hot?[layer];
                foreach (var n in neurons)
                {
                    if (hot is not null && hot[n]) book.PinnedHits++;
                    else if (cache.Contains(n)) book.WindowHits++;
                }
            }
            var w = new Waiting(session, layer, neurons, prefill, first, book);
            // Every row of the layer pinned (reads in flight, other sessions' leases): wait for one to come free.
            if (!TryAcquire(w)) _waiting.Add(w);
        });
    }

    /// <summary>
    /// Hot-neuron pinning: appends every layer's hot neurons, pins each row for good and starts their reads (prompt-style long
    /// reads, charged to no session). Once, when the cache starts; does nothing without pinning or the second time.
    /// </summary>
    public Effects LoadHot()
    {
        if (_hot is null || _hotLoaded) return Effects.None;
        _hotLoaded = true;
        return Run(null, () =>
        {
            for (int l = 0; l < _caches.Length; l++)
            {
                var cache = _caches[l];
                var loads = new List<(int, int, nint)>(_s.Hot![l].Length);
                foreach (var n in _s.Hot[l].Order())
                {
                    int row = cache.Append(n, _step);
                    cache.Pin(row); // for good: never evicted, moved or reused
                    _hotRows++;
                    loads.Add((n, row, 0));
                }
                Load(l, loads, prefill: true, book: null, prefetch: false);
            }
        });
    }

    /// <summary>Lookahead: start reading these neurons now (no pin, no lease); <paramref name="session"/> (if any) is charged for the reads.</summary>
    public Effects Prefetch(object? session, int layer, int[] neurons)
    {
        CheckLayer(layer, neurons);
        var book = session is null ? null : BookOf(session);
        return Run(book, () => OnPrefetch(layer, neurons, book));
    }

    /// <summary>Compute is done with <paramref name="lease"/>: unpin its rows (a second release, or another session's lease, does nothing).</summary>
    public Effects Release(object session, Lease lease)
    {
        var book = BookOf(session);
        return Run(book, () =>
        {
            if (!book.Leases.Remove(lease.Id)) return; // released already (or never this session's): never unpin twice
            var cache = _caches[lease.Layer];
            foreach (var r in lease.Rows) cache.Unpin(r);
            if (_waiting.Count > 0) AdmitWaiting();
        });
    }

    /// <summary>The session finished a token: apply the window and return what the cache did for it since its last token.</summary>
    public TokenCacheStats TokenDone(object session, long position, out Effects effects)
    {
        var book = BookOf(session);
        TokenCacheStats? stats = null;
        effects = Run(book, () => stats = OnTokenDone(position, book));
        return stats!;
    }

    /// <summary>The read <paramref name="id"/> landed <paramref name="bytes"/> bytes: its rows are loaded.</summary>
    public Effects ReadDone(long id, int bytes) => ReadsDone([(id, bytes)]);

    /// <summary>
    /// Several reads landed (one message from the loader for what it reaped at once): their rows are loaded, and the reads
    /// that can start and the leases that are ready are worked out once for all of them.
    /// </summary>
    public Effects ReadsDone(IReadOnlyList<(long Id, int Bytes)> done)
    {
        long t = Stopwatch.GetTimestamp();
        Book? timed = null;
        int landed = 0;
        var effects = Run(null, () =>
        {
            foreach (var (id, bytes) in done)
            {
                if (!_inFlight.Remove(id, out var entry)) continue; // duplicate answers are ignored (never expected)
                landed++;
                if (entry.Book is { } book)
                {
                    timed ??= book;
                    if (--book.InFlight == 0) book.IoBusyTicks += t - book.IoBusySince;
                    book.Bytes += bytes;
                    book.Reads++;
                }
                if (entry.Staging is not null) _staging.Push(entry.Staging);
                var cache = _caches[entry.Layer];
                foreach (var row in entry.Plan.Rows)
                {
                    _loadingRows[entry.Layer][row]--;
                    cache.Unpin(row);
                }
            }
            if (landed == 0) return;
            Dispatch();
            AnswerReady();
            if (_waiting.Count > 0) AdmitWaiting();
        });
        if (landed == 0) return Effects.None;
        if (timed is not null) timed.MemTicks += Stopwatch.GetTimestamp() - t;
        return effects;
    }

    /// <summary>
    /// The read <paramref name="id"/> failed: whoever waits on its layer cannot get correct rows, so their acquires fail and
    /// their pins go; the rows whose bytes never arrived are dropped (now, or at the layer's next acquire if still pinned).
    /// </summary>
    public Effects ReadFailed(long id, string error)
    {
        if (!_inFlight.Remove(id, out var entry)) return Effects.None;
        return Run(null, () =>
        {
            if (entry.Book is { } book && --book.InFlight == 0) book.IoBusyTicks += Stopwatch.GetTimestamp() - book.IoBusySince;
            if (entry.Staging is not null) _staging.Push(entry.Staging);
            var cache = _caches[entry.Layer];
            var brokenNeurons = entry.Plan.Rows.Select(cache.NeuronAt).ToArray();
            foreach (var row in entry.Plan.Rows)
            {
                _loadingRows[entry.Layer][row]--;
                cache.Unpin(row);
            }
            foreach (var p in _pending.Where(p => p.Lease.Layer == entry.Layer).ToList())
            {
                _pending.Remove(p);
                foreach (var r in p.Lease.Rows) cache.Unpin(r);
                if (_books.TryGetValue(p.Session, out var owner)) owner.Leases.Remove(p.Lease.Id);
                Out.Add(new Failed(p.Session, entry.Layer, error));
            }
            // A hot neuron whose bytes never arrived stops being pinned: its row is dropped like any other broken row
            // (and read again on demand).
            if (_hot?[entry.Layer] is { } hot)
                foreach (var n in brokenNeurons)
                    if (n >= 0 && hot[n])
                    {
                        hot[n] = false;
                        cache.Unpin(cache.RowOf(n));
                        _hotRows--;
                    }
            foreach (var n in brokenNeurons)
                if (!cache.Drop(n)) _broken[entry.Layer].Add(n);
            Dispatch();
            if (_waiting.Count > 0) AdmitWaiting();
        });
    }

    /// <summary>A session stopped (finished, cancelled or crashed): release everything it held or waited for.</summary>
    public Effects SessionGone(object session)
    {
        if (!_books.Remove(session, out var book)) return Effects.None;
        return Run(null, () =>
        {
            _waiting.RemoveAll(w => w.Session.Equals(session));
            foreach (var p in _pending.Where(p => p.Session.Equals(session)).ToList()) _pending.Remove(p);
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
        });
    }

    /// <summary>
    /// The owner broke (its state can no longer be trusted): forget every acquire and queued prefetch so nothing more is
    /// answered or started for them. Rows, pins and reads in flight are left as they are (reads still land in their rows).
    /// Returns the sessions known, to be failed.
    /// </summary>
    public IReadOnlyList<object> Abandon()
    {
        _waiting.Clear();
        _pending.Clear();
        _queuedPrefetches.Clear();
        return _books.Keys.ToList();
    }

    /// <summary>The cached neurons of a layer and a copy of each row's bundle bytes, in row order.</summary>
    public unsafe (int[] Neurons, byte[][] RowBytes) Snapshot(int layer)
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
        return (neurons, bytes);
    }

    /// <summary><paramref name="neurons"/> in ascending order: the array itself when it already is (predictors name neurons in
    /// order), else a sorted copy.</summary>
    private static int[] Ascending(int[] neurons)
    {
        for (int i = 1; i < neurons.Length; i++)
            if (neurons[i] < neurons[i - 1])
            {
                var sorted = (int[])neurons.Clone();
                Array.Sort(sorted);
                return sorted;
            }
        return neurons;
    }

    private void CheckLayer(int layer, int[] neurons)
    {
        if ((uint)layer >= (uint)_caches.Length)
            throw new ArgumentOutOfRangeException(nameof(layer), $"cache: layer {layer} is not in [0, {_caches.Length}) of {_layout.FilePath}");
        foreach (var n in neurons)
            if ((uint)n >= (uint)_layout.Neurons)
                throw new ArgumentOutOfRangeException(nameof(neurons), $"cache: neuron {n} of layer {layer} is not in [0, {_layout.Neurons}) of {_layout.FilePath}");
    }

    /// <summary>
    /// Pins the rows of <paramref name="a"/> that can be had now (hits, and rows appended for misses, their reads started)
    /// and queues the lease; false when not one row can be had yet (nothing is changed then but the neurons' last use).
    /// </summary>
    private unsafe bool TryAcquire(Waiting a)
    {
        var book = a.Book;
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
        foreach (var n in Ascending(a.Neurons))
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
        _pending.Add(new Pending(lease, a.Session));
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
        var kept = new Queue<Queued>(_queuedPrefetches.Count);
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
            // Neurons first, then drop them: the rows are the queued read's, pinned by it until now.
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
            if (!TryAcquire(_waiting[i])) continue;
            _waiting.RemoveAt(i--);
        }
    }

    private void OnPrefetch(int layer, int[] neurons, Book? book)
    {
        var cache = _caches[layer];
        int stamp = ++_stampValue;
        var marks = _stamp[layer];
        foreach (var n in neurons) marks[n] = stamp;
        // A prefetch pins at most the rows above the demand reserve: the demand of this layer always finds rows.
        int allowed = cache.Capacity - _s.DemandReserve - cache.PinnedRows;
        if (allowed <= 0) return;
        int missing = Math.Min(allowed, neurons.Count(n => !cache.Contains(n)));
        int free = cache.Capacity - cache.Count;
        // A prefetch never evicts what the current token uses.
        if (missing > free)
        {
            int evicted = cache.EvictLeastRecent(missing - free, _step, marks, stamp);
            if (book is not null) book.Evicted += evicted;
        }
        var loads = new List<(int, int, nint)>();
        foreach (var n in Ascending(neurons))
        {
            if (cache.Contains(n)) continue;
            if (loads.Count == allowed) break;
            int row = cache.Append(n, _step - 1); // recorded as used by the step the prediction came from
            if (row < 0) break;
            loads.Add((n, row, 0));
        }
        Load(layer, loads, prefill: false, book, prefetch: true);
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
        foreach (var plan in ReadPlanner.Plan(_layout, layer, loads, gap, _s.MaxRead, _s.SplitParts && !sequential, _s.ResidentSkip,
                     _discard is null ? 0 : (nint)_discard.Pointer, (int)(_discard?.Length ?? 0)))
        {
            foreach (var row in plan.Rows)
            {
                cache.Pin(row); // each read's own pin, released when that read is done
                _loadingRows[layer][row]++;
            }
            (prefetch ? _queuedPrefetches : _queuedReads).Enqueue(new Queued(plan, layer, book, prefetch));
        }
        Dispatch();
    }

    /// <summary>Starts queued reads while slots (and, for staged reads, staging buffers) are free.</summary>
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
            if (plan.Staged)
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
            Out.Add(new ReadStart(id, plan, staging));
        }
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
            Out.Add(new Ready(p.Session, p.Lease));
        }
    }

    private TokenCacheStats OnTokenDone(long position, Book book)
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
        var stats = new TokenCacheStats(position, book.Bytes, book.Reads, book.Active, book.Loaded, book.Evicted, cached,
            ioTicks * 1000.0 / Stopwatch.Frequency, book.MemTicks * 1000.0 / Stopwatch.Frequency, CacheBytes, book.FirstReadTicks,
            (long[])book.PrefetchStart.Clone()) { PinnedHits = book.PinnedHits, WindowHits = book.WindowHits };
        Array.Clear(book.PrefetchStart);
        book.Bytes = book.IoBusyTicks = book.MemTicks = book.FirstReadTicks = 0;
        book.Reads = book.Active = book.Loaded = book.Evicted = book.PinnedHits = book.WindowHits = 0;
        return stats;
    }

    /// <summary>Frees the rows and every staging buffer, also those under a read: call only once no read can still land.</summary>
    public void Dispose()
    {
        foreach (var c in _caches) c?.Dispose();
        while (_staging.Count > 0) _staging.Pop().Dispose();
        _discard?.Dispose();
        foreach (var v in _inFlight.Values) v.Staging?.Dispose();
        _inFlight.Clear();
    }
}
