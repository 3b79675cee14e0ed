using System.Buffers.Binary;
using System.Text.Json;

namespace FlashLm.Formats.HuggingFace;

/// <summary>One tensor in a safetensors header, with its absolute byte range in the file.</summary>
/// <param name="DTypeName">The stored dtype string ("F32", "BF16", "I64", ...), kept verbatim so that
/// unsupported types are reported only when such a tensor is actually used.</param>
public sealed record SafetensorsEntry(string Name, string DTypeName, long[] Shape, string FilePath, long Offset, long ByteLength)
{
    /// <summary>The FlashLm element type, or a <see cref="ModelFormatException"/> naming the tensor and dtype.</summary>
    public DType DType => DTypeName switch
    {
        "F32" => DType.F32,
        "F16" => DType.F16,
        "BF16" => DType.BF16,
        _ => throw new ModelFormatException(FilePath, $"dtype {DTypeName} is not supported (FlashLm reads F32, F16 and BF16 safetensors)", Name, Offset),
    };
}

/// <summary>
/// The header of a .safetensors file: an 8-byte little-endian u64 header length N, N bytes of JSON
/// ({name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}}), then the data;
/// data_offsets are relative to the start of the data (byte 8 + N).
/// </summary>
public sealed class SafetensorsFile
{
    /// <summary>Refuses absurd header lengths before allocating (real headers are well under 100 MiB).</summary>
    public const long MaxHeaderBytes = 100L << 20;

    public string FilePath { get; }
    public long HeaderLength { get; }
    /// <summary>Absolute offset of the data section (8 + header length).</summary>
    public long DataStart => 8 + HeaderLength;
    public IReadOnlyDictionary<string, SafetensorsEntry> Tensors { get; }
    public IReadOnlyDictionary<string, string> Metadata { get; }

    private SafetensorsFile(string path, long headerLength, Dictionary<string, SafetensorsEntry> tensors, Dictionary<string, string> metadata)
    {
        FilePath = path;
        HeaderLength = headerLength;
        Tensors = tensors;
        Metadata = metadata;
    }

    /// <summary>Element size in bytes of the safetensors dtypes we know, for the data_offsets length check.</summary>
    private static int? ElementBytes(string dtype) => dtype switch
    {
        "F64" or "I64" or "U64" => 8,
        "F32" or "I32" or "U32" => 4,
        "F16" or "BF16" or "I16" or "U16" => 2,
        "I8" or "U8" or "BOOL" or "F8_E4M3" or "F8_E5M2" => 1,
        _ => null,
    };

    /// <summary>Reads and bounds-checks the header of <paramref name="path"/>; every tensor is checked to lie inside the data.</summary>
    public static SafetensorsFile Open(string path)
    {
        if (!File.Exists(path)) throw new ModelFormatException(path, "file not found");
        using var handle = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.Read);
        long size = RandomAccess.GetLength(handle);
        if (size < 8)
            throw new ModelFormatException(path, $"model is corrupted or incomplete: {size} bytes is shorter than the 8-byte header length", "header length", 0);
        Span<byte> lenBytes = stackalloc byte[8];
        BinaryFile.ReadExactly(handle, path, 0, lenBytes, "header length");
        ulong n = BinaryPrimitives.ReadUInt64LittleEndian(lenBytes);
        if (n > (ulong)(size - 8))
            throw new ModelFormatException(path, $"model is corrupted or incomplete: header length {n} runs beyond the end of the file ({size} bytes)", "header length", 0);
        if (n > MaxHeaderBytes)
            throw new ModelFormatException(path, $"header length {n} is implausibly large (limit {MaxHeaderBytes})", "header length", 0);
        if (n < 2)
            throw new ModelFormatException(path, $"header length {n} is too short for a JSON object", "header length", 0);
        var header = new byte[(int)n];
        BinaryFile.ReadExactly(handle, path, 8, header, "header");
        long dataStart = 8 + (long)n, dataSize = size - dataStart;

        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(header);
        }
        catch (JsonException e)
        {
            long? at = e.LineNumber == 0 && e.BytePositionInLine is { } p ? 8 + p : null;
            throw new ModelFormatException(path, $"header is not valid JSON: {e.Message}", "header", at ?? 8, e);
        }
        using (doc)
        try
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Object)
                throw new ModelFormatException(path, "header JSON is not an object", "header", 8);
            var tensors = new Dictionary<string, SafetensorsEntry>(StringComparer.Ordinal);
            var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
            foreach (var prop in doc.RootElement.EnumerateObject())
            {
                if (prop.Name == "__metadata__")
                {
                    if (prop.Value.ValueKind == JsonValueKind.Object)
                        foreach (var m in prop.Value.EnumerateObject())
                            metadata[m.Name] = m.Value.ValueKind == JsonValueKind.String ? m.Value.GetString()! : m.Value.GetRawText();
                    continue;
                }
                tensors[prop.Name] = ParseEntry(path, prop.Name, prop.Value, dataStart, dataSize);
            }
            return new SafetensorsFile(path, (long)n, tensors, metadata);
        }
        catch (InvalidOperationException e)
        {
            // JsonDocument checks a string's UTF-8 only when it is read (a name, a dtype, a metadata value).
            throw new ModelFormatException(path, $"header holds a string that is not valid UTF-8: {e.Message}", "header", 8, e);
        }
    }

    private static SafetensorsEntry ParseEntry(string path, string name, JsonElement e, long dataStart, long dataSize)
    {
        ModelFormatException Bad(string what) => new(path, what, name, 8);
        if (e.ValueKind != JsonValueKind.Object) throw Bad("header entry is not an object");
        if (!e.TryGetProperty("dtype", out var dt) || dt.ValueKind != JsonValueKind.String)
            throw Bad("header entry has no string 'dtype'");
        if (!e.TryGetProperty("shape", out var sh) || sh.ValueKind != JsonValueKind.Array)
            throw Bad("header entry has no array 'shape'");
        if (!e.TryGetProperty("data_offsets", out var off) || off.ValueKind != JsonValueKind.Array || off.GetArrayLength() != 2)
            throw Bad("header entry has no two-element array 'data_offsets'");
        var shape = new long[sh.GetArrayLength()];
        int i = 0;
        long elements = 1;
        foreach (var d in sh.EnumerateArray())
        {
            if (d.ValueKind != JsonValueKind.Number || !d.TryGetInt64(out var v) || v < 0 || v > 1L << 40)
                throw Bad($"shape entry {ModelFormatException.Printable(d.GetRawText(), 40)} is not a plausible dimension");
            shape[i++] = v;
            elements = v == 0 ? 0 : elements > long.MaxValue / v ? throw Bad("shape overflows") : elements * v;
        }
        long begin = Offset(off[0]), end = Offset(off[1]);
        long Offset(JsonElement x) =>
            x.ValueKind == JsonValueKind.Number && x.TryGetInt64(out var v) && v >= 0 ? v : throw Bad($"data_offsets entry {ModelFormatException.Printable(x.GetRawText(), 40)} is not a non-negative integer");
        if (begin > end) throw Bad($"data_offsets [{begin}, {end}] are reversed");
        if (end > dataSize)
            throw new ModelFormatException(path,
                $"model is corrupted or incomplete: data_offsets [{begin}, {end}) lie beyond the {dataSize} data bytes",
                name, dataStart + begin);
        string dtype = dt.GetString()!;
        // Divide first so that elements * eb cannot overflow.
        if (ElementBytes(dtype) is { } eb && (elements > (end - begin) / eb || elements * eb != end - begin))
            throw new ModelFormatException(path,
                $"data_offsets span {end - begin} bytes but dtype {dtype} with shape {TensorNames.ShapeText(shape)} needs {elements} x {eb} bytes",
                name, dataStart + begin);
        return new SafetensorsEntry(name, dtype, shape, path, dataStart + begin, end - begin);
    }
}
