using System.IO.Hashing;
using System.Runtime.InteropServices;
using System.Text.Json.Nodes;

namespace FlashLm.Formats.FlashLayout;

/// <summary>
/// A flash-layout folder opened as a <see cref="ModelSource"/> (format "flash").
/// </summary>
/// <remarks>
/// Folder contents:
/// <list type="bullet">
/// <item>manifest.json: format "flashlm-layout", version 1, architecture and the <see cref="ModelConfig"/> fields
/// (snake_case), dtype (F32 or F16: the storage type of everything; or a quantized type: a quantized layout, see below),
/// tokenizer {kind, files}, dram {file, tensors: [{name, dtype, shape, offset, bytes, xxh64}]}, ffn {file, bundle_parts:
/// [{name, offset, elements, dtype, bytes}], bundle_bytes, bundle_stride, layers: [{layer, offset, neurons, bytes, xxh64}],
/// down_requant (quantized layouts: {dtype, source_dtypes, column_rel_rms, output_rel_rms}, informative)}, thresholds (null
/// or one value per layer). xxh64 values are XxHash64 (seed 0) as 16 lower-case hex digits. A part's dtype and bytes are
/// absent in layouts written before they existed (then the layout's dtype).</item>
/// <item>A quantized layout (dtype = its first part's quantized type): every DRAM tensor keeps its source type (raw blocks);
/// bundle parts are gate and up rows as the source's blocks and the down column re-quantized (Q8_0 by default), each at a
/// multiple of <see cref="FlashLayoutRules.QuantPartAlignment"/> bytes.</item>
/// <item>dram.bin: every non-FFN tensor (including OPT's FFN biases), each at a 64-byte-aligned offset.</item>
/// <item>ffn.bin: per layer a 4096-aligned section of hidden_dim neuron bundles (see <see cref="FfnLayout"/>).</item>
/// <item>ffn.sums: one checksum per bundle (see <see cref="BundleChecksums"/>), named by the manifest's ffn.bundle_checksums
/// {file, algorithm, bytes, xxh64}; absent in layouts written before it existed.</item>
/// <item>the tokenizer's exported files.</item>
/// </list>
/// <para>The FFN matrices also appear in <see cref="ModelSource.Tensors"/> (so <see cref="TensorNames.Expected"/> holds):
/// their <see cref="TensorInfo"/> points at ffn.bin with Offset = the layer's section start, but the data is NOT
/// stored there as a dense matrix; <see cref="Read"/> gathers it from the bundles. Use <see cref="Ffn"/> for flash reads.</para>
/// </remarks>
public sealed class FlashLayoutModel : ModelSource
{
    private readonly Dictionary<string, ulong> _dramHashes = new(StringComparer.Ordinal);
    private readonly Dictionary<string, (int Layer, int Part)> _ffnTensors = new(StringComparer.Ordinal);
    private readonly string _manifestPath;
    private readonly PredictorSetDto[]? _predictors;
    private readonly ActivityDto? _activity;
    private readonly (string Path, long Bytes, ulong Xxh64)? _bundleSums;
    private BundleChecksums? _loadedSums;
    // A layer window (LayerRange): the whole model's config and FFN layout, for the files stored for every layer.
    private readonly ModelConfig _wholeConfig = null!;
    private readonly FfnLayout _wholeFfn = null!;

    /// <summary>The model's layers this view holds (null: all of them). Layer i of this view is layer From + i of the model.</summary>
    public LayerRange? Window { get; }

    /// <summary>The whole model's layer count (<see cref="ModelSource.Config"/> counts the window's).</summary>
    public int ModelLayers => _wholeConfig.Layers;

    public override string Format => "flash";

    /// <summary>Storage type of every tensor (F32 or F16).</summary>
    public DType DType { get; }

    /// <summary>Where the FFN bundles are in ffn.bin.</summary>
    public FfnLayout Ffn { get; }

    /// <summary>Absolute path of dram.bin.</summary>
    public string DramPath { get; }

    /// <summary>Per-layer activation thresholds, or null when the layout has not been calibrated.</summary>
    public IReadOnlyList<double>? Thresholds { get; }

    /// <summary>
    /// Quantized layouts: the down columns' type, the source's down types and the error the re-quantization added, as measured
    /// at convert (for `inspect`); null for F32/F16 layouts or when the manifest does not record it.
    /// </summary>
    public DownRequantError? DownRequant { get; }

    /// <summary>
    /// True when the layout stores per-bundle checksums (ffn.sums), so flash reads can be checked as they land.
    /// Layouts converted before they existed have only per-section checksums, which the flash runtime refuses.
    /// </summary>
    public bool HasBundleChecksums => _bundleSums is not null;

    /// <summary>
    /// Loads the per-bundle checksums (8 bytes per neuron; the file's own XxHash64 is checked). Throws
    /// <see cref="ModelFormatException"/> telling the user to re-convert when the layout predates them.
    /// </summary>
    public BundleChecksums LoadBundleChecksums()
    {
        if (_loadedSums is not null) return _loadedSums;
        if (_bundleSums is not { } s)
            throw new ModelFormatException(Path,
                "this flash layout was written before per-bundle checksums (manifest.json has no ffn.bundle_checksums), so its flash reads cannot be verified; " +
                "re-convert it (flashlm convert SOURCE --out DIR) and re-run calibrate", "ffn.bundle_checksums");
        var sums = BundleChecksums.Load(_wholeFfn, s.Path, s.Bytes, s.Xxh64, _manifestPath);
        return _loadedSums = Window is { } w ? sums.Window(Ffn, w.From) : sums;
    }

    /// <summary>True when <paramref name="path"/> is a folder whose manifest.json says format "flashlm-layout" (a cheap check; opening validates).</summary>
    public static bool IsLayoutFolder(string path)
    {
        try
        {
            var manifest = System.IO.Path.Combine(path, FlashLayoutRules.ManifestFile);
            if (!Directory.Exists(path) || !File.Exists(manifest)) return false;
            return JsonNode.Parse(File.ReadAllBytes(manifest)) is JsonObject o
                && o["format"] is JsonValue v && v.TryGetValue<string>(out var s) && s == FlashLayoutRules.FormatName;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or System.Text.Json.JsonException or ArgumentException or InvalidOperationException)
        {
            return false;
        }
    }

    /// <summary>
    /// <see cref="IsLayoutFolder"/> and written by this version's converter (it has per-bundle checksums): false for a
    /// layout the flash runtime would refuse, so caches of converted models re-convert it instead.
    /// </summary>
    public static bool IsCurrentLayoutFolder(string path)
    {
        if (!IsLayoutFolder(path)) return false;
        try
        {
            return JsonNode.Parse(File.ReadAllBytes(System.IO.Path.Combine(path, FlashLayoutRules.ManifestFile)))?["ffn"]?["bundle_checksums"] is JsonObject;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or System.Text.Json.JsonException or InvalidOperationException)
        {
            return false;
        }
    }

    public FlashLayoutModel(string folder) : this(folder, null)
    {
    }

    /// <summary>
    /// Opens the layout as a model of the layers in <paramref name="window"/> only (a node of a pipeline across machines holds
    /// a range of layers): the view's config has <see cref="LayerRange.Count"/> layers, its tensors, FFN sections, checksums,
    /// thresholds, activity and predictors are those of the range, renumbered from 0. The embedding, the final norm and the
    /// classifier stay readable (the first and last nodes use them). The whole layout is still validated.
    /// </summary>
    public FlashLayoutModel(string folder, LayerRange? window) : base(System.IO.Path.GetFullPath(folder))
    {
        if (!Directory.Exists(Path)) throw new ModelFormatException(Path, "flash-layout folder not found");
        _manifestPath = System.IO.Path.Combine(Path, FlashLayoutRules.ManifestFile);
        var m = ManifestJson.Load(_manifestPath);
        _predictors = m.Predictors;
        _activity = m.Activity;

        void Require(bool ok, string key, string problem)
        {
            if (!ok) throw new ModelFormatException(_manifestPath, problem, key);
        }

        // Hyper-parameters.
        Architecture arch = m.Architecture switch
        {
            "llama" or "qwen3" => Architecture.Llama,
            "opt" => Architecture.Opt,
            _ => throw new ModelFormatException(_manifestPath, $"unknown architecture '{ModelFormatException.Printable(m.Architecture ?? "", 40)}' (expected llama, qwen3 or opt)", "architecture"),
        };
        Require(m.HeadDim is null || m.HeadDim > 0, "head_dim", $"head_dim must be positive, got {m.HeadDim}");
        Require(m.Dim > 0, "dim", $"dim must be positive, got {m.Dim}");
        Require(m.HiddenDim > 0, "hidden_dim", $"hidden_dim must be positive, got {m.HiddenDim}");
        Require(m.Layers > 0 && m.Layers <= 4096, "layers", $"layer count {m.Layers} is out of range");
        Require(float.IsFinite(m.NormEps) && m.NormEps > 0, "norm_eps", $"norm_eps must be positive, got {m.NormEps}");
        Require(float.IsFinite(m.RopeTheta) && m.RopeTheta > 0, "rope_theta", $"rope_theta must be positive, got {m.RopeTheta}");
        Require(m.PositionOffset >= 0 && m.PositionOffset <= 1 << 16, "position_offset", $"position_offset {m.PositionOffset} is out of range");
        var activation = m.FfnActivation is null ? FfnActivation.Silu : FfnActivations.Parse(m.FfnActivation)
            ?? throw new ModelFormatException(_manifestPath, $"unknown FFN activation '{ModelFormatException.Printable(m.FfnActivation, 40)}' (expected {FfnActivations.Known})", "ffn_activation");
        Require(m.FfnActivationThreshold is null || activation == FfnActivation.FatRelu, "ffn_activation_threshold", $"a threshold is given for activation {FfnActivations.Name(activation)} (only fatrelu has one)");
        Require(m.FfnActivationThreshold is not { } at || float.IsFinite(at), "ffn_activation_threshold", $"threshold {m.FfnActivationThreshold} is not finite");
        Config = new ModelConfig
        {
            Architecture = arch,
            Variant = m.Architecture == "qwen3" ? LlamaVariant.Qwen3 : LlamaVariant.Llama,
            HeadDim = m.HeadDim ?? 0,
            Experts = m.Experts ?? 0,
            ExpertsUsed = m.ExpertsUsed ?? 0,
            Dim = m.Dim,
            HiddenDim = m.HiddenDim,
            Layers = m.Layers,
            Heads = m.Heads,
            KvHeads = m.KvHeads,
            VocabSize = m.VocabSize,
            ContextLength = m.ContextLength,
            NormEps = m.NormEps,
            RopeTheta = m.RopeTheta,
            TiedEmbeddings = m.TiedEmbeddings,
            PositionOffset = m.PositionOffset,
            Activation = activation,
            ActivationThreshold = m.FfnActivationThreshold ?? 0f,
        };
        Config.Validate(_manifestPath);
        var c = Config;

        DType dtype;
        try
        {
            dtype = DTypeInfo.Parse(m.Dtype);
        }
        catch (ArgumentException)
        {
            throw new ModelFormatException(_manifestPath, $"unknown dtype '{ModelFormatException.Printable(m.Dtype, 40)}' (expected F32, F16 or a quantized type)", "dtype");
        }
        // A quantized layout (its dtype is the first part's quantized type) records every part's and tensor's own type.
        bool quantized = DTypeInfo.IsQuantized(dtype);
        Require(quantized || dtype is DType.F32 or DType.F16, "dtype", $"the flash layout stores F32, F16 or quantized bundles, not {dtype}");
        if (quantized)
            Require(m.Ffn.BundleParts.Length > 0 && m.Ffn.BundleParts[0].Dtype == m.Dtype, "dtype",
                $"dtype {m.Dtype} is quantized, so the first bundle part must record it as its dtype (it records {ModelFormatException.Printable(m.Ffn.BundleParts.FirstOrDefault()?.Dtype ?? "nothing", 40)})");
        DType = dtype;
        int es = quantized ? 0 : FlashLayoutRules.ElementSize(dtype);

        if (m.Thresholds is not null)
        {
            Require(m.Thresholds.Length == c.Layers, "thresholds", $"has {m.Thresholds.Length} values for {c.Layers} layers");
            for (int i = 0; i < m.Thresholds.Length; i++)
                Require(double.IsFinite(m.Thresholds[i]), $"thresholds[{i}]", $"threshold {m.Thresholds[i]} is not finite");
            Thresholds = Array.AsReadOnly((double[])m.Thresholds.Clone());
        }

        // Files named by the manifest are bare names inside this folder.
        string DataFile(string? name, string key)
        {
            Require(FlashLayoutRules.IsPlainFileName(name), key, $"'{ModelFormatException.Printable(name ?? "")}' is not a plain file name inside the layout folder");
            var p = System.IO.Path.Combine(Path, name!);
            if (!File.Exists(p)) throw new ModelFormatException(p, "file named by manifest.json is missing", key);
            return p;
        }
        DramPath = DataFile(m.Dram.File, "dram.file");
        var ffnPath = DataFile(m.Ffn.File, "ffn.file");
        Require(!string.Equals(DramPath, ffnPath, StringComparison.Ordinal), "ffn.file", "dram and ffn must be different files");
        long dramSize = new FileInfo(DramPath).Length, ffnSize = new FileInfo(ffnPath).Length;

        // DRAM tensors.
        var tensors = new Dictionary<string, TensorInfo>(StringComparer.Ordinal);
        var spans = new List<(long Start, long End, string Name)>();
        for (int i = 0; i < m.Dram.Tensors.Length; i++)
        {
            var t = m.Dram.Tensors[i];
            string key = $"dram.tensors[{i}]";
            Require(!string.IsNullOrEmpty(t.Name), key + ".name", "tensor name is empty");
            // Bounded before the checks below quote it (a corrupt manifest could make it megabytes long).
            Require(t.Name.Length <= 256, key + ".name", $"tensor name of {t.Name.Length} characters is implausibly long");
            Require(!TensorNames.IsFfnMatrix(t.Name), key + ".name", $"FFN matrix '{t.Name}' belongs in ffn.bin, not dram.bin");
            Require(!tensors.ContainsKey(t.Name), key + ".name", $"tensor '{t.Name}' is listed twice");
            DType tensorType;
            if (quantized)
            {
                // Quantized layouts keep every DRAM tensor in its source type.
                Require(TryParseType(t.Dtype, out tensorType), key + ".dtype", $"tensor '{t.Name}' has an unknown dtype '{ModelFormatException.Printable(t.Dtype ?? "", 40)}'");
            }
            else
            {
                // Vectors (norms, biases) are always F32; matrices use the layout's dtype.
                Require(t.Dtype == m.Dtype || (t.Shape.Length == 1 && t.Dtype == "F32"), key + ".dtype",
                    $"tensor '{t.Name}' has dtype '{t.Dtype}', the layout's dtype is {m.Dtype} (vectors may be F32)");
                tensorType = t.Dtype == "F32" ? DType.F32 : dtype;
            }
            Require(t.Shape.Length is >= 1 and <= 4 && t.Shape.All(d => d > 0 && d <= 1L << 32), key + ".shape",
                $"tensor '{t.Name}' has an invalid shape {TensorNames.ShapeText(t.Shape)}");
            long elements = 1;
            foreach (var d in t.Shape)
            {
                Require(elements <= (1L << 40) / d, key + ".shape", $"tensor '{t.Name}' is implausibly large");
                elements *= d;
            }
            Require(t.Offset >= 0, key + ".offset", $"tensor '{t.Name}' has a negative offset {t.Offset}");
            Require(t.Offset % FlashLayoutRules.DramAlignment == 0, key + ".offset",
                $"tensor '{t.Name}' offset {t.Offset} is not a multiple of {FlashLayoutRules.DramAlignment}");
            // Quantized rows are whole blocks: the row length (last dimension) is a multiple of the block.
            Require(t.Shape[^1] % DTypeInfo.BlockElements(tensorType) == 0, key + ".shape",
                $"tensor '{t.Name}' rows of {t.Shape[^1]} elements are not whole {tensorType} blocks of {DTypeInfo.BlockElements(tensorType)}");
            long needed = DTypeInfo.ByteCount(tensorType, elements);
            Require(t.Bytes == needed, key + ".bytes",
                $"tensor '{t.Name}' has bytes {t.Bytes}, but shape {TensorNames.ShapeText(t.Shape)} of {t.Dtype} needs {needed}");
            Require(FlashLayoutRules.TryParseHex(t.Xxh64, out var hash), key + ".xxh64", $"tensor '{t.Name}' xxh64 '{t.Xxh64}' is not 16 hex digits");
            if (t.Offset > dramSize - t.Bytes)
                throw new ModelFormatException(DramPath,
                    $"model is corrupted or incomplete: tensor data [{t.Offset}, {t.Offset + t.Bytes}) lies beyond the end of the file ({dramSize} bytes)",
                    t.Name, t.Offset);
            tensors[t.Name] = new TensorInfo(t.Name, tensorType, (long[])t.Shape.Clone(), DramPath, t.Offset);
            _dramHashes[t.Name] = hash;
            spans.Add((t.Offset, t.Offset + t.Bytes, t.Name));
        }
        spans.Sort((a, b) => a.Start.CompareTo(b.Start));
        for (int i = 1; i < spans.Count; i++)
            Require(spans[i].Start >= spans[i - 1].End, "dram.tensors", $"tensors '{spans[i - 1].Name}' and '{spans[i].Name}' overlap in dram.bin");
        foreach (var (name, shape) in TensorNames.Expected(c))
        {
            if (TensorNames.IsFfnMatrix(name)) continue;
            Require(tensors.TryGetValue(name, out var t), "dram.tensors", $"tensor '{name}' (shape {TensorNames.ShapeText(shape)}) is missing");
            Require(t!.Shape.AsSpan().SequenceEqual(shape), "dram.tensors",
                $"tensor '{name}' has shape {TensorNames.ShapeText(t.Shape)}, expected {TensorNames.ShapeText(shape)}");
        }

        // FFN bundles.
        var f = m.Ffn;
        var partNames = FlashLayoutRules.PartNames(arch);
        Require(f.BundleParts.Length == partNames.Length, "ffn.bundle_parts",
            $"has {f.BundleParts.Length} parts; {m.Architecture} bundles have {partNames.Length} ({string.Join(", ", partNames)})");
        var parts = new BundlePart[partNames.Length];
        var partTypes = new DType[partNames.Length];
        var partBytes = new long[partNames.Length];
        for (int p = 0; p < parts.Length; p++)
        {
            var bp = f.BundleParts[p];
            string key = $"ffn.bundle_parts[{p}]";
            Require(bp.Name == partNames[p], key + ".name", $"part {p} must be '{partNames[p]}', got '{ModelFormatException.Printable(bp.Name ?? "", 40)}'");
            Require(bp.Elements == c.Dim, key + ".elements", $"part '{bp.Name}' has {bp.Elements} elements, expected dim = {c.Dim}");
            // Layouts written before parts recorded their types are F32 or F16 throughout.
            var type = dtype;
            if (bp.Dtype is not null)
                Require(TryParseType(bp.Dtype, out type), key + ".dtype", $"part '{bp.Name}' has an unknown dtype '{ModelFormatException.Printable(bp.Dtype, 40)}'");
            if (quantized)
            {
                Require(bp.Dtype is not null && bp.Bytes is not null, key, $"part '{bp.Name}' of a quantized layout must record its dtype and bytes");
                Require(DTypeInfo.IsQuantized(type), key + ".dtype", $"part '{bp.Name}' is {type}; the parts of a quantized layout are quantized");
                Require(c.Dim % DTypeInfo.BlockElements(type) == 0, key + ".dtype",
                    $"part '{bp.Name}' of {type} needs dim to be a multiple of {DTypeInfo.BlockElements(type)}, dim is {c.Dim}");
            }
            else
            {
                Require(type == dtype, key + ".dtype", $"part '{bp.Name}' has dtype {type}, the layout's dtype is {dtype}");
            }
            partTypes[p] = type;
            partBytes[p] = DTypeInfo.ByteCount(type, c.Dim);
            if (bp.Bytes is { } b)
                Require(b == partBytes[p], key + ".bytes", $"part '{bp.Name}' has bytes {b}, but {c.Dim} elements of {type} are {partBytes[p]}");
        }
        // Parts are laid out in the fixed order by the fixed rule, so the offsets are fully determined.
        var offsets = FlashLayoutRules.PartOffsets(partBytes, quantized, out long bundleBytes);
        for (int p = 0; p < parts.Length; p++)
        {
            var bp = f.BundleParts[p];
            Require(bp.Offset == offsets[p], $"ffn.bundle_parts[{p}].offset", $"part '{bp.Name}' offset {bp.Offset}, expected {offsets[p]}");
            parts[p] = new BundlePart(bp.Name, bp.Offset, bp.Elements, partTypes[p], partBytes[p]);
        }
        Require(f.BundleBytes == bundleBytes, "ffn.bundle_bytes", quantized
            ? $"bundle_bytes {f.BundleBytes}, expected {bundleBytes} (parts {string.Join(" + ", partBytes)} bytes, each at a multiple of {FlashLayoutRules.QuantPartAlignment})"
            : $"bundle_bytes {f.BundleBytes}, expected {bundleBytes} ({partNames.Length} parts x {c.Dim} x {es} bytes)");
        Require(FlashLayoutRules.IsValidStride(bundleBytes, f.BundleStride), "ffn.bundle_stride",
            $"bundle_stride {f.BundleStride} must be at least bundle_bytes {bundleBytes} and either a multiple of {FlashLayoutRules.PageSize} or a power of two below it");
        Require(f.BundleStride <= 1L << 30, "ffn.bundle_stride", $"bundle_stride {f.BundleStride} is implausibly large");
        Require(f.Layers.Length == c.Layers, "ffn.layers", $"has {f.Layers.Length} sections for {c.Layers} layers");
        var layerOffsets = new long[c.Layers];
        var layerHashes = new ulong[c.Layers];
        long sectionBytes = (long)c.FfnNeurons * f.BundleStride;
        long previousEnd = 0;
        for (int l = 0; l < c.Layers; l++)
        {
            var s = f.Layers[l];
            string key = $"ffn.layers[{l}]";
            Require(s.Layer == l, key + ".layer", $"section {l} is labelled layer {s.Layer}");
            Require(s.Neurons == c.FfnNeurons, key + ".neurons", c.MoE
                ? $"layer {l} has {s.Neurons} neurons, expected experts x hidden_dim = {c.Experts} x {c.HiddenDim}"
                : $"layer {l} has {s.Neurons} neurons, expected hidden_dim = {c.HiddenDim}");
            Require(s.Offset >= 0, key + ".offset", $"layer {l} has a negative offset {s.Offset}");
            Require(s.Offset % FlashLayoutRules.PageSize == 0, key + ".offset", $"layer {l} offset {s.Offset} is not a multiple of {FlashLayoutRules.PageSize}");
            Require(s.Offset >= previousEnd, key + ".offset", $"layer {l} section at {s.Offset} overlaps the previous one (ends at {previousEnd})");
            Require(s.Bytes == sectionBytes, key + ".bytes", $"layer {l} has bytes {s.Bytes}, expected neurons x bundle_stride = {sectionBytes}");
            Require(FlashLayoutRules.TryParseHex(s.Xxh64, out var hash), key + ".xxh64", $"layer {l} xxh64 '{s.Xxh64}' is not 16 hex digits");
            if (s.Offset > ffnSize - s.Bytes)
                throw new ModelFormatException(ffnPath,
                    $"model is corrupted or incomplete: layer {l}'s section [{s.Offset}, {s.Offset + s.Bytes}) lies beyond the end of the file ({ffnSize} bytes)",
                    $"ffn layer {l}", s.Offset);
            layerOffsets[l] = s.Offset;
            layerHashes[l] = hash;
            previousEnd = s.Offset + s.Bytes;
        }
        Ffn = new FfnLayout(ffnPath, dtype, c.Dim, c.FfnNeurons, bundleBytes, f.BundleStride, parts, layerOffsets, layerHashes);
        // Informative only (nothing is computed from it): a record that does not parse is left out rather than refused.
        if (quantized && f.DownRequant is { } dr && TryParseType(dr.Dtype, out var drType))
        {
            var sourceTypes = new List<DType>();
            foreach (var st in dr.SourceDtypes ?? []) if (TryParseType(st, out var t)) sourceTypes.Add(t);
            DownRequant = new DownRequantError(drType, sourceTypes, dr.ColumnRelRms ?? [], dr.OutputRelRms ?? []);
        }

        // Per-bundle checksums: validated here, loaded on demand (LoadBundleChecksums); absent in older layouts.
        if (f.BundleChecksums is { } bc)
        {
            Require(bc.Algorithm == BundleChecksums.Algorithm, "ffn.bundle_checksums.algorithm",
                $"unknown checksum algorithm '{bc.Algorithm}'; this build reads '{BundleChecksums.Algorithm}'");
            Require(FlashLayoutRules.TryParseHex(bc.Xxh64, out var sumsHash), "ffn.bundle_checksums.xxh64", $"xxh64 '{bc.Xxh64}' is not 16 hex digits");
            var sumsPath = DataFile(bc.File, "ffn.bundle_checksums.file");
            Require(sumsPath != DramPath && sumsPath != ffnPath, "ffn.bundle_checksums.file", "the checksum file must not be dram.bin or ffn.bin");
            _bundleSums = (sumsPath, bc.Bytes, sumsHash);
        }

        // The FFN matrices in the tensor index: [out, in] shapes, pointing at their layer's section (whose
        // length covers the unpadded data, so the base bounds check holds); Read gathers them from the bundles.
        for (int l = 0; l < c.Layers; l++)
            for (int p = 0; p < partNames.Length; p++)
            {
                var name = FlashLayoutWriter.FfnTensor(c, l, partNames[p]);
                long[] shape = c.MoE
                    ? partNames[p] == FlashLayoutRules.Down ? [c.Experts, c.Dim, c.HiddenDim] : [c.Experts, c.HiddenDim, c.Dim]
                    : partNames[p] == FlashLayoutRules.Down ? [c.Dim, c.HiddenDim] : [c.HiddenDim, c.Dim];
                // The part's stored type (for down: of its stored columns); Read returns down as F32 when it is quantized.
                tensors[name] = new TensorInfo(name, partTypes[p], shape, ffnPath, layerOffsets[l]);
                _ffnTensors[name] = (l, p);
            }
        Tensors = tensors;
        ValidateTensors();

        // Tokenizer.
        Require(!string.IsNullOrEmpty(m.Tokenizer.Kind), "tokenizer.kind", "tokenizer kind is empty");
        for (int i = 0; i < m.Tokenizer.Files.Length; i++)
            DataFile(m.Tokenizer.Files[i], $"tokenizer.files[{i}]");
        Tokenizer = TokenizerStore.Open(m.Tokenizer.Kind, Path, c.VocabSize);
        ChatTemplate = ReadChatTemplateFile(Path);
        Require(Tokenizer.VocabSize == c.VocabSize, "tokenizer", $"tokenizer has {Tokenizer.VocabSize} tokens, the model {c.VocabSize}");

        _wholeConfig = c;
        _wholeFfn = Ffn;
        if (window is not { } w) return;
        if (w.From < 0 || w.To > c.Layers || w.Count <= 0)
            throw new ArgumentException($"layers {w} are outside the model's {c.Layers} layers (0-{c.Layers})");
        Window = w;
        // Renumber the range's block tensors from 0; drop the other layers' (they are another node's).
        var kept = new Dictionary<string, TensorInfo>(StringComparer.Ordinal);
        var hashes = new Dictionary<string, ulong>(StringComparer.Ordinal);
        var ffnKept = new Dictionary<string, (int Layer, int Part)>(StringComparer.Ordinal);
        foreach (var (name, info) in tensors)
        {
            string renamed = name;
            if (LayerRange.BlockOf(name, out int layer, out string rest))
            {
                if (!w.Contains(layer)) continue;
                renamed = TensorNames.Block(layer - w.From, rest);
            }
            kept[renamed] = info with { Name = renamed };
            if (_dramHashes.TryGetValue(name, out var h)) hashes[renamed] = h;
            if (_ffnTensors.TryGetValue(name, out var where)) ffnKept[renamed] = (where.Layer - w.From, where.Part);
        }
        _dramHashes.Clear();
        foreach (var (k, v) in hashes) _dramHashes[k] = v;
        _ffnTensors.Clear();
        foreach (var (k, v) in ffnKept) _ffnTensors[k] = v;
        Tensors = kept;
        Config = c with { Layers = w.Count };
        Ffn = new FfnLayout(ffnPath, dtype, c.Dim, c.FfnNeurons, bundleBytes, f.BundleStride, parts, layerOffsets[w.From..w.To], layerHashes[w.From..w.To]);
        if (Thresholds is not null) Thresholds = Array.AsReadOnly(Thresholds.Skip(w.From).Take(w.Count).ToArray());
    }

    /// <summary>
    /// Reads a tensor as stored. DRAM tensors are checked against their xxh64; FFN matrices are gathered from the bundles
    /// into the dense [out, in] matrix the source had (each bundle checked against ffn.sums, or the layer section's xxh64
    /// in layouts that predate it). Quantized gate and up rows come back as the source's blocks; a quantized down part
    /// (columns re-quantized at convert) comes back dequantized to F32.
    /// </summary>
    public override TensorData Read(string name)
    {
        var t = Info(name);
        if (_ffnTensors.TryGetValue(name, out var ffn)) return ReadFfn(t, ffn.Layer, ffn.Part, verify: true);
        if (t.DType is DType.F32 or DType.F16)
        {
            var data = Allocate(t);
            var bytes = Bytes(data);
            ReadInto(t, bytes);
            CheckDramHash(t, XxHash64.HashToUInt64(bytes));
            return data is float[] f ? new TensorData(t.Shape, f) : new TensorData(t.Shape, (Half[])data);
        }
        var raw = new byte[t.ByteLength];
        ReadInto(t, raw);
        CheckDramHash(t, XxHash64.HashToUInt64(raw));
        return Decode(t.DType, t.Shape, raw);
    }

    /// <summary>Stored bytes of another type than F32/F16 as a tensor for compute: quantized blocks as they are, BF16 widened.</summary>
    private static TensorData Decode(DType type, long[] shape, byte[] raw)
    {
        if (DTypeInfo.IsQuantized(type)) return new TensorData(shape, type, raw);
        var data = new float[TensorShape.Elements(shape)];
        Dequant.ToF32(type, raw, data);
        return new TensorData(shape, data);
    }

    private static bool TryParseType(string? name, out DType type)
    {
        type = default;
        if (name is null) return false;
        try
        {
            type = DTypeInfo.Parse(name);
            return true;
        }
        catch (ArgumentException)
        {
            return false;
        }
    }

    /// <summary>The predictor kinds stored in this layout ("same-layer", "lookahead").</summary>
    public IReadOnlyList<string> PredictorKinds => _predictors?.Select(p => p.Kind).ToArray() ?? [];

    /// <summary>
    /// Reads and validates the stored predictor of <paramref name="kind"/>, or returns null when the layout has none.
    /// Throws <see cref="ModelFormatException"/> naming the manifest key, or the predictor file and offset, when it is malformed or corrupt.
    /// </summary>
    public StoredPredictor? LoadPredictors(string kind)
    {
        var stored = LayoutPredictors.Read(Path, _manifestPath, _predictors, _wholeConfig, kind);
        if (stored is null || Window is not { } w) return stored;
        // A layer window keeps the range's predictors, renumbered; a predictor reading a layer outside the range (a lookahead
        // predictor of the range's first layer reads the layer before, on another node) leaves the window without that kind.
        var layers = stored.Layers.Where(p => w.Contains(p.Layer)).ToArray();
        if (layers.Any(p => !w.Contains(p.InputLayer))) return null;
        return stored with { Layers = layers.Select(p => p with { Layer = p.Layer - w.From, InputLayer = p.InputLayer - w.From }).ToArray() };
    }

    /// <summary>True when calibration stored per-neuron activation frequencies in this layout.</summary>
    public bool HasActivity => _activity is not null;

    /// <summary>
    /// Reads and validates the per-neuron activation frequencies calibration stored, or returns null when the layout has none.
    /// Throws <see cref="ModelFormatException"/> naming the manifest key or the file when they are malformed or corrupt.
    /// </summary>
    public ActivityFrequencies? LoadActivity()
    {
        var a = LayoutActivity.Read(Path, _manifestPath, _activity, _wholeConfig);
        return a is null || Window is not { } w ? a : a with { Frequencies = a.Frequencies[w.From..w.To] };
    }

    /// <summary>True for the FFN matrices, whose data lives in ffn.bin as bundles (everything else is in dram.bin).</summary>
    public bool IsOnFlash(string name) => _ffnTensors.ContainsKey(name);

    /// <summary>
    /// Checks every checksum: each DRAM tensor and each FFN layer section. Throws <see cref="ModelFormatException"/>
    /// naming the file, the tensor or layer and the offset of the first mismatch.
    /// </summary>
    public void Verify()
    {
        using (var h = File.OpenHandle(DramPath, FileMode.Open, FileAccess.Read, FileShare.Read))
        {
            foreach (var t in Tensors.Values)
            {
                if (_ffnTensors.ContainsKey(t.Name)) continue;
                CheckDramHash(t, LayoutIo.Hash(h, DramPath, t.Offset, t.ByteLength, t.Name));
            }
        }
        for (int l = 0; l < Ffn.Layers; l++) Ffn.VerifyLayer(l);
    }

    internal void CheckDramTensor(TensorInfo t, ulong actual) => CheckDramHash(t, actual);

    private void CheckDramHash(TensorInfo t, ulong actual)
    {
        var expected = _dramHashes[t.Name];
        if (actual != expected)
            throw new ModelFormatException(DramPath,
                $"checksum mismatch in tensor '{t.Name}' [{t.Offset}, {t.Offset + t.ByteLength}): xxh64 {FlashLayoutRules.Hex(actual)}, manifest says {FlashLayoutRules.Hex(expected)}; the file is corrupted",
                t.Name, t.Offset);
    }

    private static Array Allocate(TensorInfo t) => t.DType == DType.F32 ? new float[t.Elements] : new Half[t.Elements];

    private static Span<byte> Bytes(Array a) => a switch
    {
        float[] f => MemoryMarshal.AsBytes(f.AsSpan()),
        Half[] h => MemoryMarshal.AsBytes(h.AsSpan()),
        _ => throw new InvalidOperationException(),
    };

    /// <summary>One FFN matrix gathered from the bundles (see <see cref="Read"/>).</summary>
    private TensorData ReadFfn(TensorInfo t, int layer, int part, bool verify)
    {
        var bp = Ffn.Parts[part];
        int dim = Ffn.Dim, hid = Ffn.Neurons;
        if (bp.Name == FlashLayoutRules.Down && DTypeInfo.IsQuantized(bp.DType))
        {
            // down [dim, hid]: column i is bundle i's re-quantized part.
            var dense = new float[(long)dim * hid];
            var column = new float[dim];
            GatherFfn(t, layer, verify, (chunk, first, count) =>
            {
                for (int k = 0; k < count; k++)
                {
                    Dequant.ToF32(bp.DType, chunk.Slice((int)(k * Ffn.BundleStride + bp.Offset), (int)bp.Bytes), column);
                    for (int j = 0; j < dim; j++) dense[(long)j * hid + first + k] = column[j];
                }
            });
            // Mixture of experts: the columns of every expert side by side, back into [experts, dim, hidden].
            return new TensorData(t.Shape, Config.MoE ? (float[])Unstack(dense) : dense);
        }
        if (DTypeInfo.IsQuantized(bp.DType))
        {
            // gate/up [hid, dim]: row i is bundle i's part, the source's blocks.
            var raw = new byte[hid * bp.Bytes];
            GatherFfn(t, layer, verify, (chunk, first, count) =>
            {
                for (int k = 0; k < count; k++)
                    chunk.Slice((int)(k * Ffn.BundleStride + bp.Offset), (int)bp.Bytes).CopyTo(raw.AsSpan((int)((first + k) * bp.Bytes)));
            });
            return Decode(bp.DType, t.Shape, raw);
        }
        var data = Allocate(t);
        GatherFloat(t, layer, part, data, verify);
        if (Config.MoE && bp.Name == FlashLayoutRules.Down) data = Unstack(data);
        return data is float[] fl ? new TensorData(t.Shape, fl) : new TensorData(t.Shape, (Half[])data);
    }

    /// <summary>Experts' down matrices gathered as one [dim, experts x hidden] back into [experts, dim, hidden].</summary>
    private Array Unstack(Array stacked)
    {
        int experts = Config.Experts, hid = Config.HiddenDim, dim = Config.Dim;
        var to = Array.CreateInstance(stacked.GetType().GetElementType()!, stacked.Length);
        for (int r = 0; r < dim; r++)
            for (int e = 0; e < experts; e++)
                Array.Copy(stacked, ((long)r * experts + e) * hid, to, ((long)e * dim + r) * hid, hid);
        return to;
    }

    /// <inheritdoc/>
    public override TensorData ReadSlab(string name, int index)
    {
        if (!_ffnTensors.ContainsKey(name)) return base.ReadSlab(name, index);
        // An expert of a MoE layout: gathered from the bundles with the rest of its layer (once for consecutive slabs of one
        // tensor, as a dense MoE loads them expert by expert), then cut out: values, or a quantized tensor's blocks.
        TensorData whole;
        lock (_slabGate)
        {
            if (_lastWhole?.Name != name) _lastWhole = (name, Read(name));
            whole = _lastWhole.Value.Data;
        }
        long[] shape = whole.Shape[1..];
        long n = TensorShape.Elements(shape);
        if (index < 0 || index >= whole.Shape[0]) throw new ModelFormatException(Path, $"slab {index} of a tensor of shape {TensorNames.ShapeText(whole.Shape)}", name);
        if (whole.Blocks is { } blocks)
        {
            long bytes = DTypeInfo.ByteCount(whole.DType, n);
            return new TensorData(shape, whole.DType, blocks.AsSpan(checked((int)(index * bytes)), checked((int)bytes)).ToArray());
        }
        return whole.F32 is { } f ? new TensorData(shape, f.AsSpan(checked((int)(index * n)), (int)n).ToArray())
            : new TensorData(shape, whole.F16!.AsSpan(checked((int)(index * n)), (int)n).ToArray());
    }

    private readonly object _slabGate = new();
    private (string Name, TensorData Data)? _lastWhole;

    private void GatherFloat(TensorInfo t, int layer, int part, Array data, bool verify)
    {
        var ffn = Ffn;
        long stride = ffn.BundleStride, partOffset = ffn.Parts[part].Offset;
        int dim = ffn.Dim, hid = ffn.Neurons, es = ffn.ElementSize;
        long partBytes = (long)dim * es;
        bool column = ffn.Parts[part].Name == FlashLayoutRules.Down;
        GatherFfn(t, layer, verify, (chunk, first, count) =>
        {
            var dest = Bytes(data);
            if (column)
            {
                if (es == 4) GatherColumns<uint>(chunk, dest, dim, hid, first, count, stride, partOffset);
                else GatherColumns<ushort>(chunk, dest, dim, hid, first, count, stride, partOffset);
            }
            else
            {
                for (int k = 0; k < count; k++)
                    chunk.Slice((int)(k * stride + partOffset), (int)partBytes).CopyTo(dest.Slice((int)((first + k) * partBytes)));
            }
        });
    }

    private delegate void ChunkVisitor(ReadOnlySpan<byte> chunk, int first, int count);

    /// <summary>
    /// Reads layer <paramref name="layer"/>'s section in 4 MiB chunks of whole bundles, checks them (per-bundle checksums when
    /// the layout has them, else the section's xxh64) unless <paramref name="verify"/> is false, and hands each chunk to
    /// <paramref name="visit"/> with its first neuron and bundle count.
    /// </summary>
    private void GatherFfn(TensorInfo t, int layer, bool verify, ChunkVisitor visit)
    {
        var ffn = Ffn;
        long stride = ffn.BundleStride;
        int hid = ffn.Neurons;
        long sectionStart = ffn.LayerOffset(layer);
        int chunkNeurons = (int)Math.Clamp((4L << 20) / stride, 1, hid);
        var buf = new byte[chunkNeurons * stride];
        // Per-bundle checksums when the layout has them (each bundle checked as its chunk lands), else the section's xxh64.
        var sums = verify && HasBundleChecksums ? LoadBundleChecksums() : null;
        var hash = verify && sums is null ? new XxHash64() : null;
        for (int first = 0; first < hid; first += chunkNeurons)
        {
            int count = Math.Min(chunkNeurons, hid - first);
            var chunk = buf.AsSpan(0, (int)(count * stride));
            long chunkOffset = sectionStart + first * stride;
            ReadExactly(ffn.FilePath, chunkOffset, chunk, t.Name);
            hash?.Append(chunk);
            if (sums is not null)
                for (int k = 0; k < count; k++)
                    if (sums.Check(chunk.Slice((int)(k * stride), (int)ffn.BundleBytes), chunkOffset + k * stride) is { } problem)
                        throw new ModelFormatException(ffn.FilePath, problem, t.Name, chunkOffset + k * stride);
            visit(chunk, first, count);
        }
        if (hash is null) return;
        var actual = hash.GetCurrentHashAsUInt64();
        if (actual != ffn.LayerChecksum(layer))
            throw new ModelFormatException(ffn.FilePath,
                $"checksum mismatch in FFN layer {layer}'s section while reading '{t.Name}': xxh64 {FlashLayoutRules.Hex(actual)}, manifest says {FlashLayoutRules.Hex(ffn.LayerChecksum(layer))}; the file is corrupted",
                t.Name, sectionStart);
    }

    /// <summary>
    /// One FFN matrix of layer <paramref name="layer"/> (<paramref name="part"/> = "gate", "up" or "down"), as
    /// <see cref="Read"/> returns it, without checking any checksum: no section is hashed, and a part alone cannot be
    /// checked against the per-bundle checksums. For test instruments (the oracle predictor); the flash runtime's own
    /// reads are checked as they land. The section is still read whole, sequentially in 4 MiB chunks: per-bundle reads
    /// of the part alone were 15x slower on a cold page cache, and with bundles of a page or less they touch every page anyway.
    /// </summary>
    public TensorData ReadFfnPartUnverified(int layer, string part) => ReadFfnPart(layer, part, verify: false);

    /// <summary>
    /// One FFN matrix of layer <paramref name="layer"/> (<paramref name="part"/> = "gate", "up" or "down") gathered from its
    /// bundles, every bundle checked against its checksum as it is read (the layer's section is read whole, sequentially):
    /// what the gate-resident predictor holds in DRAM.
    /// </summary>
    public TensorData ReadFfnPart(int layer, string part) => ReadFfnPart(layer, part, verify: true);

    private TensorData ReadFfnPart(int layer, string part, bool verify)
    {
        var ffn = Ffn;
        int p = -1;
        for (int i = 0; i < ffn.Parts.Count; i++) if (ffn.Parts[i].Name == part) p = i;
        if (p < 0) throw new ArgumentException($"bundles have no part '{part}' (parts: {string.Join(", ", ffn.Parts.Select(x => x.Name))})", nameof(part));
        var t = Info(FlashLayoutWriter.FfnTensor(Config, layer, part));
        return ReadFfn(t, layer, p, verify);
    }

    private static void GatherColumns<T>(ReadOnlySpan<byte> chunk, Span<byte> destBytes, int dim, int hid, int first, int count, long stride, long partOffset)
        where T : unmanaged
    {
        var src = MemoryMarshal.Cast<byte, T>(chunk);
        var dest = MemoryMarshal.Cast<byte, T>(destBytes);
        int es = System.Runtime.CompilerServices.Unsafe.SizeOf<T>();
        int strideElems = (int)(stride / es), partElems = (int)(partOffset / es);
        for (int j = 0; j < dim; j++)
        {
            var row = dest.Slice(j * hid + first, count);
            int at = partElems + j;
            for (int k = 0; k < count; k++, at += strideElems) row[k] = src[at];
        }
    }
}
