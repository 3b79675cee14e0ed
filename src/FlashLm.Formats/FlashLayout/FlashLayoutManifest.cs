using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace FlashLm.Formats.FlashLayout;

/// <summary>File names, constants and alignment rules of the flash layout (format "flashlm-layout", version 1).</summary>
public static class FlashLayoutRules
{
    public const string FormatName = "flashlm-layout";
    public const int Version = 1;
    public const string ManifestFile = "manifest.json";
    public const string DramFile = "dram.bin";
    public const string FfnFile = "ffn.bin";

    /// <summary>O_DIRECT granularity: FFN layer sections start on, and bundles never straddle, a 4096-byte page.</summary>
    public const int PageSize = 4096;

    /// <summary>Every DRAM tensor starts at a multiple of 64 bytes (a cache line; lets kernels use aligned loads).</summary>
    public const int DramAlignment = 64;

    public const string Gate = "gate";
    public const string Up = "up";
    public const string Down = "down";

    /// <summary>Bundle part names in stored order: gate, up, down (Llama) or up, down (OPT: no gate).</summary>
    public static string[] PartNames(Architecture a) => a == Architecture.Llama ? [Gate, Up, Down] : [Up, Down];

    /// <summary>
    /// The bundle stride for a bundle of <paramref name="bundleBytes"/>: a multiple of 4096 for bundles of a
    /// page or more, else the next power of two (which divides 4096), so no bundle straddles a page.
    /// </summary>
    public static long BundleStride(long bundleBytes)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(bundleBytes);
        return bundleBytes >= PageSize ? AlignUp(bundleBytes, PageSize) : (long)System.Numerics.BitOperations.RoundUpToPowerOf2((ulong)bundleBytes);
    }

    /// <summary>True when <paramref name="stride"/> can hold <paramref name="bundleBytes"/> without any bundle straddling a page.</summary>
    public static bool IsValidStride(long bundleBytes, long stride) =>
        stride >= bundleBytes && stride > 0
        && (stride % PageSize == 0 || (stride < PageSize && System.Numerics.BitOperations.IsPow2(stride)));

    public static long AlignUp(long value, long alignment) => (value + alignment - 1) / alignment * alignment;

    public static int ElementSize(DType t) => t switch
    {
        DType.F32 => 4,
        DType.F16 => 2,
        _ => throw new ArgumentException($"the flash layout stores F32 or F16, not {t}"),
    };

    /// <summary>
    /// In a quantized layout each bundle part starts at a multiple of this many bytes (the parts of an F32 or F16 layout are
    /// packed, as they always were). Blocks are read with unaligned loads; 16 keeps each part's first scale and the
    /// kernels' vector loads from splitting a cache line needlessly, and costs nothing at real widths (a Q4_0 or Q4_K row of
    /// 4096 elements is 2304 bytes, a Q8_0 one 4352: both multiples of 64).
    /// </summary>
    public const int QuantPartAlignment = 16;

    /// <summary>
    /// Types a down column may be re-quantized to (<c>flashlm convert --down-type</c>): Q8_0 (at least as precise as every source
    /// type up to 8 bits; needs dim % 32 == 0) and the K types Q6_K, Q5_K, Q4_K (dim % 256 == 0).
    /// </summary>
    public static IReadOnlyList<DType> DownTypes { get; } = [DType.Q8_0, DType.Q6_K, DType.Q5_K, DType.Q4_K];

    /// <summary>
    /// The default down type of a quantized layout: the smallest of <see cref="DownTypes"/> at least as precise as every layer's
    /// source down type. Q6_K (6.56 bits per weight) when every source down matrix is a type of at most 6.56 bits (Q2_K..Q6_K,
    /// Q4_0..Q5_1: what Q4_K_M, Q5_K_M, Q4_0 files carry) and dim is a multiple of 256; otherwise Q8_0. With Q6_K a Llama-7B
    /// bundle of Q4_K gate and up rows fills 7968 of an 8 KiB stride, a third of F16's 24 KiB; with Q8_0 it would take 12 KiB.
    /// </summary>
    public static DType DefaultDownType(IEnumerable<DType> sourceDownTypes, int dim) =>
        dim % DTypeInfo.BlockElements(DType.Q6_K) == 0 && sourceDownTypes.All(t => t is DType.Q2_K or DType.Q3_K or DType.Q4_K or DType.Q5_K
            or DType.Q6_K or DType.Q4_0 or DType.Q4_1 or DType.Q5_0 or DType.Q5_1)
            ? DType.Q6_K
            : DType.Q8_0;

    /// <summary>
    /// Byte offsets of a bundle's parts of <paramref name="partBytes"/> bytes each, in stored order, and the bundle's data bytes
    /// (the end of the last part): packed for F32/F16 layouts, each part at a multiple of <see cref="QuantPartAlignment"/> when quantized.
    /// </summary>
    public static long[] PartOffsets(IReadOnlyList<long> partBytes, bool quantized, out long bundleBytes)
    {
        var offsets = new long[partBytes.Count];
        long at = 0;
        for (int p = 0; p < offsets.Length; p++)
        {
            offsets[p] = quantized ? AlignUp(at, QuantPartAlignment) : at;
            at = offsets[p] + partBytes[p];
        }
        bundleBytes = at;
        return offsets;
    }

    internal static string Hex(ulong h) => h.ToString("x16", CultureInfo.InvariantCulture);

    internal static bool TryParseHex(string? s, out ulong h)
    {
        h = 0;
        return s is { Length: 16 } && ulong.TryParse(s, NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out h);
    }

    /// <summary>A bare file name (no directory part, no "..", at most 255 characters as file systems allow) that a manifest may name.</summary>
    internal static bool IsPlainFileName(string? name) =>
        !string.IsNullOrEmpty(name) && name.Length <= 255 && name != "." && name != ".."
        && name.IndexOfAny(['/', '\\', ':', '\0']) < 0
        && System.IO.Path.GetFileName(name) == name;
}

// JSON shapes of manifest.json (snake_case on disk). Field meanings are in FlashLayoutModel's docs.

internal sealed class ManifestDto
{
    public required string Format { get; set; }
    public required int Version { get; set; }
    public required string Architecture { get; set; }
    public required int Dim { get; set; }
    public required int HiddenDim { get; set; }
    public required int Layers { get; set; }
    public required int Heads { get; set; }
    public required int KvHeads { get; set; }
    public required int VocabSize { get; set; }
    public required int ContextLength { get; set; }
    public required float NormEps { get; set; }
    public required float RopeTheta { get; set; }
    public required bool TiedEmbeddings { get; set; }
    public required int PositionOffset { get; set; }
    /// <summary>Width of one attention head where the model sets it apart from dim / heads (Qwen3); absent otherwise.</summary>
    [System.Text.Json.Serialization.JsonIgnore(Condition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingNull)]
    public int? HeadDim { get; set; }
    /// <summary>Mixture of experts: experts per layer (each <c>hidden_dim</c> neurons; the FFN section holds experts x hidden_dim bundles,
    /// expert e's neuron i at e x hidden_dim + i) and experts the router picks per token; absent for a dense FFN.</summary>
    [System.Text.Json.Serialization.JsonIgnore(Condition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingNull)]
    public int? Experts { get; set; }
    [System.Text.Json.Serialization.JsonIgnore(Condition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingNull)]
    public int? ExpertsUsed { get; set; }
    /// <summary>Llama's FFN activation: "relu" or "fatrelu" (ReLU-fied models); absent for SiLU, so SiLU manifests read as before.</summary>
    [System.Text.Json.Serialization.JsonIgnore(Condition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingNull)]
    public string? FfnActivation { get; set; }
    /// <summary>FATReLU's threshold t (fatrelu(g) = g if g &gt; t else 0); absent otherwise.</summary>
    [System.Text.Json.Serialization.JsonIgnore(Condition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingNull)]
    public float? FfnActivationThreshold { get; set; }
    /// <summary>
    /// "F32" or "F16": the storage type of every tensor (vectors are F32). A quantized type ("Q4_K", ...): a quantized layout,
    /// whose DRAM tensors keep their source types and whose bundle parts each record their own type; this is the first part's.
    /// </summary>
    public required string Dtype { get; set; }
    public required TokenizerDto Tokenizer { get; set; }
    public required DramDto Dram { get; set; }
    public required FfnDto Ffn { get; set; }
    /// <summary>Per-layer activation thresholds, or null until calibrated.</summary>
    public double[]? Thresholds { get; set; }
    /// <summary>Trained sparsity predictors, one entry per kind, or null when there are none (see LayoutPredictors).</summary>
    public PredictorSetDto[]? Predictors { get; set; }
    /// <summary>Per-neuron activation frequencies from calibration, or null when none were recorded (see LayoutActivity).</summary>
    public ActivityDto? Activity { get; set; }
}

internal sealed class TokenizerDto
{
    public required string Kind { get; set; }
    public required string[] Files { get; set; }
}

internal sealed class DramDto
{
    public required string File { get; set; }
    public required DramTensorDto[] Tensors { get; set; }
}

internal sealed class DramTensorDto
{
    public required string Name { get; set; }
    public required string Dtype { get; set; }
    public required long[] Shape { get; set; }
    /// <summary>Byte offset in dram.bin (a multiple of 64).</summary>
    public required long Offset { get; set; }
    public required long Bytes { get; set; }
    /// <summary>XxHash64 (seed 0) of the tensor's bytes, 16 lower-case hex digits.</summary>
    public required string Xxh64 { get; set; }
}

internal sealed class FfnDto
{
    public required string File { get; set; }
    public required BundlePartDto[] BundleParts { get; set; }
    public required long BundleBytes { get; set; }
    public required long BundleStride { get; set; }
    public required FfnLayerDto[] Layers { get; set; }
    /// <summary>Per-bundle checksums (see BundleChecksums), or null in layouts written before they existed.</summary>
    public BundleChecksumsDto? BundleChecksums { get; set; }
    /// <summary>Quantized layouts: how the down columns were re-quantized and the error it added (informative, not checked).</summary>
    public DownRequantDto? DownRequant { get; set; }
}

internal sealed class DownRequantDto
{
    /// <summary>The down part's type.</summary>
    public string? Dtype { get; set; }
    /// <summary>The source's ffn_down types (distinct, in layer order).</summary>
    public string[]? SourceDtypes { get; set; }
    /// <summary>Per layer: RMS(requantized column - source column) / RMS(source column), over all of the layer's columns.</summary>
    public double[]? ColumnRelRms { get; set; }
    /// <summary>Per layer: the same for the layer's FFN output on a seeded standard-normal input (gate/up as stored).</summary>
    public double[]? OutputRelRms { get; set; }
}

internal sealed class BundleChecksumsDto
{
    /// <summary>File name in the layout folder (ffn.sums).</summary>
    public required string File { get; set; }
    /// <summary>BundleChecksums.Algorithm: anything else is refused, so a future scheme is never misread.</summary>
    public required string Algorithm { get; set; }
    /// <summary>layers * neurons * 8.</summary>
    public required long Bytes { get; set; }
    /// <summary>XxHash64 (seed 0) of the whole checksum file.</summary>
    public required string Xxh64 { get; set; }
}

internal sealed class BundlePartDto
{
    public required string Name { get; set; }
    /// <summary>Byte offset of the part within a bundle.</summary>
    public required long Offset { get; set; }
    public required long Elements { get; set; }
    /// <summary>The part's type; absent in layouts written before it existed (then the layout's dtype). Required when quantized.</summary>
    public string? Dtype { get; set; }
    /// <summary>The part's bytes (elements of dtype); absent in layouts written before it existed. Required when quantized.</summary>
    public long? Bytes { get; set; }
}

internal sealed class FfnLayerDto
{
    public required int Layer { get; set; }
    /// <summary>Byte offset of the layer's section in ffn.bin (a multiple of 4096).</summary>
    public required long Offset { get; set; }
    public required int Neurons { get; set; }
    /// <summary>neurons * bundle_stride.</summary>
    public required long Bytes { get; set; }
    /// <summary>XxHash64 (seed 0) of the whole section, padding included.</summary>
    public required string Xxh64 { get; set; }
}

internal static class ManifestJson
{
    internal static readonly JsonSerializerOptions Options = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        WriteIndented = true,
        RespectNullableAnnotations = true,
    };

    public static byte[] Serialize(ManifestDto m) => JsonSerializer.SerializeToUtf8Bytes(m, Options);

    /// <summary>Parses manifest.json; any syntax or type problem becomes a ModelFormatException naming the JSON path.</summary>
    public static ManifestDto Load(string manifestPath)
    {
        if (!File.Exists(manifestPath))
            throw new ModelFormatException(manifestPath, "not a flash-layout folder: manifest.json is missing");
        byte[] bytes;
        try
        {
            bytes = File.ReadAllBytes(manifestPath);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new ModelFormatException(manifestPath, $"cannot read: {e.Message}", inner: e);
        }
        JsonNode? root;
        try
        {
            root = JsonNode.Parse(bytes);
        }
        catch (JsonException e)
        {
            throw new ModelFormatException(manifestPath, $"is not valid JSON: {e.Message}", KeyOf(e), inner: e);
        }
        if (root is not JsonObject obj)
            throw new ModelFormatException(manifestPath, "must be a JSON object");
        try
        {
            return Load(manifestPath, obj);
        }
        catch (InvalidOperationException e)
        {
            // JsonNode checks a name's or string's UTF-8 only when it is read.
            throw new ModelFormatException(manifestPath, $"holds a string that is not valid UTF-8: {e.Message}", inner: e);
        }
        catch (ArgumentException e)
        {
            // JsonObject builds its dictionary lazily and throws on a repeated property name.
            throw new ModelFormatException(manifestPath, $"has a repeated key: {e.Message}", inner: e);
        }
    }

    private static ManifestDto Load(string manifestPath, JsonObject obj)
    {
        // Check the format tag and version first, so a future version fails with a clear message, not a missing field.
        if (!TryString(obj["format"], out var format) || format != FlashLayoutRules.FormatName)
            throw new ModelFormatException(manifestPath, $"format must be \"{FlashLayoutRules.FormatName}\", got {Shown(obj["format"])}", "format");
        if (obj["version"] is not JsonValue v || !v.TryGetValue<int>(out var version) || version != FlashLayoutRules.Version)
            throw new ModelFormatException(manifestPath, $"unsupported version {Shown(obj["version"])}; this build reads version {FlashLayoutRules.Version}", "version");
        ManifestDto m;
        try
        {
            m = obj.Deserialize<ManifestDto>(Options)
                ?? throw new ModelFormatException(manifestPath, "must be a JSON object");
        }
        catch (JsonException e)
        {
            throw new ModelFormatException(manifestPath, $"bad field: {e.Message}", KeyOf(e), inner: e);
        }
        // Nullable annotations cover properties, not array elements: a null entry would surface later as a NullReferenceException.
        NoNulls(manifestPath, m.Dram.Tensors, "dram.tensors");
        NoNulls(manifestPath, m.Ffn.BundleParts, "ffn.bundle_parts");
        NoNulls(manifestPath, m.Ffn.Layers, "ffn.layers");
        NoNulls(manifestPath, m.Predictors, "predictors");
        for (int i = 0; i < (m.Predictors?.Length ?? 0); i++) NoNulls(manifestPath, m.Predictors![i].Layers, $"predictors[{i}].layers");
        return m;
    }

    private static void NoNulls<T>(string manifestPath, T?[]? items, string key) where T : class
    {
        for (int i = 0; i < (items?.Length ?? 0); i++)
            if (items![i] is null) throw new ModelFormatException(manifestPath, "entry is null", $"{key}[{i}]");
    }

    /// <summary>A manifest value quoted in a message: short values as JSON, long strings by their length (a corrupt file can make them megabytes).</summary>
    private static string Shown(JsonNode? n)
    {
        if (n is null) return "nothing";
        var kind = n.GetValueKind();
        if (kind is JsonValueKind.Object or JsonValueKind.Array) return $"an {kind.ToString().ToLowerInvariant()}";
        if (kind == JsonValueKind.String)
        {
            var s = n.GetValue<string>();
            return s.Length <= 40 ? $"\"{ModelFormatException.Printable(s)}\"" : $"a string of {s.Length} characters";
        }
        return ModelFormatException.Printable(n.ToJsonString(), 40);
    }

    private static bool TryString(JsonNode? n, out string s)
    {
        s = "";
        return n is JsonValue v && v.TryGetValue(out s!);
    }

    private static string? KeyOf(JsonException e) =>
        e.Path is null ? null : e.Path.StartsWith("$.", StringComparison.Ordinal) ? e.Path[2..] : e.Path;

    /// <summary>Writes the manifest next to its final name and renames it over, so readers never see half a manifest.</summary>
    public static void WriteAtomic(string manifestPath, ManifestDto m)
    {
        var tmp = manifestPath + ".tmp";
        using (var f = new FileStream(tmp, FileMode.Create, FileAccess.Write, FileShare.None))
        {
            f.Write(Serialize(m));
            f.Flush(flushToDisk: true);
        }
        File.Move(tmp, manifestPath, overwrite: true);
    }
}
