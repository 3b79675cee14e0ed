using System.Buffers.Binary;
using System.IO.Hashing;
using System.Runtime.InteropServices;

namespace FlashLm.Formats.FlashLayout;

/// <summary>
/// Converts any <see cref="ModelSource"/> to the flash layout (manifest.json, dram.bin, ffn.bin, tokenizer files).
/// Streams: one DRAM tensor at a time, and one FFN layer (gate, up, down) at a time, so the model never has to fit in DRAM.
/// </summary>
public static partial class FlashLayoutWriter
{
    /// <summary>Bundles assembled per ffn.bin write (about this many bytes).</summary>
    private const int ChunkBytes = 4 << 20;

    private static readonly byte[] Zeros = new byte[FlashLayoutRules.PageSize];

    /// <summary>
    /// Writes <paramref name="source"/> as a flash-layout folder at <paramref name="outDir"/>.
    /// </summary>
    /// <param name="dtype">Storage type (F32 or F16). Default: a quantized layout when the source's FFN gate/up (OPT: up) matrices are
    /// quantized (see <see cref="FlashLayoutRules.QuantPartAlignment"/>: gate and up rows copied block for block, down columns
    /// re-quantized to <paramref name="downType"/>, DRAM tensors in their source types); else F16 if every source matrix is F16
    /// (vectors are always stored F32), else F32, so F32 and BF16 sources keep exactly the values <see cref="ModelSource.Read"/>
    /// gives the dense path. F32 to F16 rounds as the (Half) cast does. Asking for F32 or F16 dequantizes a quantized source.</param>
    /// <param name="progress">Bytes written so far and in total; the last report has done == total.</param>
    /// <param name="downType">Quantized layouts: the type the down columns are re-quantized to, one of
    /// <see cref="FlashLayoutRules.DownTypes"/> (default <see cref="FlashLayoutRules.DefaultDownType"/>: Q6_K for sources whose down matrices have at most 6.56 bits per weight, else Q8_0).</param>
    /// <returns>What was written, with the error the down re-quantization added (quantized layouts).</returns>
    /// <remarks>
    /// The folder is written under a temporary sibling name and renamed into place at the end, so an
    /// interrupted convert never leaves a folder that looks valid. An existing flash-layout folder (or an empty
    /// folder) is replaced; any other non-empty folder is refused with an <see cref="IOException"/>.
    /// </remarks>
    public static ConvertReport Convert(ModelSource source, string outDir, DType? dtype = null, IProgress<(long done, long total)>? progress = null,
        DType? downType = null)
    {
        ArgumentNullException.ThrowIfNull(source);
        ArgumentException.ThrowIfNullOrEmpty(outDir);
        if (!BitConverter.IsLittleEndian)
            throw new PlatformNotSupportedException("the flash layout is little-endian; this host is big-endian");
        if (dtype is { } asked && asked is not (DType.F32 or DType.F16))
            throw new ArgumentException($"--dtype: the flash layout stores F32 or F16 (or, by default, a quantized source's own types), not {asked}", nameof(dtype));
        var quant = dtype is null ? QuantPlan.For(source, downType) : null;
        if (quant is null && downType is not null)
            throw new ArgumentException(dtype is null
                ? $"--down-type applies to quantized layouts, and {source.Path}'s FFN matrices are not quantized"
                : $"--down-type applies to quantized layouts, not to --dtype {dtype}", nameof(downType));
        var target = dtype ?? (source.Tensors.Values.Where(t => t.Shape.Length > 1).All(t => t.DType == DType.F16) ? DType.F16 : DType.F32);

        outDir = System.IO.Path.TrimEndingDirectorySeparator(System.IO.Path.GetFullPath(outDir));
        CheckReplaceable(outDir);
        var tmp = $"{outDir}.tmp-{Guid.NewGuid():N}";
        Directory.CreateDirectory(tmp);
        try
        {
            var report = quant is null ? Write(source, tmp, target, progress) : WriteQuantized(source, tmp, quant, progress);
            Publish(tmp, outDir);
            return report;
        }
        catch
        {
            TryDelete(tmp);
            throw;
        }
    }

    /// <summary>
    /// Sets (or clears, with null) the per-layer activation thresholds in an existing layout's manifest; different thresholds
    /// drop the layout's activation frequencies (counted under the old ones).
    /// </summary>
    /// <param name="thresholds">One finite value per layer, or null.</param>
    public static void WriteThresholds(string folder, double[]? thresholds)
    {
        var path = System.IO.Path.Combine(folder, FlashLayoutRules.ManifestFile);
        var m = ManifestJson.Load(path);
        if (thresholds is not null)
        {
            if (thresholds.Length != m.Layers)
                throw new ArgumentException($"need one threshold per layer ({m.Layers}), got {thresholds.Length}", nameof(thresholds));
            if (thresholds.Any(t => !double.IsFinite(t)))
                throw new ArgumentException("thresholds must be finite", nameof(thresholds));
        }
        // Activation frequencies are counted under the thresholds: new thresholds make them stale, so they go too.
        bool same = m.Thresholds is null ? thresholds is null : thresholds is not null && m.Thresholds.AsSpan().SequenceEqual(thresholds);
        if (!same) m.Activity = null;
        m.Thresholds = thresholds is null ? null : (double[])thresholds.Clone();
        ManifestJson.WriteAtomic(path, m);
    }

    /// <summary>
    /// Stores <paramref name="predictor"/> in an existing layout: its weights in predictors-{kind}.bin and its
    /// per-layer entries in the manifest's "predictors" section, replacing any predictor of the same kind.
    /// </summary>
    public static void WritePredictors(string folder, StoredPredictor predictor) => LayoutPredictors.Write(folder, predictor);

    /// <summary>
    /// Stores per-neuron activation frequencies (from calibration) in an existing layout: the values in activity.bin, their
    /// count and checksum in the manifest's "activity" entry, replacing any earlier ones.
    /// </summary>
    public static void WriteActivity(string folder, ActivityFrequencies activity) => LayoutActivity.Write(folder, activity);

    private static void CheckReplaceable(string outDir)
    {
        if (File.Exists(outDir))
            throw new IOException($"{outDir}: exists and is a file; refusing to overwrite it with a flash-layout folder");
        if (Directory.Exists(outDir) && Directory.EnumerateFileSystemEntries(outDir).Any() && !FlashLayoutModel.IsLayoutFolder(outDir))
            throw new IOException($"{outDir}: is a non-empty folder that is not a flash layout (no valid {FlashLayoutRules.ManifestFile}); refusing to overwrite it");
    }

    private static void Publish(string tmp, string outDir)
    {
        if (Directory.Exists(outDir))
        {
            CheckReplaceable(outDir);
            if (!Directory.EnumerateFileSystemEntries(outDir).Any())
            {
                Directory.Delete(outDir);
                Directory.Move(tmp, outDir);
                return;
            }
            var old = $"{outDir}.old-{Guid.NewGuid():N}";
            Directory.Move(outDir, old);
            Directory.Move(tmp, outDir);
            TryDelete(old);
            return;
        }
        Directory.Move(tmp, outDir);
    }

    private static void TryDelete(string dir)
    {
        try
        {
            if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true);
        }
        catch (IOException)
        {
            // Best effort: a leftover temp folder has no manifest and is never mistaken for a layout.
        }
        catch (UnauthorizedAccessException)
        {
        }
    }

    private static ConvertReport Write(ModelSource source, string dir, DType target, IProgress<(long done, long total)>? progress)
    {
        var c = source.Config;
        int es = FlashLayoutRules.ElementSize(target);
        var expected = TensorNames.Expected(c);
        var ffnShapes = expected.Where(e => TensorNames.IsFfnMatrix(e.Name)).ToDictionary(e => e.Name, e => e.Shape);

        // DRAM: the expected non-FFN tensors in architecture order, then any extra tensors the source has.
        var dramNames = expected.Where(e => !TensorNames.IsFfnMatrix(e.Name)).Select(e => e.Name).ToList();
        var known = new HashSet<string>(expected.Select(e => e.Name), StringComparer.Ordinal);
        foreach (var name in source.Tensors.Keys.Where(n => !known.Contains(n)).Order(StringComparer.Ordinal))
        {
            if (TensorNames.IsFfnMatrix(name))
                throw new ModelFormatException(source.Path, $"FFN tensor is not used by the {c.Architecture} architecture", name);
            dramNames.Add(name);
        }

        var partNames = FlashLayoutRules.PartNames(c.Architecture);
        long partBytes = (long)c.Dim * es;
        long bundleBytes = partNames.Length * partBytes;
        long stride = FlashLayoutRules.BundleStride(bundleBytes);
        int neurons = c.FfnNeurons;
        long sectionBytes = neurons * stride;

        // Vectors (norms, biases) stay F32 whatever the target: tiny, and exact.
        DType TypeOf(string name) => source.Info(name).Shape.Length == 1 ? DType.F32 : target;
        long total = dramNames.Sum(n => source.Info(n).Elements * FlashLayoutRules.ElementSize(TypeOf(n))) + c.Layers * sectionBytes;
        long done = 0;
        progress?.Report((0, total));

        // dram.bin
        var dramTensors = new List<DramTensorDto>();
        using (var f = Create(dir, FlashLayoutRules.DramFile))
        {
            foreach (var name in dramNames)
            {
                Pad(f, FlashLayoutRules.DramAlignment);
                var shape = source.Info(name).Shape;
                var type = TypeOf(name);
                var data = ToTarget(source.Read(name), type, source.Path, name, shape);
                var bytes = Bytes(data);
                dramTensors.Add(new DramTensorDto
                {
                    Name = name,
                    Dtype = type.ToString(),
                    Shape = (long[])shape.Clone(),
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

        // ffn.bin: per layer, a 4096-aligned section of hidden_dim bundles.
        var layers = new FfnLayerDto[c.Layers];
        int chunkNeurons = (int)Math.Clamp(ChunkBytes / stride, 1, neurons);
        var buf = new byte[chunkNeurons * stride];
        // One checksum per bundle (BundleChecksums), layer-major, written to ffn.sums after ffn.bin.
        var sums = new byte[BundleChecksums.FileBytes(c.Layers, neurons)];
        using (var f = Create(dir, FlashLayoutRules.FfnFile))
        {
            for (int l = 0; l < c.Layers; l++)
            {
                Pad(f, FlashLayoutRules.PageSize);
                long sectionStart = f.Position;
                // Source matrices of this layer in the target type: gate/up [hid, dim], down [dim, hid].
                var mats = new Array[partNames.Length];
                for (int p = 0; p < partNames.Length; p++)
                {
                    var name = TensorNames.Block(l, PartTensor(partNames[p]));
                    mats[p] = c.MoE
                        ? ToTarget(StackExperts(source, l, partNames[p]), target, source.Path, name, partNames[p] == FlashLayoutRules.Down ? [c.Dim, neurons] : [neurons, c.Dim])
                        : ToTarget(source.Read(name), target, source.Path, name, ffnShapes[name]);
                }
                var hash = new XxHash64();
                for (int first = 0; first < neurons; first += chunkNeurons)
                {
                    int count = Math.Min(chunkNeurons, neurons - first);
                    var chunk = buf.AsSpan(0, (int)(count * stride));
                    chunk.Clear(); // padding bytes are zero
                    for (int p = 0; p < partNames.Length; p++)
                    {
                        long partOffset = p * partBytes;
                        if (partNames[p] == FlashLayoutRules.Down)
                        {
                            if (target == DType.F32)
                                ScatterColumns<uint>(Bytes(mats[p]), chunk, c.Dim, neurons, first, count, stride, partOffset);
                            else
                                ScatterColumns<ushort>(Bytes(mats[p]), chunk, c.Dim, neurons, first, count, stride, partOffset);
                        }
                        else
                        {
                            var rows = Bytes(mats[p]);
                            for (int k = 0; k < count; k++)
                                rows.Slice((int)((first + k) * partBytes), (int)partBytes)
                                    .CopyTo(chunk.Slice((int)(k * stride + partOffset)));
                        }
                    }
                    hash.Append(chunk);
                    for (int k = 0; k < count; k++)
                    {
                        long at = f.Position + k * stride;
                        BinaryPrimitives.WriteUInt64LittleEndian(sums.AsSpan(((l * neurons) + first + k) * sizeof(ulong)),
                            BundleChecksums.Compute(chunk.Slice((int)(k * stride), (int)bundleBytes), at));
                    }
                    f.Write(chunk);
                    done += chunk.Length;
                    progress?.Report((done, total));
                }
                layers[l] = new FfnLayerDto
                {
                    Layer = l,
                    Offset = sectionStart,
                    Neurons = neurons,
                    Bytes = sectionBytes,
                    Xxh64 = FlashLayoutRules.Hex(hash.GetCurrentHashAsUInt64()),
                };
            }
            // Whole pages, so a page-rounded read of the last bundles never runs past the end of the file.
            Pad(f, FlashLayoutRules.PageSize);
            f.Flush(flushToDisk: true);
        }

        using (var f = Create(dir, BundleChecksums.DefaultFile))
        {
            f.Write(sums);
            f.Flush(flushToDisk: true);
        }

        var tokFiles = WriteTokenizer(source, dir);

        var ffn = new FfnDto
        {
            File = FlashLayoutRules.FfnFile,
            BundleParts = partNames.Select((n, p) => new BundlePartDto { Name = n, Offset = p * partBytes, Elements = c.Dim, Dtype = target.ToString(), Bytes = partBytes }).ToArray(),
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
        };
        var manifest = Manifest(c, target.ToString(), tokFiles, new DramDto { File = FlashLayoutRules.DramFile, Tensors = dramTensors.ToArray() }, ffn);
        // Written last: a folder without manifest.json is never taken for a layout.
        ManifestJson.WriteAtomic(System.IO.Path.Combine(dir, FlashLayoutRules.ManifestFile), manifest);
        return new ConvertReport(false, manifest.Ffn.BundleParts.Select(p => new BundlePart(p.Name, p.Offset, p.Elements, target, partBytes)).ToArray(),
            bundleBytes, stride, null);
    }

    /// <summary>Writes the tokenizer's exported files into the layout folder.</summary>
    private static TokenizerDto WriteTokenizer(ModelSource source, string dir)
    {
        var tokFiles = source.Tokenizer.Export();
        foreach (var (name, bytes) in tokFiles)
        {
            if (!FlashLayoutRules.IsPlainFileName(name) || name is FlashLayoutRules.ManifestFile or FlashLayoutRules.DramFile or FlashLayoutRules.FfnFile or BundleChecksums.DefaultFile
                || name.EndsWith(".tmp", StringComparison.Ordinal))
                throw new InvalidOperationException($"tokenizer kind '{source.Tokenizer.Kind}' exported a file named '{name}', which the flash layout cannot hold");
            File.WriteAllBytes(System.IO.Path.Combine(dir, name), bytes);
        }
        // The chat template travels beside the tokenizer (a server renders conversations with it).
        if (source.ChatTemplate is { } template) File.WriteAllText(System.IO.Path.Combine(dir, ModelSource.ChatTemplateFile), template, new System.Text.UTF8Encoding(false));
        return new TokenizerDto { Kind = source.Tokenizer.Kind, Files = tokFiles.Keys.Order(StringComparer.Ordinal).ToArray() };
    }

    /// <summary>A manifest of <paramref name="c"/>'s hyper-parameters with the given type, tokenizer, DRAM tensors and FFN (no thresholds yet).</summary>
    private static ManifestDto Manifest(ModelConfig c, string dtype, TokenizerDto tokenizer, DramDto dram, FfnDto ffn) => new()
    {
        Format = FlashLayoutRules.FormatName,
        Version = FlashLayoutRules.Version,
        Architecture = ArchitectureName(c),
        HeadDim = c.HeadDim > 0 ? c.HeadDim : null,
        Experts = c.MoE ? c.Experts : null,
        ExpertsUsed = c.MoE ? c.ExpertsUsed : null,
        Dim = c.Dim,
        HiddenDim = c.HiddenDim,
        Layers = c.Layers,
        Heads = c.Heads,
        KvHeads = c.KvHeads,
        VocabSize = c.VocabSize,
        ContextLength = c.ContextLength,
        NormEps = c.NormEps,
        RopeTheta = c.RopeTheta,
        TiedEmbeddings = c.TiedEmbeddings,
        PositionOffset = c.PositionOffset,
        FfnActivation = c.Activation == FlashLm.Formats.FfnActivation.Silu ? null : FfnActivations.Name(c.Activation),
        FfnActivationThreshold = c.Activation == FlashLm.Formats.FfnActivation.FatRelu ? c.ActivationThreshold : null,
        Dtype = dtype,
        Tokenizer = tokenizer,
        Dram = dram,
        Ffn = ffn,
        Thresholds = null,
    };

    /// <summary>
    /// A layer's experts as one dense FFN part of experts x hidden neurons (expert e's neuron i is neuron e x hidden + i): gate and
    /// up stack the experts' rows ([experts, hidden, dim] is already [experts x hidden, dim]); down puts expert e's columns at
    /// e x hidden ([experts, dim, hidden] to [dim, experts x hidden]: row r is every expert's row r in turn).
    /// </summary>
    internal static TensorData StackExperts(ModelSource source, int layer, string part)
    {
        var c = source.Config;
        var t = source.Read(FfnTensor(c, layer, part));
        int experts = c.Experts, hid = c.HiddenDim, dim = c.Dim, n = c.FfnNeurons;
        if (part != FlashLayoutRules.Down)
        {
            long[] rows = [n, dim];
            return t.F32 is { } f ? new TensorData(rows, f) : t.F16 is { } h ? new TensorData(rows, h) : new TensorData(rows, t.DType, t.Blocks!);
        }
        // Down: whole expert rows of hid elements (a whole number of blocks when quantized) move as byte runs.
        int rowBytes = checked((int)DTypeInfo.ByteCount(t.DType, hid));
        ReadOnlySpan<byte> from = t.F32 is { } f32 ? System.Runtime.InteropServices.MemoryMarshal.AsBytes(f32.AsSpan())
            : t.F16 is { } f16 ? System.Runtime.InteropServices.MemoryMarshal.AsBytes(f16.AsSpan()) : t.Blocks;
        var to = new byte[from.Length];
        for (int e = 0; e < experts; e++)
            for (int r = 0; r < dim; r++)
                from.Slice(((e * dim) + r) * rowBytes, rowBytes).CopyTo(to.AsSpan(((r * experts) + e) * rowBytes));
        long[] shape = [dim, n];
        if (DTypeInfo.IsQuantized(t.DType)) return new TensorData(shape, t.DType, to);
        if (t.DType == DType.F16) return new TensorData(shape, System.Runtime.InteropServices.MemoryMarshal.Cast<byte, Half>(to).ToArray());
        return new TensorData(shape, System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(to).ToArray());
    }

    /// <summary>The source tensor of a bundle part of layer <paramref name="layer"/>: ffn_gate / ffn_up / ffn_down, or a MoE model's experts tensors.</summary>
    internal static string FfnTensor(ModelConfig c, int layer, string part) => TensorNames.Block(layer, !c.MoE ? PartTensor(part)
        : part == FlashLayoutRules.Gate ? TensorNames.FfnGateExperts : part == FlashLayoutRules.Up ? TensorNames.FfnUpExperts : TensorNames.FfnDownExperts);

    internal static string ArchitectureName(ModelConfig c) => c.Architecture switch
    {
        Architecture.Llama => c.Variant == LlamaVariant.Qwen3 ? "qwen3" : "llama",
        Architecture.Opt => "opt",
        _ => throw new ArgumentOutOfRangeException(nameof(c)),
    };

    internal static string PartTensor(string part) => part switch
    {
        FlashLayoutRules.Gate => TensorNames.FfnGate,
        FlashLayoutRules.Up => TensorNames.FfnUp,
        FlashLayoutRules.Down => TensorNames.FfnDown,
        _ => throw new ArgumentOutOfRangeException(nameof(part)),
    };

    private static FileStream Create(string dir, string name) =>
        new(System.IO.Path.Combine(dir, name), FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 20);

    private static void Pad(FileStream f, int alignment)
    {
        long pad = FlashLayoutRules.AlignUp(f.Position, alignment) - f.Position;
        f.Write(Zeros, 0, (int)pad);
    }

    /// <summary>The tensor's values in the target type (F32: float[], F16: Half[]); widening F16 to F32 is exact.</summary>
    private static Array ToTarget(TensorData d, DType target, string file, string name, long[] shape)
    {
        if (!d.Shape.AsSpan().SequenceEqual(shape))
            throw new ModelFormatException(file, $"read shape {TensorNames.ShapeText(d.Shape)}, expected {TensorNames.ShapeText(shape)}", name);
        if (target == DType.F32) return d.ToF32();
        if (d.F16 is not null) return d.F16;
        var f = d.ToF32(); // F32, or quantized blocks dequantized
        var h = new Half[f.Length];
        for (int i = 0; i < f.Length; i++) h[i] = (Half)f[i];
        return h;
    }

    private static ReadOnlySpan<byte> Bytes(Array a) => a switch
    {
        float[] f => MemoryMarshal.AsBytes(f.AsSpan()),
        Half[] h => MemoryMarshal.AsBytes(h.AsSpan()),
        _ => throw new InvalidOperationException(),
    };

    /// <summary>
    /// Copies columns [first, first + count) of down ([dim, hid], row-major) into the down part of
    /// <paramref name="count"/> consecutive bundles: bundle k element j = down[j, first + k].
    /// </summary>
    private static void ScatterColumns<T>(ReadOnlySpan<byte> downBytes, Span<byte> chunk, int dim, int hid, int first, int count, long stride, long partOffset)
        where T : unmanaged
    {
        var down = MemoryMarshal.Cast<byte, T>(downBytes);
        var dst = MemoryMarshal.Cast<byte, T>(chunk);
        int es = System.Runtime.CompilerServices.Unsafe.SizeOf<T>();
        int strideElems = (int)(stride / es), partElems = (int)(partOffset / es);
        for (int j = 0; j < dim; j++)
        {
            var row = down.Slice(j * hid + first, count);
            int at = partElems + j;
            for (int k = 0; k < count; k++, at += strideElems) dst[at] = row[k];
        }
    }
}
