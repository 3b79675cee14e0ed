namespace FlashLm.Formats.Gguf;

/// <summary>
/// Block geometry of every ggml tensor type a GGUF file can name (ggml's type_traits: elements per block and
/// bytes per block), so that the byte count of any tensor is checked against the file, and the mapping of the
/// types FlashLm computes with onto <see cref="DType"/>.
/// </summary>
public static class GgmlTypes
{
    /// <summary>(elements per block, bytes per block) of a known type; null for an id ggml does not define.</summary>
    public static (int Elements, int Bytes)? Block(GgmlType type) => type switch
    {
        GgmlType.F32 => (1, 4),
        GgmlType.F16 => (1, 2),
        GgmlType.BF16 => (1, 2),
        GgmlType.Q4_0 => (32, 18),
        GgmlType.Q4_1 => (32, 20),
        GgmlType.Q5_0 => (32, 22),
        GgmlType.Q5_1 => (32, 24),
        GgmlType.Q8_0 => (32, 34),
        GgmlType.Q8_1 => (32, 36),
        GgmlType.Q2_K => (256, 84),
        GgmlType.Q3_K => (256, 110),
        GgmlType.Q4_K => (256, 144),
        GgmlType.Q5_K => (256, 176),
        GgmlType.Q6_K => (256, 210),
        GgmlType.Q8_K => (256, 292),
        GgmlType.IQ2_XXS => (256, 66),
        GgmlType.IQ2_XS => (256, 74),
        GgmlType.IQ3_XXS => (256, 98),
        GgmlType.IQ1_S => (256, 50),
        GgmlType.IQ4_NL => (32, 18),
        GgmlType.IQ3_S => (256, 110),
        GgmlType.IQ2_S => (256, 82),
        GgmlType.IQ4_XS => (256, 136),
        GgmlType.I8 => (1, 1),
        GgmlType.I16 => (1, 2),
        GgmlType.I32 => (1, 4),
        GgmlType.I64 => (1, 8),
        GgmlType.F64 => (1, 8),
        GgmlType.IQ1_M => (256, 56),
        GgmlType.TQ1_0 => (256, 54),
        GgmlType.TQ2_0 => (256, 66),
        GgmlType.MXFP4 => (32, 17),
        _ => null,
    };

    /// <summary>ggml's name of the type ("Q4_K", "IQ2_XXS"), or "type id N" for an id ggml does not define.</summary>
    public static string Name(GgmlType type) =>
        Block(type) is null ? $"type id {(uint)type}" : type.ToString();

    /// <summary>The element type FlashLm computes with for <paramref name="type"/>; null for the types it refuses.</summary>
    public static DType? ToDType(GgmlType type) => type switch
    {
        GgmlType.F32 => DType.F32,
        GgmlType.F16 => DType.F16,
        GgmlType.BF16 => DType.BF16,
        GgmlType.Q4_0 => DType.Q4_0,
        GgmlType.Q4_1 => DType.Q4_1,
        GgmlType.Q5_0 => DType.Q5_0,
        GgmlType.Q5_1 => DType.Q5_1,
        GgmlType.Q8_0 => DType.Q8_0,
        GgmlType.Q2_K => DType.Q2_K,
        GgmlType.Q3_K => DType.Q3_K,
        GgmlType.Q4_K => DType.Q4_K,
        GgmlType.Q5_K => DType.Q5_K,
        GgmlType.Q6_K => DType.Q6_K,
        // Q8_1 and Q8_K are ggml's activation types (never written for weights by llama-quantize); IQ*, TQ*,
        // MXFP4 and the integer types have no kernels here.
        _ => null,
    };

    /// <summary>The ggml type that stores <paramref name="type"/>.</summary>
    public static GgmlType FromDType(DType type) => type switch
    {
        DType.F32 => GgmlType.F32,
        DType.F16 => GgmlType.F16,
        DType.BF16 => GgmlType.BF16,
        DType.Q4_0 => GgmlType.Q4_0,
        DType.Q4_1 => GgmlType.Q4_1,
        DType.Q5_0 => GgmlType.Q5_0,
        DType.Q5_1 => GgmlType.Q5_1,
        DType.Q8_0 => GgmlType.Q8_0,
        DType.Q8_1 => GgmlType.Q8_1,
        DType.Q2_K => GgmlType.Q2_K,
        DType.Q3_K => GgmlType.Q3_K,
        DType.Q4_K => GgmlType.Q4_K,
        DType.Q5_K => GgmlType.Q5_K,
        DType.Q6_K => GgmlType.Q6_K,
        DType.Q8_K => GgmlType.Q8_K,
        _ => throw new ArgumentOutOfRangeException(nameof(type), type, null),
    };

    /// <summary>The types <see cref="GgufModel"/> loads, for messages.</summary>
    public const string Readable = "F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K and Q6_K";
}
