namespace FlashLm.Formats;

/// <summary>Where one stored tensor lives: file, absolute byte offset, element type and row-major shape.</summary>
public sealed record TensorInfo(string Name, DType DType, long[] Shape, string FilePath, long Offset)
{
    public long Elements => TensorShape.Elements(Shape);

    public long ByteLength => DTypeInfo.ByteCount(DType, Elements);

    /// <summary>Rows of the tensor viewed as a matrix (product of all but the last dimension).</summary>
    public long Rows => Shape.Length == 0 ? 1 : Elements / Shape[^1];

    /// <summary>Columns of the tensor viewed as a matrix (the last dimension).</summary>
    public long Cols => Shape.Length == 0 ? 1 : Shape[^1];
}

/// <summary>
/// A tensor loaded for compute. F32 and F16 stay as they are stored (F16 is converted row by row in the
/// kernels); quantized types (Q4_0 .. Q8_0, the K types) stay as their stored blocks, row-major, and are
/// dequantized inside the kernels; BF16 is widened to F32 on load (no BF16 kernels).
/// Exactly one of <see cref="F32"/>, <see cref="F16"/>, <see cref="Blocks"/> is set.
/// </summary>
public sealed class TensorData
{
    public DType DType { get; }
    public long[] Shape { get; }
    public float[]? F32 { get; }
    public Half[]? F16 { get; }
    /// <summary>Quantized tensors: the blocks as stored (each row a whole number of blocks), row-major.</summary>
    public byte[]? Blocks { get; }

    public TensorData(long[] shape, float[] data)
    {
        DType = DType.F32;
        Shape = shape;
        F32 = data;
    }

    public TensorData(long[] shape, Half[] data)
    {
        DType = DType.F16;
        Shape = shape;
        F16 = data;
    }

    /// <summary>A quantized tensor over its stored <paramref name="blocks"/> (checked against the shape).</summary>
    public TensorData(long[] shape, DType type, byte[] blocks)
    {
        if (!DTypeInfo.IsQuantized(type))
            throw new ArgumentException($"{DTypeInfo.Name(type)} is not a quantized type; use the F32 or F16 constructor");
        long cols = shape.Length == 0 ? 1 : shape[^1];
        if (cols % DTypeInfo.BlockElements(type) != 0)
            throw new ArgumentException($"a {DTypeInfo.Name(type)} row of {cols} elements is not a whole number of {DTypeInfo.BlockElements(type)}-element blocks");
        long bytes = DTypeInfo.ByteCount(type, TensorShape.Elements(shape));
        if (blocks.LongLength != bytes)
            throw new ArgumentException($"{blocks.LongLength} bytes for a {DTypeInfo.Name(type)} tensor of shape [{string.Join(", ", shape)}], expected {bytes}");
        DType = type;
        Shape = shape;
        Blocks = blocks;
    }

    public bool IsQuantized => Blocks is not null;

    public int Rows => Shape.Length <= 1 ? 1 : checked((int)(Length / Shape[^1]));
    public int Cols => Shape.Length == 0 ? 1 : checked((int)Shape[^1]);
    public long Length => F32?.LongLength ?? F16?.LongLength ?? TensorShape.Elements(Shape);
    public long ByteLength => F32 is not null ? Length * 4 : F16 is not null ? Length * 2 : Blocks!.LongLength;

    /// <summary>The data as F32: F32 as is, F16 converted and quantized blocks dequantized (both allocate).</summary>
    public float[] ToF32()
    {
        if (F32 is not null) return F32;
        var f = new float[Length];
        if (F16 is not null) System.Numerics.Tensors.TensorPrimitives.ConvertToSingle(F16, f);
        else Dequant.ToF32(DType, Blocks!, f);
        return f;
    }
}
