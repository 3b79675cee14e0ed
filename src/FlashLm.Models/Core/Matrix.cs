using FlashLm.Formats;
using FlashLm.Kernels;

namespace FlashLm.Models;

/// <summary>Gives the matrix a model uses for the named tensor (by default <see cref="Matrix.Load"/>: read into DRAM).</summary>
public delegate Matrix MatrixLoader(ModelSource source, string name);

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

    /// <summary>A matrix over caller-owned storage (exactly one of <paramref name="f32"/>, <paramref name="f16"/>, rows x cols long).</summary>
    public Matrix(int rows, int cols, float[]? f32, Half[]? f16)
    {
        long n = (long)rows * cols;
        if ((f32 is null) == (f16 is null) || (f32?.LongLength ?? f16!.LongLength) != n)
            throw new ArgumentException($"a {rows} x {cols} matrix needs exactly one F32 or F16 array of {n} values");
        Rows = rows;
        Cols = cols;
        F32 = f32;
        F16 = f16;
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
