using System.Runtime.InteropServices;
using FlashLm.Formats;
using FlashLm.Kernels;

namespace FlashLm.Models;

/// <summary>Gives the matrix a model uses for the named tensor (by default <see cref="Matrix.Load"/>: read into DRAM).</summary>
public delegate Matrix MatrixLoader(ModelSource source, string name);

/// <summary>
/// A row-major weight matrix (rows = outputs, cols = inputs) held in DRAM as F32, F16 or quantized blocks
/// (Q4_0 .. Q8_0, the K types: each row a whole number of blocks, as the file stores it). Quantized matrices
/// are never widened: products go through the quantized kernels, row lookups dequantize one row.
/// </summary>
public sealed class Matrix
{
    public int Rows { get; }
    public int Cols { get; }
    /// <summary>The stored element type (F32, F16 or a quantized type).</summary>
    public DType DType { get; }
    public float[]? F32 { get; }
    public Half[]? F16 { get; }
    /// <summary>Quantized matrices: the blocks, row-major, <see cref="RowBytes"/> per row.</summary>
    public byte[]? Blocks { get; }

    public Matrix(TensorData t)
    {
        Rows = t.Rows;
        Cols = t.Cols;
        DType = t.DType;
        F32 = t.F32;
        F16 = t.F16;
        Blocks = t.Blocks;
    }

    /// <summary>A matrix over caller-owned storage (exactly one of <paramref name="f32"/>, <paramref name="f16"/>, rows x cols long).</summary>
    public Matrix(int rows, int cols, float[]? f32, Half[]? f16)
    {
        long n = (long)rows * cols;
        if ((f32 is null) == (f16 is null) || (f32?.LongLength ?? f16!.LongLength) != n)
            throw new ArgumentException($"a {rows} x {cols} matrix needs exactly one F32 or F16 array of {n} values");
        Rows = rows;
        Cols = cols;
        DType = f32 is not null ? DType.F32 : DType.F16;
        F32 = f32;
        F16 = f16;
    }

    /// <summary>A quantized matrix over caller-owned <paramref name="blocks"/> (rows x the bytes of one row of <paramref name="type"/>).</summary>
    public Matrix(int rows, int cols, DType type, byte[] blocks)
    {
        if (!DTypeInfo.IsQuantized(type)) throw new ArgumentException($"{DTypeInfo.Name(type)} is not a quantized type");
        if (cols % DTypeInfo.BlockElements(type) != 0)
            throw new ArgumentException($"a {DTypeInfo.Name(type)} row of {cols} elements is not a whole number of {DTypeInfo.BlockElements(type)}-element blocks");
        long n = rows * DTypeInfo.ByteCount(type, cols);
        if (blocks.LongLength != n) throw new ArgumentException($"a {rows} x {cols} {DTypeInfo.Name(type)} matrix needs {n} bytes, got {blocks.LongLength}");
        Rows = rows;
        Cols = cols;
        DType = type;
        Blocks = blocks;
    }

    public static Matrix Load(ModelSource source, string name) => new(source.Read(name));

    public bool IsQuantized => Blocks is not null;

    /// <summary>Bytes held in DRAM: 4 or 2 per value, or the quantized blocks.</summary>
    public long Bytes => Blocks?.LongLength ?? (F32 is not null ? F32.LongLength * 4 : F16!.LongLength * 2);

    /// <summary>Stored bytes of one row.</summary>
    public int RowBytes => checked((int)DTypeInfo.ByteCount(DType, Cols));

    /// <summary>The storage as bytes, whatever the type (for readers that fill a matrix in place).</summary>
    public Span<byte> Storage =>
        Blocks ?? (F32 is not null ? MemoryMarshal.AsBytes(F32.AsSpan()) : MemoryMarshal.AsBytes(F16!.AsSpan()));

    /// <summary>
    /// y[yOffset..+Rows] = this * x[xOffset..+Cols]. A quantized matrix quantizes x once to ggml's activation
    /// type for its weights (Q8_0, Q8_1 or Q8_K) and takes integer dot products, as llama.cpp does.
    /// </summary>
    public void Multiply(float[] x, int xOffset, float[] y, int yOffset)
    {
        if (Blocks is not null) MatVec.Quantized(DType, Blocks, Rows, Cols, x, xOffset, y, yOffset);
        else MatVec.Rows(F32, F16, Rows, Cols, x, xOffset, y, yOffset);
    }

    /// <summary>
    /// Several products of the same x[xOffset .. + Cols] (at most four, all with the same Cols), e.g. Wq, Wk, Wv:
    /// when all are quantized, x is quantized once per activation type and their rows are split over cores as one
    /// job; each y gets exactly what <see cref="Multiply(float[], int, float[], int)"/> gives.
    /// </summary>
    public static void Multiply(float[] x, int xOffset, params ReadOnlySpan<(Matrix M, float[] Y, int YOffset)> products)
    {
        bool allQuantized = products.Length <= 4;
        foreach (var p in products)
        {
            if (p.M.Cols != products[0].M.Cols) throw new ArgumentException($"products of one input need one column count: {p.M.Cols} vs {products[0].M.Cols}", nameof(products));
            allQuantized &= p.M.Blocks is not null;
        }
        if (!allQuantized || products.Length < 2)
        {
            foreach (var p in products) p.M.Multiply(x, xOffset, p.Y, p.YOffset);
            return;
        }
        Span<MatVec.QuantProduct> q = [default, default, default, default];
        for (int i = 0; i < products.Length; i++)
        {
            var (m, y, yOffset) = products[i];
            q[i] = new MatVec.QuantProduct(m.DType, m.Blocks!, m.Rows, y, yOffset);
        }
        MatVec.Quantized(x, xOffset, products[0].M.Cols, q[..products.Length]);
    }

    /// <summary>y = this * x for whole vectors.</summary>
    public void Multiply(float[] x, float[] y) => Multiply(x, 0, y, 0);

    /// <summary>Copies row <paramref name="row"/> widened (or dequantized) to F32 into <paramref name="destination"/>.</summary>
    public void CopyRow(int row, Span<float> destination)
    {
        if ((uint)row >= (uint)Rows) throw new ArgumentOutOfRangeException(nameof(row), row, $"a {Rows}-row matrix");
        if (Blocks is not null)
        {
            int rb = RowBytes;
            Dequant.ToF32(DType, Blocks.AsSpan((int)((long)row * rb), rb), destination[..Cols]);
        }
        else if (F32 is not null) F32.AsSpan(row * Cols, Cols).CopyTo(destination);
        else System.Numerics.Tensors.TensorPrimitives.ConvertToSingle(F16!.AsSpan(row * Cols, Cols), destination);
    }
}
