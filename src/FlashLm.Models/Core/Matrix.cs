using FlashLm.Formats;
using FlashLm.Kernels;

namespace FlashLm.Models;

/// <summary>A row-major weight matrix (rows = outputs, cols = inputs) held in DRAM as F32 or F16.</summary>
public sealed class Matrix
{
    public int Rows { get; }
    public int Cols { get; }
    public float[]? F32 { get; }
    public Half[]? F16 { get; }

    public Matrix(TensorData t)
    {
        Rows = t.Rows;
        Cols = t.Cols;
        F32 = t.F32;
        F16 = t.F16;
    }

    public static Matrix Load(ModelSource source, string name) => new(source.Read(name));

    public long Bytes => F32 is not null ? F32.LongLength * 4 : F16!.LongLength * 2;

    /// <summary>y[yOffset..+Rows] = this * x[xOffset..+Cols].</summary>
    public void Multiply(float[] x, int xOffset, float[] y, int yOffset) =>
        MatVec.Rows(F32, F16, Rows, Cols, x, xOffset, y, yOffset);

    /// <summary>y = this * x for whole vectors.</summary>
    public void Multiply(float[] x, float[] y) => Multiply(x, 0, y, 0);

    /// <summary>Copies row <paramref name="row"/> widened to F32 into <paramref name="destination"/>.</summary>
    public void CopyRow(int row, Span<float> destination)
    {
        if (F32 is not null) F32.AsSpan(row * Cols, Cols).CopyTo(destination);
        else System.Numerics.Tensors.TensorPrimitives.ConvertToSingle(F16!.AsSpan(row * Cols, Cols), destination);
    }
}
