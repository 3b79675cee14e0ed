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
/// A tensor loaded for compute: F32 and F16 stay as they are stored (F16 is converted row by row
/// in the kernels); BF16 and Q8_0 are widened to F32 on load.
/// </summary>
public sealed class TensorData
{
    public DType DType { get; }
    public long[] Shape { get; }
    public float[]? F32 { get; }
    public Half[]? F16 { get; }

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

    public int Rows => Shape.Length <= 1 ? 1 : checked((int)(Length / Shape[^1]));
    public int Cols => Shape.Length == 0 ? 1 : checked((int)Shape[^1]);
    public long Length => DType == DType.F32 ? F32!.LongLength : F16!.LongLength;
    public long ByteLength => DType == DType.F32 ? Length * 4 : Length * 2;

    /// <summary>The data as F32, converting F16 (allocates for F16).</summary>
    public float[] ToF32()
    {
        if (F32 is not null) return F32;
        var f = new float[F16!.Length];
        System.Numerics.Tensors.TensorPrimitives.ConvertToSingle(F16, f);
        return f;
    }
}
