namespace FlashLm.Formats;

/// <summary>Element types of stored tensors.</summary>
public enum DType
{
    F32,
    F16,
    BF16,
    /// <summary>GGML Q8_0: blocks of 32 int8 with one F16 scale (34 bytes per block).</summary>
    Q8_0,
}

public static class DTypeInfo
{
    /// <summary>Bytes needed to store <paramref name="elements"/> elements of <paramref name="type"/>.</summary>
    public static long ByteCount(DType type, long elements) => type switch
    {
        DType.F32 => elements * 4,
        DType.F16 or DType.BF16 => elements * 2,
        DType.Q8_0 => elements % 32 == 0
            ? elements / 32 * 34
            : throw new ArgumentException($"Q8_0 needs a multiple of 32 elements, got {elements}"),
        _ => throw new ArgumentOutOfRangeException(nameof(type)),
    };

    public static string Name(DType type) => type.ToString();

    public static DType Parse(string name) => name.ToUpperInvariant() switch
    {
        "F32" => DType.F32,
        "F16" => DType.F16,
        "BF16" => DType.BF16,
        "Q8_0" => DType.Q8_0,
        _ => throw new ArgumentException($"unknown dtype '{name}' (expected F32, F16, BF16 or Q8_0)"),
    };
}
