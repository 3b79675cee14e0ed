using System.Buffers.Binary;
using System.IO.Hashing;
using FlashLm.Formats;
using FlashLm.Models.Predictors;

namespace FlashLm.Runtime.Predict;

/// <summary>
/// An activation trace: the exact active set of every (position, layer) of the dense thresholded model along one fixed token
/// sequence, recorded once, offline (with the oracle), and replayed by <see cref="TracePredictor"/>. It exists because random
/// synthetic weights are not low-rank, so a predictor trained on them cannot show what a trained predictor does on a real model;
/// replaying the exact sets degraded to a stated recall and over-selection can.
/// </summary>
/// <remarks>
/// File (little-endian): "FLMTRC02"; int32 layers, neurons, entries; int32 sequence length and the token ids; int32 threshold
/// count and the float32 thresholds; per entry int32 position, layer, count and count ascending int32 neuron ids, then int32
/// near count and that many inactive neuron ids, nearest the threshold first; then the XxHash3 (64-bit) of every byte before it.
/// </remarks>
internal sealed class ActivationTrace
{
    private static ReadOnlySpan<byte> Magic => "FLMTRC02"u8;

    /// <summary>The file format's version (its header).</summary>
    public const string Version = "FLMTRC02";

    public int Layers { get; }
    public int Neurons { get; }

    /// <summary>The token sequence the trace was recorded along.</summary>
    public int[] Sequence { get; }

    /// <summary>The per-layer activity thresholds the model used (empty for ReLU models).</summary>
    public float[] Thresholds { get; }

    /// <summary>Entries by position, then layer (null where nothing was recorded).</summary>
    private readonly TraceEntry?[][] _sets;

    public ActivationTrace(int layers, int neurons, int[] sequence, float[] thresholds, IReadOnlyDictionary<(int Position, int Layer), TraceEntry> sets)
    {
        Layers = layers;
        Neurons = neurons;
        Sequence = sequence;
        Thresholds = thresholds;
        int positions = sets.Count == 0 ? 0 : sets.Keys.Max(k => k.Position) + 1;
        _sets = new TraceEntry?[positions][];
        for (int p = 0; p < positions; p++) _sets[p] = new TraceEntry?[layers];
        foreach (var ((p, l), ids) in sets) _sets[p][l] = ids;
    }

    /// <summary>Positions 0 .. Positions-1 may have entries.</summary>
    public int Positions => _sets.Length;

    /// <summary>The entry of <paramref name="layer"/> at <paramref name="position"/>, or null when not recorded.</summary>
    public TraceEntry? At(int position, int layer) => position >= 0 && position < _sets.Length && layer >= 0 && layer < Layers ? _sets[position][layer] : null;

    /// <summary>Every recorded entry.</summary>
    public IEnumerable<(int Position, int Layer, TraceEntry Entry)> Entries()
    {
        for (int p = 0; p < _sets.Length; p++)
        for (int l = 0; l < Layers; l++)
            if (_sets[p][l] is { } e) yield return (p, l, e);
    }

    /// <summary>Writes the trace to <paramref name="path"/> (through a temporary file, so a file at the path is always whole).</summary>
    public void Save(string path)
    {
        var entries = Entries().ToList();
        using var ms = new MemoryStream();
        using (var w = new BinaryWriter(ms, System.Text.Encoding.UTF8, leaveOpen: true))
        {
            w.Write(Magic);
            w.Write(Layers);
            w.Write(Neurons);
            w.Write(entries.Count);
            w.Write(Sequence.Length);
            foreach (var t in Sequence) w.Write(t);
            w.Write(Thresholds.Length);
            foreach (var t in Thresholds) w.Write(t);
            foreach (var (p, l, e) in entries)
            {
                w.Write(p);
                w.Write(l);
                w.Write(e.Active.Length);
                foreach (var id in e.Active) w.Write(id);
                w.Write(e.Near.Length);
                foreach (var id in e.Near) w.Write(id);
            }
        }
        var body = ms.ToArray();
        var file = new byte[body.Length + 8];
        body.CopyTo(file, 0);
        BinaryPrimitives.WriteUInt64LittleEndian(file.AsSpan(body.Length), XxHash3.HashToUInt64(body));
        var dir = Path.GetDirectoryName(Path.GetFullPath(path));
        if (dir is not null) Directory.CreateDirectory(dir);
        File.WriteAllBytes(path + ".part", file);
        File.Move(path + ".part", path, overwrite: true);
    }

    /// <summary>Reads and checks a trace file; every problem names the file and the offset.</summary>
    public static ActivationTrace Load(string path)
    {
        byte[] data;
        try
        {
            data = File.ReadAllBytes(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new ModelFormatException(path, $"cannot read the activation trace: {e.Message}", inner: e);
        }
        if (data.Length < Magic.Length + 8 || !data.AsSpan(0, Magic.Length).SequenceEqual(Magic))
            throw new ModelFormatException(path, "not an activation trace of this version (no FLMTRC02 header): record it again", offset: 0);
        int bodyLength = data.Length - 8;
        var body = data.AsSpan(0, bodyLength);
        ulong stored = BinaryPrimitives.ReadUInt64LittleEndian(data.AsSpan(data.Length - 8));
        if (XxHash3.HashToUInt64(body) != stored)
            throw new ModelFormatException(path, "the activation trace's checksum does not match: the file is truncated or corrupt (record it again)",
                offset: data.Length - 8);
        int at = Magic.Length;
        int Int(string what, int min, int max)
        {
            if (at + 4 > bodyLength) throw new ModelFormatException(path, $"truncated activation trace: {what} missing", offset: at);
            int v = BinaryPrimitives.ReadInt32LittleEndian(data.AsSpan(at));
            if (v < min || v > max) throw new ModelFormatException(path, $"{what} {v} is outside [{min}, {max}]", offset: at);
            at += 4;
            return v;
        }
        int layers = Int("layer count", 1, 1 << 16), neurons = Int("neuron count", 1, 1 << 24), count = Int("entry count", 0, int.MaxValue);
        var sequence = new int[Int("sequence length", 0, 1 << 24)];
        for (int i = 0; i < sequence.Length; i++) sequence[i] = Int("token id", 0, int.MaxValue);
        var thresholds = new float[Int("threshold count", 0, layers)];
        for (int i = 0; i < thresholds.Length; i++) thresholds[i] = BitConverter.Int32BitsToSingle(Int("threshold", int.MinValue, int.MaxValue));
        var sets = new Dictionary<(int, int), TraceEntry>(count);
        for (int e = 0; e < count; e++)
        {
            long entryAt = at;
            int p = Int("position", 0, 1 << 24), l = Int("layer", 0, layers - 1), n = Int("active count", 0, neurons);
            var ids = new int[n];
            for (int i = 0; i < n; i++)
            {
                ids[i] = Int("neuron id", 0, neurons - 1);
                if (i > 0 && ids[i] <= ids[i - 1]) throw new ModelFormatException(path, $"position {p} layer {l}: neuron ids are not ascending", offset: at - 4);
            }
            var near = new int[Int("near count", 0, neurons - n)];
            for (int i = 0; i < near.Length; i++) near[i] = Int("near neuron id", 0, neurons - 1);
            if (!sets.TryAdd((p, l), new TraceEntry(ids, near))) throw new ModelFormatException(path, $"position {p} layer {l} is recorded twice", offset: entryAt);
        }
        if (at != body.Length) throw new ModelFormatException(path, $"{body.Length - at} bytes after the last entry", offset: at);
        return new ActivationTrace(layers, neurons, sequence, thresholds, sets);
    }
}

/// <summary>One (position, layer): the exact active set (ascending) and inactive neurons nearest the threshold, nearest first.</summary>
internal readonly record struct TraceEntry(int[] Active, int[] Near);

/// <summary>Collects exact active sets as a predictor names them (the bench records its trace with the oracle through this).</summary>
internal sealed class TraceRecorder
{
    private readonly Dictionary<(int, int), TraceEntry> _sets = new();
    private readonly Lock _lock = new();

    public void Record(long position, int layer, int[] ids, int[] near)
    {
        lock (_lock) _sets[(checked((int)position), layer)] = new TraceEntry(ids.ToArray(), near);
    }

    public int Count
    {
        get
        {
            lock (_lock) return _sets.Count;
        }
    }

    public ActivationTrace ToTrace(int layers, int neurons, int[] sequence, float[]? thresholds)
    {
        lock (_lock) return new ActivationTrace(layers, neurons, sequence, thresholds ?? [], new Dictionary<(int, int), TraceEntry>(_sets));
    }
}

/// <summary>Names the sets its inner predictor names and records them by position.</summary>
internal sealed class RecordingPredictor(IActivePredictor inner, TraceRecorder recorder) : IActivePredictor
{
    public int Layers => inner.Layers;

    public int[] Active(int layer, float[] ffnInput) =>
        throw new InvalidOperationException("a recording predictor needs the position (Active(layer, input, position))");

    public int[] Active(int layer, float[] ffnInput, long position)
    {
        var set = inner.Active(layer, ffnInput, position);
        // The near-threshold neurons the trace-driven predictor draws its false positives from: four times the set, at least 64.
        recorder.Record(position, layer, set, inner is OraclePredictor exact ? exact.Near(Math.Max(64, 4 * set.Length)) : []);
        return set;
    }
}

/// <summary>The degradation a trace-driven predictor applies: what a trained predictor would reach.</summary>
/// <param name="Recall">Share of each exact set kept, in (0, 1].</param>
/// <param name="OverSelection">Predicted neurons over exact ones (as `flashlm calibrate` reports it), at least <paramref name="Recall"/>.</param>
/// <param name="Rank">The rank-r low-rank predictor whose compute and memory are paid in full.</param>
/// <param name="Seed">Seeds which neurons are dropped and added, and the stand-in predictor's weights.</param>
internal sealed record TraceDegradation(double Recall, double OverSelection, int Rank, ulong Seed)
{
    public string Describe() => Of(Recall, OverSelection, Rank);

    /// <summary>The plain label every table, JSON and plot uses for trace-driven selection.</summary>
    public static string Of(double recall, double overSelection, int rank) =>
        string.Create(System.Globalization.CultureInfo.InvariantCulture, $"trace-driven selection at recall {recall:0.###}, over-selection {overSelection:0.##}, rank-{rank} predictor cost");
}

/// <summary>
/// Trace-driven selection: replays an <see cref="ActivationTrace"/>, each exact set degraded to a stated recall and
/// over-selection, while paying a rank-r low-rank predictor's full cost (its F32 weights held, counted in the budget, and its
/// two matrix-vector products run on every call, timed as the predictor's). A measuring instrument for synthetic models,
/// not a deployable predictor: the sets come from the trace, by position.
/// </summary>
/// <remarks>
/// Degradation, per (position, layer), deterministic in the seed: a uniformly drawn share <c>Recall</c> of the exact set is
/// kept (the false negatives are the rest); then neurons outside the exact set are added until the set is
/// <c>OverSelection</c> times the exact set's size. A predictor that approximates the score errs mostly on neurons near the
/// threshold, so the added ones are drawn without replacement from the recorded near-threshold list (the i-th nearest with
/// weight 1 / (1 + i / n), n the exact set's size: the nearest are likeliest, with a long tail); beyond that list, from the
/// other inactive neurons in proportion to how often each is active over the trace (plus a floor).
/// The sets are degraded once, when the predictor is built, so replay costs a lookup.
/// </remarks>
internal sealed class TracePredictor : IActivePredictor
{
    private readonly string _file;
    private readonly int[]?[][] _sets;          // [position][layer]
    private readonly LowRankPredictor _standIn; // random weights of the stated rank: only its cost matters
    private readonly int[] _buffer;

    public int Layers { get; }

    /// <summary>Share of exact neurons kept, over the whole trace.</summary>
    public double AchievedRecall { get; }

    /// <summary>Predicted neurons over exact neurons, over the whole trace.</summary>
    public double AchievedOverSelection { get; }

    public TraceDegradation Degradation { get; }

    /// <summary>DRAM held: the stand-in predictor's weights and the degraded sets.</summary>
    public long Bytes { get; }

    public TracePredictor(ActivationTrace trace, string file, TraceDegradation d, int dim)
    {
        if (!(d.Recall > 0 && d.Recall <= 1)) throw new ArgumentOutOfRangeException(nameof(d), $"recall {d.Recall} is outside (0, 1]");
        if (!(d.OverSelection >= d.Recall)) throw new ArgumentOutOfRangeException(nameof(d), $"over-selection {d.OverSelection} is below the recall {d.Recall}");
        if (d.Rank < 1) throw new ArgumentOutOfRangeException(nameof(d), $"rank {d.Rank} is below 1");
        _file = file;
        Degradation = d;
        Layers = trace.Layers;
        int neurons = trace.Neurons;
        // How often each neuron is active over the trace, per layer: the weights of the false positives.
        var frequency = new double[Layers][];
        var positionsSeen = new int[Layers];
        for (int l = 0; l < Layers; l++) frequency[l] = new double[neurons];
        foreach (var (_, l, e) in trace.Entries())
        {
            positionsSeen[l]++;
            foreach (var id in e.Active) frequency[l][id]++;
        }
        _sets = new int[]?[trace.Positions][];
        long kept = 0, predicted = 0, truth = 0, setBytes = 0;
        var mark = new bool[neurons];
        var keys = new double[neurons];
        var order = new int[neurons];
        for (int p = 0; p < trace.Positions; p++)
        {
            _sets[p] = new int[]?[Layers];
            for (int l = 0; l < Layers; l++)
            {
                if (trace.At(p, l) is not { } entry) continue;
                var exact = entry.Active;
                var rng = new SplitMix(d.Seed ^ ((ulong)p * 0x9E3779B97F4A7C15UL) ^ ((ulong)l * 0xC2B2AE3D27D4EB4FUL));
                int n = exact.Length;
                int keep = (int)Math.Round(d.Recall * n);
                int extra = Math.Max(0, (int)Math.Round(d.OverSelection * n) - keep);
                extra = Math.Min(extra, neurons - n);
                // Keep a uniform sample of the exact set (partial Fisher-Yates).
                var shuffled = exact.ToArray();
                for (int i = 0; i < keep; i++)
                {
                    int j = i + (int)(rng.Next() % (ulong)(n - i));
                    (shuffled[i], shuffled[j]) = (shuffled[j], shuffled[i]);
                }
                var set = new List<int>(keep + extra);
                set.AddRange(shuffled.AsSpan(0, keep));
                // Weighted sampling without replacement (Efraimidis-Spirakis): the smallest -ln(u)/w win.
                var near = entry.Near;
                int fromNear = Math.Min(extra, near.Length);
                if (fromNear > 0)
                {
                    for (int i = 0; i < near.Length; i++)
                    {
                        keys[i] = -Math.Log(rng.NextDouble()) * (1 + i / (double)Math.Max(1, n));
                        order[i] = near[i];
                    }
                    Array.Sort(keys, order, 0, near.Length);
                    set.AddRange(order.AsSpan(0, fromNear));
                }
                if (extra > fromNear)
                {
                    Array.Clear(mark);
                    foreach (var id in exact) mark[id] = true;
                    foreach (var id in set) mark[id] = true;
                    double floor = 0.5 / Math.Max(1, positionsSeen[l]);
                    int m = 0;
                    for (int i = 0; i < neurons; i++)
                    {
                        if (mark[i]) continue;
                        double w = frequency[l][i] / Math.Max(1, positionsSeen[l]) + floor;
                        keys[m] = -Math.Log(rng.NextDouble()) / w;
                        order[m++] = i;
                    }
                    Array.Sort(keys, order, 0, m);
                    set.AddRange(order.AsSpan(0, Math.Min(extra - fromNear, m)));
                }
                set.Sort();
                var ids = set.ToArray();
                _sets[p][l] = ids;
                kept += keep;
                predicted += ids.Length;
                truth += n;
                setBytes += 4L * ids.Length + 24;
            }
        }
        AchievedRecall = truth == 0 ? 1 : kept / (double)truth;
        AchievedOverSelection = truth == 0 ? 1 : predicted / (double)truth;
        _standIn = StandIn(d, dim, neurons, Layers);
        _buffer = new int[neurons];
        Bytes = _standIn.Bytes + setBytes + 8L * Layers * _sets.Length;
    }

    /// <summary>A rank-r predictor of the model's shape with seeded random weights: the cost a trained one has, without its skill.</summary>
    private static LowRankPredictor StandIn(TraceDegradation d, int dim, int neurons, int layers)
    {
        var rng = new SplitMix(d.Seed * 31 + 7);
        float[] Random(int n, float scale)
        {
            var a = new float[n];
            for (int i = 0; i < n; i++) a[i] = (float)((rng.NextDouble() * 2 - 1) * scale);
            return a;
        }
        var layerWeights = Enumerable.Range(0, layers).Select(_ => new LowRankLayer(d.Rank, Random(d.Rank * dim, 1f / MathF.Sqrt(dim)),
            Random(neurons * d.Rank, 1f / MathF.Sqrt(d.Rank)), new float[neurons], 0.5f, 0f)).ToArray();
        return new LowRankPredictor(PredictorKind.SameLayer, PredictorHead.SiluMagnitude, dim, neurons, layerWeights);
    }

    public int[] Active(int layer, float[] ffnInput) =>
        throw new InvalidOperationException("trace-driven selection replays by position (Active(layer, input, position))");

    public int[] Active(int layer, float[] ffnInput, long position)
    {
        // The cost a trained predictor would have: both products and the head over every neuron (the answer is not used).
        _standIn.Active(layer, ffnInput, _buffer);
        if (position < 0 || position >= _sets.Length || _sets[position][layer] is not { } set)
            throw new InvalidOperationException(
                $"{_file}: the activation trace has no entry for position {position}, layer {layer} (it covers positions 0-{_sets.Length - 1}): " +
                "it was recorded along another token sequence; record it again for this one");
        return set;
    }

    /// <summary>A trace-driven predictor built on first use only.</summary>
    public sealed class Lazy(Func<TracePredictor> build)
    {
        private TracePredictor? _built;

        public TracePredictor Built() => _built ??= build();
    }

    /// <summary>A small, fast, seeded generator (SplitMix64).</summary>
    private struct SplitMix(ulong seed)
    {
        private ulong _state = seed;

        public ulong Next()
        {
            ulong z = _state += 0x9E3779B97F4A7C15UL;
            z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
            z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
            return z ^ (z >> 31);
        }

        /// <summary>In (0, 1].</summary>
        public double NextDouble() => ((Next() >> 11) + 1) * (1.0 / (1UL << 53));
    }
}
