using System.Buffers.Binary;
using System.IO.Hashing;
using Microsoft.Win32.SafeHandles;

namespace FlashLm.Formats.FlashLayout;

/// <summary>What <see cref="FlashLayoutWriter.Convert"/> wrote.</summary>
/// <param name="Quantized">True for a quantized layout (gate/up blocks copied, down re-quantized).</param>
/// <param name="Parts">The bundle parts, with their types and bytes.</param>
/// <param name="BundleBytes">Bytes of data per neuron.</param>
/// <param name="BundleStride">Bytes per neuron in ffn.bin (what a flash read and a cache row cost).</param>
/// <param name="DownError">Quantized layouts: the error the down re-quantization added; null otherwise.</param>
public sealed record ConvertReport(bool Quantized, IReadOnlyList<BundlePart> Parts, long BundleBytes, long BundleStride, DownRequantError? DownError);

/// <summary>
/// The error re-quantizing the down columns added, per layer: relative RMS error of the columns themselves
/// (RMS(requantized - source) / RMS(source) over all the layer's columns) and of the layer's FFN output
/// (down x h, for h = silu(gate x) * (up x), ReLU(up x) for OPT, with x a seeded standard-normal vector and gate/up as stored).
/// </summary>
public sealed record DownRequantError(DType DownType, IReadOnlyList<DType> SourceTypes, IReadOnlyList<double> ColumnRelRms, IReadOnlyList<double> OutputRelRms)
{
    public double MaxColumnRelRms => ColumnRelRms.Count == 0 ? 0 : ColumnRelRms.Max();
    public double MaxOutputRelRms => OutputRelRms.Count == 0 ? 0 : OutputRelRms.Max();

    /// <summary>One line for convert's output.</summary>
    public override string ToString() =>
        $"down re-quantized {string.Join("/", SourceTypes)} -> {DownType}: relative RMS error of the columns {MaxColumnRelRms:0.00e+0} " +
        $"(mean {ColumnRelRms.DefaultIfEmpty().Average():0.00e+0}), of a layer's FFN output {MaxOutputRelRms:0.00e+0} (mean {OutputRelRms.DefaultIfEmpty().Average():0.00e+0}), worst layer";
}

/// <summary>How a quantized source becomes a quantized layout: each part's type (gate/up as the source, down re-quantized).</summary>
internal sealed record QuantPlan(string[] PartNames, DType[] PartTypes, DType DownType, DType[] SourceDownTypes)
{
    /// <summary>
    /// The plan for <paramref name="source"/>, or null when its FFN gate/up (OPT: up) matrices are not quantized. Throws
    /// <see cref="ModelFormatException"/> when they are quantized but cannot be bundled (types that differ between layers,
    /// a quantized gate beside an unquantized up), <see cref="ArgumentException"/> for a down type that does not fit.
    /// </summary>
    public static QuantPlan? For(ModelSource source, DType? downType)
    {
        var c = source.Config;
        var names = FlashLayoutRules.PartNames(c.Architecture);
        var rowParts = names.Where(n => n != FlashLayoutRules.Down).ToArray();
        bool any = false;
        for (int l = 0; l < c.Layers && !any; l++)
            foreach (var part in rowParts)
                any |= DTypeInfo.IsQuantized(source.Info(FlashLayoutWriter.FfnTensor(c, l, part)).DType);
        if (!any) return null;
        if (source is FlashLayoutModel)
            throw new ModelFormatException(source.Path, "is already a quantized flash layout (its bundles are not the source's matrices); convert the model it was made from");

        // Every bundle has one geometry, so each row part has one type in every layer.
        var types = new DType[names.Length];
        for (int p = 0; p < names.Length; p++)
        {
            if (names[p] == FlashLayoutRules.Down) continue;
            var first = source.Info(FlashLayoutWriter.FfnTensor(c, 0, names[p]));
            for (int l = 0; l < c.Layers; l++)
            {
                var t = source.Info(FlashLayoutWriter.FfnTensor(c, l, names[p]));
                if (!DTypeInfo.IsQuantized(t.DType))
                    throw new ModelFormatException(t.FilePath,
                        $"is {t.DType} while other FFN matrices are quantized; a quantized flash layout needs every gate and up matrix quantized " +
                        "(or convert with --dtype F32 to store the model unquantized)", t.Name, t.Offset);
                if (t.DType != first.DType)
                    throw new ModelFormatException(t.FilePath,
                        $"is {t.DType} but {first.Name} is {first.DType}; every neuron bundle has one layout, so each of gate and up needs one type in all layers " +
                        "(or convert with --dtype F32 to store the model unquantized)", t.Name, t.Offset);
            }
            types[p] = first.DType;
        }
        var sourceDown = Enumerable.Range(0, c.Layers).Select(l => source.Info(FlashLayoutWriter.FfnTensor(c, l, FlashLayoutRules.Down)).DType).Distinct().ToArray();
        var down = downType ?? FlashLayoutRules.DefaultDownType(sourceDown, c.Dim);
        if (!FlashLayoutRules.DownTypes.Contains(down))
            throw new ArgumentException($"--down-type {down}: down columns can be re-quantized to {string.Join(", ", FlashLayoutRules.DownTypes)}", nameof(downType));
        int block = DTypeInfo.BlockElements(down);
        if (c.Dim % block != 0)
        {
            var downName = FlashLayoutWriter.FfnTensor(c, 0, FlashLayoutRules.Down);
            if (downType is null)
                throw new ModelFormatException(source.Path,
                    $"dim {c.Dim} is not a multiple of {block}: the down columns ({c.Dim} elements) cannot be re-quantized to {down} blocks, so this model " +
                    "cannot be stored quantized (convert with --dtype F32)", downName);
            throw new ArgumentException($"--down-type {down} needs dim to be a multiple of {block}; this model's dim is {c.Dim} (Q8_0 needs a multiple of 32)", nameof(downType));
        }
        types[Array.IndexOf(names, FlashLayoutRules.Down)] = down;
        return new QuantPlan(names, types, down, sourceDown);
    }
}

public static partial class FlashLayoutWriter
{
    /// <summary>Seed of the random FFN input the down re-quantization error is measured on (layer l uses seed + l).</summary>
    private const int ErrorSeed = 20261205;

    /// <summary>
    /// The quantized layout: DRAM tensors copied as stored; per neuron, gate and up rows copied as the source's blocks and the
    /// down column (down is [dim, hidden], so column i is strided in the source) dequantized, then re-quantized to the plan's type.
    /// </summary>
    private static ConvertReport WriteQuantized(ModelSource source, string dir, QuantPlan plan, IProgress<(long done, long total)>? progress)
    {
        var c = source.Config;
        int dim = c.Dim, hid = c.FfnNeurons; // a MoE layer's experts one after another (expert e's neuron i is e x hidden + i)
        var expected = TensorNames.Expected(c);
        var dramNames = DramNames(source);

        var names = plan.PartNames;
        var partBytes = plan.PartTypes.Select(t => DTypeInfo.ByteCount(t, dim)).ToArray();
        var offsets = FlashLayoutRules.PartOffsets(partBytes, quantized: true, out long bundleBytes);
        long stride = FlashLayoutRules.BundleStride(bundleBytes);
        long sectionBytes = hid * stride;
        int downPart = Array.IndexOf(names, FlashLayoutRules.Down);
        var downType = plan.DownType;

        long total = dramNames.Sum(n => source.Info(n).ByteLength) + c.Layers * sectionBytes;
        long done = 0;
        progress?.Report((0, total));

        using var raw = new RawReader();

        // dram.bin: every tensor's stored bytes.
        var dramTensors = new List<DramTensorDto>();
        using (var f = Create(dir, FlashLayoutRules.DramFile))
        {
            foreach (var name in dramNames)
            {
                Pad(f, FlashLayoutRules.DramAlignment);
                var t = source.Info(name);
                var bytes = raw.Read(t);
                dramTensors.Add(new DramTensorDto
                {
                    Name = name,
                    Dtype = t.DType.ToString(),
                    Shape = (long[])t.Shape.Clone(),
                    Offset = f.Position,
                    Bytes = bytes.Length,
                    Xxh64 = FlashLayoutRules.Hex(XxHash64.HashToUInt64(bytes)),
                });
                f.Write(bytes);
                done += bytes.Length;
                progress?.Report((done, total));
            }
            f.Flush(flushToDisk: true);
        }

        // ffn.bin
        var layers = new FfnLayerDto[c.Layers];
        var columnError = new double[c.Layers];
        var outputError = new double[c.Layers];
        int chunkNeurons = (int)Math.Clamp(ChunkBytes / stride, 1, hid);
        var buf = new byte[chunkNeurons * stride];
        var sums = new byte[BundleChecksums.FileBytes(c.Layers, hid)];
        var columns = new float[(long)chunkNeurons * dim]; // the chunk's down columns, column-major: [neuron][dim]
        var back = new float[dim];
        using (var f = Create(dir, FlashLayoutRules.FfnFile))
        {
            for (int l = 0; l < c.Layers; l++)
            {
                Pad(f, FlashLayoutRules.PageSize);
                long sectionStart = f.Position;
                // Row parts as stored ([hid] rows of partBytes), down widened to F32 ([dim, hid]).
                // (Experts: [experts, hidden, dim] is already [experts x hidden, dim]; down [experts, dim, hidden] is widened and
                // its rows interleaved into [dim, experts x hidden].)
                var rows = new byte[names.Length][];
                for (int p = 0; p < names.Length; p++)
                    if (p != downPart) rows[p] = raw.Read(source.Info(FfnTensor(c, l, names[p])));
                float[] down;
                if (c.MoE) down = StackExperts(source, l, FlashLayoutRules.Down).ToF32();
                else
                {
                    var downInfo = source.Info(FfnTensor(c, l, FlashLayoutRules.Down));
                    down = new float[(long)dim * hid];
                    Dequant.ToF32(downInfo.DType, raw.Read(downInfo), down);
                }
                // The activation the error of the layer's output is measured with.
                var h = Activation(source, l, names, plan.PartTypes, rows, dim, hid);
                double errColumns = 0, refColumns = 0;
                var yRef = new double[dim];
                var yQuant = new double[dim];

                var hash = new XxHash64();
                for (int first = 0; first < hid; first += chunkNeurons)
                {
                    int count = Math.Min(chunkNeurons, hid - first);
                    var chunk = buf.AsSpan(0, (int)(count * stride));
                    chunk.Clear(); // padding bytes are zero
                    // Transpose the chunk's down columns row by row (sequential reads of down).
                    for (int j = 0; j < dim; j++)
                    {
                        var row = down.AsSpan((int)((long)j * hid + first), count);
                        for (int k = 0; k < count; k++) columns[(long)k * dim + j] = row[k];
                    }
                    for (int k = 0; k < count; k++)
                    {
                        var bundle = chunk.Slice((int)(k * stride), (int)bundleBytes);
                        int n = first + k;
                        for (int p = 0; p < names.Length; p++)
                        {
                            var dest = bundle.Slice((int)offsets[p], (int)partBytes[p]);
                            if (p != downPart)
                            {
                                rows[p].AsSpan((int)(n * partBytes[p]), (int)partBytes[p]).CopyTo(dest);
                                continue;
                            }
                            var column = columns.AsSpan(k * dim, dim);
                            Dequant.Quantize(downType, column, dest);
                            Dequant.ToF32(downType, dest, back);
                            double a = h[n];
                            for (int j = 0; j < dim; j++)
                            {
                                double e = back[j] - column[j];
                                errColumns += e * e;
                                refColumns += (double)column[j] * column[j];
                                yRef[j] += a * column[j];
                                yQuant[j] += a * back[j];
                            }
                        }
                    }
                    hash.Append(chunk);
                    for (int k = 0; k < count; k++)
                    {
                        long at = f.Position + k * stride;
                        BinaryPrimitives.WriteUInt64LittleEndian(sums.AsSpan(((l * hid) + first + k) * sizeof(ulong)),
                            BundleChecksums.Compute(chunk.Slice((int)(k * stride), (int)bundleBytes), at));
                    }
                    f.Write(chunk);
                    done += chunk.Length;
                    progress?.Report((done, total));
                }
                columnError[l] = RelRms(errColumns, refColumns);
                double errOut = 0, refOut = 0;
                for (int j = 0; j < dim; j++)
                {
                    errOut += (yQuant[j] - yRef[j]) * (yQuant[j] - yRef[j]);
                    refOut += yRef[j] * yRef[j];
                }
                outputError[l] = RelRms(errOut, refOut);
                layers[l] = new FfnLayerDto
                {
                    Layer = l,
                    Offset = sectionStart,
                    Neurons = hid,
                    Bytes = sectionBytes,
                    Xxh64 = FlashLayoutRules.Hex(hash.GetCurrentHashAsUInt64()),
                };
            }
            Pad(f, FlashLayoutRules.PageSize);
            f.Flush(flushToDisk: true);
        }

        using (var f = Create(dir, BundleChecksums.DefaultFile))
        {
            f.Write(sums);
            f.Flush(flushToDisk: true);
        }

        var tokenizer = WriteTokenizer(source, dir);
        var parts = names.Select((n, p) => new BundlePart(n, offsets[p], dim, plan.PartTypes[p], partBytes[p])).ToArray();
        var error = new DownRequantError(downType, plan.SourceDownTypes, columnError, outputError);
        var ffn = new FfnDto
        {
            File = FlashLayoutRules.FfnFile,
            BundleParts = parts.Select(p => new BundlePartDto { Name = p.Name, Offset = p.Offset, Elements = p.Elements, Dtype = p.DType.ToString(), Bytes = p.Bytes }).ToArray(),
            BundleBytes = bundleBytes,
            BundleStride = stride,
            Layers = layers,
            BundleChecksums = new BundleChecksumsDto
            {
                File = BundleChecksums.DefaultFile,
                Algorithm = BundleChecksums.Algorithm,
                Bytes = sums.Length,
                Xxh64 = FlashLayoutRules.Hex(XxHash64.HashToUInt64(sums)),
            },
            DownRequant = new DownRequantDto
            {
                Dtype = downType.ToString(),
                SourceDtypes = plan.SourceDownTypes.Select(t => t.ToString()).ToArray(),
                ColumnRelRms = columnError.Select(e => Math.Round(e, 8)).ToArray(),
                OutputRelRms = outputError.Select(e => Math.Round(e, 8)).ToArray(),
            },
        };
        var manifest = Manifest(c, plan.PartTypes[0].ToString(), tokenizer, new DramDto { File = FlashLayoutRules.DramFile, Tensors = dramTensors.ToArray() }, ffn);
        ManifestJson.WriteAtomic(System.IO.Path.Combine(dir, FlashLayoutRules.ManifestFile), manifest);
        return new ConvertReport(true, parts, bundleBytes, stride, error);
    }

    private static double RelRms(double err, double reference) => reference > 0 ? Math.Sqrt(err / reference) : Math.Sqrt(err);

    /// <summary>
    /// The FFN activation of layer <paramref name="layer"/> for a seeded standard-normal input: silu(gate x) * (up x) (Llama) or
    /// ReLU(up x + bias) (OPT), each row dequantized from the stored blocks.
    /// </summary>
    private static double[] Activation(ModelSource source, int layer, string[] names, DType[] types, byte[][] rows, int dim, int hid)
    {
        var rng = new Random(ErrorSeed + layer);
        var x = new float[dim];
        for (int j = 0; j < dim; j++)
            x[j] = (float)(Math.Sqrt(-2 * Math.Log(1 - rng.NextDouble())) * Math.Cos(2 * Math.PI * rng.NextDouble()));
        int up = Array.IndexOf(names, FlashLayoutRules.Up), gate = Array.IndexOf(names, FlashLayoutRules.Gate);
        float[]? bias = gate < 0 && source.Tensors.ContainsKey(TensorNames.Block(layer, TensorNames.FfnUpBias))
            ? source.ReadF32(TensorNames.Block(layer, TensorNames.FfnUpBias))
            : null;
        var row = new float[dim];
        double Dot(int part, int n)
        {
            long bytes = DTypeInfo.ByteCount(types[part], dim);
            Dequant.ToF32(types[part], rows[part].AsSpan((int)(n * bytes), (int)bytes), row);
            double s = 0;
            for (int j = 0; j < dim; j++) s += (double)row[j] * x[j];
            return s;
        }
        var h = new double[hid];
        for (int n = 0; n < hid; n++)
        {
            double u = Dot(up, n);
            if (gate >= 0)
            {
                double g = Dot(gate, n);
                h[n] = g / (1 + Math.Exp(-g)) * u;
            }
            else h[n] = Math.Max(0, u + (bias?[n] ?? 0));
        }
        return h;
    }

    /// <summary>DRAM tensors: the expected non-FFN tensors in architecture order, then any extra tensors the source has.</summary>
    private static List<string> DramNames(ModelSource source)
    {
        var c = source.Config;
        var expected = TensorNames.Expected(c);
        var dramNames = expected.Where(e => !TensorNames.IsFfnMatrix(e.Name)).Select(e => e.Name).ToList();
        var known = new HashSet<string>(expected.Select(e => e.Name), StringComparer.Ordinal);
        foreach (var name in source.Tensors.Keys.Where(n => !known.Contains(n)).Order(StringComparer.Ordinal))
        {
            if (TensorNames.IsFfnMatrix(name))
                throw new ModelFormatException(source.Path, $"FFN tensor is not used by the {c.Architecture} architecture", name);
            dramNames.Add(name);
        }
        return dramNames;
    }

    /// <summary>
    /// Reads tensors' stored bytes straight from their files (the source's index gives file, offset and type, and was
    /// bounds-checked when the source was opened), so quantized blocks are copied as they are.
    /// </summary>
    private sealed class RawReader : IDisposable
    {
        private readonly Dictionary<string, SafeFileHandle> _handles = new(StringComparer.Ordinal);

        public byte[] Read(TensorInfo t)
        {
            if (!_handles.TryGetValue(t.FilePath, out var h))
                _handles[t.FilePath] = h = File.OpenHandle(t.FilePath, FileMode.Open, FileAccess.Read, FileShare.Read);
            var bytes = new byte[t.ByteLength];
            BinaryFile.ReadExactly(h, t.FilePath, t.Offset, bytes, t.Name);
            return bytes;
        }

        public void Dispose()
        {
            foreach (var h in _handles.Values) h.Dispose();
        }
    }
}
