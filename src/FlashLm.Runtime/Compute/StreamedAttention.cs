using FlashLm.Formats;
using FlashLm.Formats.FlashLayout;
using FlashLm.Models;
using FlashLm.Runtime.Io;

namespace FlashLm.Runtime.Compute;

/// <summary>
/// The naive baseline's attention (flashlm.stream-attention = on): instead of keeping every block's q, k, v and
/// output matrices in DRAM, the model holds one layer's worth and <see cref="Load"/> reads the next layer's from
/// dram.bin (O_DIRECT, large reads, several in flight) just before its attention runs, every token. Together with
/// the all-neurons predictor this is "everything read from flash for every token". Not meant for real use: it
/// exists so benchmarks can show what the DRAM-resident attention buys.
/// </summary>
internal sealed class StreamedAttention : IDisposable
{
    private static readonly string[] Parts = [TensorNames.AttnQ, TensorNames.AttnK, TensorNames.AttnV, TensorNames.AttnOutput];

    private readonly FlashLayoutModel _source;
    private readonly DirectFile _file;
    private readonly Dictionary<string, Matrix> _slotOf = new(StringComparer.Ordinal); // every layer's name -> its part's slot
    private readonly Matrix[] _slots;
    private readonly AlignedBuffer[] _staging;
    private readonly int _chunk;
    private readonly (Range[] Ranges, (int Part, long Start)[] Reads)[] _plans; // per layer: each part's span and the reads covering it

    /// <summary>One part's bytes in dram.bin and the 4096-aligned span read for it.</summary>
    private readonly record struct Range(long Offset, long Length, long Start, long End);

    /// <param name="chunk">Bytes per read (a multiple of 4096).</param>
    /// <param name="parallel">Reads in flight (one staging buffer of <paramref name="chunk"/> bytes each).</param>
    public StreamedAttention(FlashLayoutModel source, int chunk, int parallel, bool directIo)
    {
        if (chunk <= 0 || chunk % AlignedBuffer.Alignment != 0) throw new ArgumentException($"chunk {chunk} is not a positive multiple of {AlignedBuffer.Alignment}");
        _source = source;
        _chunk = chunk;
        _slots = new Matrix[Parts.Length];
        for (int p = 0; p < Parts.Length; p++)
        {
            var first = Info(0, Parts[p]);
            for (int l = 0; l < source.Config.Layers; l++)
            {
                var t = Info(l, Parts[p]);
                if (t.DType != first.DType || t.Rows != first.Rows || t.Cols != first.Cols)
                    throw new ModelFormatException(source.DramPath, $"tensor {t.Name} is {t.DType} {t.Rows} x {t.Cols}, layer 0's is {first.DType} {first.Rows} x {first.Cols}; streamed attention needs one shape per part", t.Name, t.Offset);
            }
            int rows = checked((int)first.Rows), cols = checked((int)first.Cols);
            _slots[p] = first.DType switch
            {
                DType.F32 => new Matrix(rows, cols, new float[first.Elements], null),
                DType.F16 => new Matrix(rows, cols, null, new Half[first.Elements]),
                // Quantized layouts keep attention in its source type: the slot holds the stored blocks.
                var q when DTypeInfo.IsQuantized(q) => new Matrix(rows, cols, q, new byte[first.ByteLength]),
                _ => throw new ModelFormatException(source.DramPath, $"tensor {first.Name} is {first.DType}; streamed attention reads F32, F16 or quantized blocks", first.Name, first.Offset),
            };
            for (int l = 0; l < source.Config.Layers; l++) _slotOf[TensorNames.Block(l, Parts[p])] = _slots[p];
        }
        _plans = new (Range[], (int, long)[])[source.Config.Layers];
        for (int l = 0; l < _plans.Length; l++)
        {
            var ranges = new Range[Parts.Length];
            var reads = new List<(int, long)>();
            for (int p = 0; p < Parts.Length; p++)
            {
                var t = Info(l, Parts[p]);
                ranges[p] = new Range(t.Offset, t.ByteLength, AlignedBuffer.AlignDown(t.Offset), AlignedBuffer.AlignUp(t.Offset + t.ByteLength));
                for (long s = ranges[p].Start; s < ranges[p].End; s += chunk) reads.Add((p, s));
            }
            _plans[l] = (ranges, reads.ToArray());
        }
        _file = new DirectFile(source.DramPath, directIo);
        _staging = new AlignedBuffer[Math.Max(1, parallel)];
        for (int i = 0; i < _staging.Length; i++) _staging[i] = new AlignedBuffer(chunk);
    }

    private TensorInfo Info(int layer, string part)
    {
        var name = TensorNames.Block(layer, part);
        return _source.Tensors.TryGetValue(name, out var t) ? t : throw new ModelFormatException(_source.DramPath, $"tensor {name} is missing", name);
    }

    /// <summary>Bytes of attention matrices that streaming keeps out of DRAM (every layer's but one).</summary>
    public static long NonResidentBytes(FlashLayoutModel source) =>
        Enumerable.Range(1, Math.Max(0, source.Config.Layers - 1))
            .SelectMany(l => Parts.Select(p => TensorNames.Block(l, p)))
            .Sum(n => source.Tensors.TryGetValue(n, out var t) ? t.ByteLength : 0);

    /// <summary>For <see cref="Transformers.Create"/>: every layer's attention matrices are the shared slots.</summary>
    public Matrix Matrices(ModelSource source, string name) => _slotOf.TryGetValue(name, out var m) ? m : Matrix.Load(source, name);

    /// <summary>Bytes of one layer's attention matrices (the slots).</summary>
    public long SlotBytes => _slots.Sum(m => m.Bytes);

    /// <summary>DRAM this holds: the slots and the staging buffers.</summary>
    public long Bytes => SlotBytes + (long)_staging.Length * _chunk;

    /// <summary>Reads layer <paramref name="layer"/>'s attention matrices into the slots; returns (bytes read, reads).</summary>
    public (long Bytes, int Reads) Load(int layer)
    {
        var (ranges, work) = _plans[layer];
        long bytes = 0;
        int next = -1;
        var workers = new Task[Math.Min(_staging.Length, work.Length)];
        for (int w = 0; w < workers.Length; w++)
        {
            var buffer = _staging[w];
            workers[w] = Task.Factory.StartNew(() =>
            {
                int i;
                while ((i = Interlocked.Increment(ref next)) < work.Length)
                {
                    var (p, s) = work[i];
                    var r = ranges[p];
                    int length = (int)Math.Min(_chunk, r.End - s);
                    unsafe { _file.Read(s, buffer.Pointer, length); }
                    Interlocked.Add(ref bytes, length);
                    long from = Math.Max(s, r.Offset), to = Math.Min(s + length, r.Offset + r.Length);
                    if (to > from) buffer.Span(from - s, (int)(to - from)).CopyTo(SlotBytesOf(p).Slice((int)(from - r.Offset)));
                }
            }, CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);
        }
        Task.WaitAll(workers);
        return (bytes, work.Length);
    }

    private Span<byte> SlotBytesOf(int part) => _slots[part].Storage;

    public void Dispose()
    {
        _file.Dispose();
        foreach (var b in _staging) b.Dispose();
    }
}
