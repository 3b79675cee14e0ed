namespace FlashLm.Formats;

/// <summary>Shape arithmetic shared by <see cref="TensorSpec"/> and <see cref="TensorInfo"/>.</summary>
public static class TensorShape
{
    /// <summary>The product of the dimensions (1 for a scalar); throws OverflowException past long.</summary>
    public static long Elements(long[] shape)
    {
        long n = 1;
        foreach (var d in shape) n = checked(n * d);
        return n;
    }
}

/// <summary>A tensor to be written: canonical name, stored element type and row-major shape.</summary>
public sealed record TensorSpec(string Name, DType DType, long[] Shape)
{
    public long Elements => TensorShape.Elements(Shape);

    public long ByteLength => DTypeInfo.ByteCount(DType, Elements);
}

/// <summary>
/// Produces a tensor's values in F32, chunk by chunk, so writers can stream models larger than DRAM:
/// fill <paramref name="chunk"/> with elements [firstElement, firstElement + chunk.Length) of the
/// row-major tensor <paramref name="spec"/>.
/// </summary>
public delegate void TensorFiller(TensorSpec spec, long firstElement, Span<float> chunk);
