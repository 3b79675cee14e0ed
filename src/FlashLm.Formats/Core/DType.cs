namespace FlashLm.Formats;

/// <summary>
/// Element types of stored tensors. The quantized ones are GGML's block formats, byte for byte (see
/// ggml-common.h): a block of <see cref="DTypeInfo.BlockElements"/> values stored in
/// <see cref="DTypeInfo.BlockBytes"/> bytes, F16 scales little-endian.
/// </summary>
public enum DType
{
    F32,
    F16,
    BF16,
    /// <summary>32 int8 q with one F16 scale d: x = d q (34 bytes per block).</summary>
    Q8_0,
    /// <summary>32 4-bit q (nibbles, low nibbles first) with one F16 scale d: x = d (q - 8) (18 bytes).</summary>
    Q4_0,
    /// <summary>32 4-bit q with F16 scale d and F16 min m: x = d q + m (20 bytes).</summary>
    Q4_1,
    /// <summary>32 5-bit q (nibbles plus one 32-bit word of high bits) with F16 d: x = d (q - 16) (22 bytes).</summary>
    Q5_0,
    /// <summary>32 5-bit q with F16 d and F16 m: x = d q + m (24 bytes).</summary>
    Q5_1,
    /// <summary>32 int8 q with F16 d and F16 s = d sum(q) (36 bytes); ggml's activation type for Q4_1/Q5_1.</summary>
    Q8_1,
    /// <summary>Super-block of 256: 16 groups of 16 2-bit q with 4-bit scales and mins (84 bytes).</summary>
    Q2_K,
    /// <summary>Super-block of 256: 16 groups of 16 3-bit q with 6-bit signed scales (110 bytes).</summary>
    Q3_K,
    /// <summary>Super-block of 256: 8 groups of 32 4-bit q with 6-bit scales and mins (144 bytes).</summary>
    Q4_K,
    /// <summary>Super-block of 256: 8 groups of 32 5-bit q with 6-bit scales and mins (176 bytes).</summary>
    Q5_K,
    /// <summary>Super-block of 256: 16 groups of 16 6-bit q with int8 scales (210 bytes).</summary>
    Q6_K,
    /// <summary>Super-block of 256 int8 q with an F32 scale and 16 int16 group sums (292 bytes); ggml's activation type for K weights.</summary>
    Q8_K,
}

public static class DTypeInfo
{
    /// <summary>Elements per block: 1 for F32/F16/BF16, 32 for Q4_0..Q8_1, 256 for the K types.</summary>
    public static int BlockElements(DType type) => type switch
    {
        DType.F32 or DType.F16 or DType.BF16 => 1,
        DType.Q8_0 or DType.Q4_0 or DType.Q4_1 or DType.Q5_0 or DType.Q5_1 or DType.Q8_1 => 32,
        DType.Q2_K or DType.Q3_K or DType.Q4_K or DType.Q5_K or DType.Q6_K or DType.Q8_K => 256,
        _ => throw new ArgumentOutOfRangeException(nameof(type), type, "unknown dtype"),
    };

    /// <summary>Bytes per block (ggml's block sizes).</summary>
    public static int BlockBytes(DType type) => type switch
    {
        DType.F32 => 4,
        DType.F16 or DType.BF16 => 2,
        DType.Q8_0 => 34,
        DType.Q4_0 => 18,
        DType.Q4_1 => 20,
        DType.Q5_0 => 22,
        DType.Q5_1 => 24,
        DType.Q8_1 => 36,
        DType.Q2_K => 84,
        DType.Q3_K => 110,
        DType.Q4_K => 144,
        DType.Q5_K => 176,
        DType.Q6_K => 210,
        DType.Q8_K => 292,
        _ => throw new ArgumentOutOfRangeException(nameof(type), type, "unknown dtype"),
    };

    /// <summary>True for the block formats (everything but F32, F16 and BF16).</summary>
    public static bool IsQuantized(DType type) => BlockElements(type) > 1;

    /// <summary>
    /// The type ggml quantizes the input vector to for a dot product with weights of <paramref name="weight"/>:
    /// Q4_0/Q5_0/Q8_0 -> Q8_0, Q4_1/Q5_1 -> Q8_1, the K types -> Q8_K, F32/F16/BF16 -> F32.
    /// </summary>
    public static DType ActivationType(DType weight) => weight switch
    {
        DType.F32 or DType.F16 or DType.BF16 => DType.F32,
        DType.Q4_0 or DType.Q5_0 or DType.Q8_0 => DType.Q8_0,
        DType.Q4_1 or DType.Q5_1 => DType.Q8_1,
        DType.Q2_K or DType.Q3_K or DType.Q4_K or DType.Q5_K or DType.Q6_K => DType.Q8_K,
        _ => throw new ArgumentException($"{weight} is an activation type, not a weight type", nameof(weight)),
    };

    /// <summary>Bytes needed to store <paramref name="elements"/> elements of <paramref name="type"/>.</summary>
    /// <exception cref="ArgumentException">the count is negative or not a whole number of blocks.</exception>
    public static long ByteCount(DType type, long elements)
    {
        int block = BlockElements(type);
        if (elements < 0) throw new ArgumentException($"{type}: negative element count {elements}", nameof(elements));
        if (elements % block != 0)
            throw new ArgumentException($"{type} stores blocks of {block} elements; {elements} is not a multiple of {block}", nameof(elements));
        return elements / block * BlockBytes(type);
    }

    public static string Name(DType type) => type.ToString();

    /// <summary>Parses a dtype name (case-insensitive: "q4_k", "Q4_K", "bf16").</summary>
    public static DType Parse(string name)
    {
        foreach (var t in Enum.GetValues<DType>())
            if (string.Equals(t.ToString(), name, StringComparison.OrdinalIgnoreCase)) return t;
        throw new ArgumentException($"unknown dtype '{name}' (expected one of {string.Join(", ", Enum.GetNames<DType>())})", nameof(name));
    }
}
