namespace FlashLm.Models.Predictors;

/// <summary>A rank-r factorisation M (rows, cols) ~ U diag(S) Vt, singular values descending.</summary>
/// <param name="U">(rows, rank) row-major, orthonormal columns.</param>
/// <param name="S">(rank) singular values, descending.</param>
/// <param name="Vt">(rank, cols) row-major, orthonormal rows.</param>
public sealed record SvdResult(int Rows, int Cols, int Rank, double[] U, double[] S, double[] Vt);

/// <summary>
/// Truncated SVD by randomized subspace iteration (Halko, Martinsson, Tropp): a seeded Gaussian test
/// matrix, a few power iterations with re-orthonormalisation, then an exact SVD (one-sided Jacobi) of the
/// small projected matrix. Deterministic for a given seed; all maths in double.
/// </summary>
public static class TruncatedSvd
{
    /// <param name="m">(rows, cols) row-major.</param>
    /// <param name="rank">Singular triplets wanted (capped at min(rows, cols)).</param>
    /// <param name="oversample">Extra subspace columns: the top <paramref name="rank"/> come out more accurate.</param>
    /// <param name="powerIterations">Each sharpens the subspace by the spectrum's decay ratio.</param>
    public static SvdResult Compute(ReadOnlySpan<double> m, int rows, int cols, int rank, int oversample = 8, int powerIterations = 4, ulong seed = 42)
    {
        if ((long)rows * cols != m.Length) throw new ArgumentException($"matrix holds {m.Length} values, expected {rows} x {cols}");
        int full = Math.Min(rows, cols);
        rank = Math.Clamp(rank, 1, full);
        int k = Math.Min(rank + Math.Max(oversample, 0), full);

        // Y = M Omega (rows, k), Omega Gaussian (cols, k).
        var rng = new Gaussian(seed);
        var omega = new double[cols * k];
        for (int i = 0; i < omega.Length; i++) omega[i] = rng.Next();
        var q = new double[rows * k];
        MulNN(m, rows, cols, omega, k, q);
        Orthonormalise(q, rows, k);
        var z = new double[cols * k];
        for (int it = 0; it < powerIterations; it++)
        {
            MulTN(m, rows, cols, q, k, z); // Z = M^T Q (cols, k)
            Orthonormalise(z, cols, k);
            MulNN(m, rows, cols, z, k, q); // Q = M Z (rows, k)
            Orthonormalise(q, rows, k);
        }

        // C = (Q^T M)^T = M^T Q (cols, k); one-sided Jacobi makes its columns orthogonal: C V = C'.
        var c = new double[cols * k];
        MulTN(m, rows, cols, q, k, c);
        var v = new double[k * k];
        for (int i = 0; i < k; i++) v[i * k + i] = 1;
        Jacobi(c, cols, k, v);

        // Q^T M = V C'^T = V diag(sigma) W^T, so M ~ (Q V) diag(sigma) W^T with W = C' / sigma (cols, k).
        var sigma = new double[k];
        for (int j = 0; j < k; j++)
        {
            double s = 0;
            for (int i = 0; i < cols; i++) s += c[i * k + j] * c[i * k + j];
            sigma[j] = Math.Sqrt(s);
        }
        var order = Enumerable.Range(0, k).OrderByDescending(j => sigma[j]).ThenBy(j => j).Take(rank).ToArray();
        var u = new double[rows * rank];
        var vt = new double[rank * cols];
        var sv = new double[rank];
        for (int a = 0; a < rank; a++)
        {
            int j = order[a];
            sv[a] = sigma[j];
            double inv = sigma[j] > 0 ? 1 / sigma[j] : 0;
            for (int i = 0; i < cols; i++) vt[a * cols + i] = c[i * k + j] * inv;
            for (int r = 0; r < rows; r++)
            {
                double s = 0;
                for (int t = 0; t < k; t++) s += q[r * k + t] * v[t * k + j];
                u[r * rank + a] = s;
            }
        }
        return new SvdResult(rows, cols, rank, u, sv, vt);
    }

    /// <summary>y (rows, k) = M (rows, cols) x (cols, k).</summary>
    private static void MulNN(ReadOnlySpan<double> m, int rows, int cols, double[] x, int k, double[] y)
    {
        Array.Clear(y, 0, rows * k);
        for (int r = 0; r < rows; r++)
        {
            var yr = y.AsSpan(r * k, k);
            for (int c = 0; c < cols; c++)
            {
                double w = m[r * cols + c];
                if (w != 0) System.Numerics.Tensors.TensorPrimitives.MultiplyAdd(x.AsSpan(c * k, k), w, yr, yr);
            }
        }
    }

    /// <summary>y (cols, k) = M^T (cols, rows) x (rows, k).</summary>
    private static void MulTN(ReadOnlySpan<double> m, int rows, int cols, double[] x, int k, double[] y)
    {
        Array.Clear(y, 0, cols * k);
        for (int r = 0; r < rows; r++)
        {
            var xr = x.AsSpan(r * k, k);
            for (int c = 0; c < cols; c++)
            {
                double w = m[r * cols + c];
                if (w != 0)
                {
                    var yc = y.AsSpan(c * k, k);
                    System.Numerics.Tensors.TensorPrimitives.MultiplyAdd(xr, w, yc, yc);
                }
            }
        }
    }

    /// <summary>Modified Gram-Schmidt, twice (so orthogonality holds to rounding), on the k columns of a (n, k) matrix.</summary>
    internal static void Orthonormalise(double[] a, int n, int k)
    {
        for (int pass = 0; pass < 2; pass++)
            for (int j = 0; j < k; j++)
            {
                for (int p = 0; p < j; p++)
                {
                    double d = 0;
                    for (int i = 0; i < n; i++) d += a[i * k + p] * a[i * k + j];
                    for (int i = 0; i < n; i++) a[i * k + j] -= d * a[i * k + p];
                }
                double s = 0;
                for (int i = 0; i < n; i++) s += a[i * k + j] * a[i * k + j];
                double norm = Math.Sqrt(s);
                double inv = norm > 1e-300 ? 1 / norm : 0; // an exactly dependent column stays zero
                for (int i = 0; i < n; i++) a[i * k + j] *= inv;
            }
    }

    /// <summary>One-sided Jacobi (Hestenes): rotates column pairs of c (n, k) until orthogonal, accumulating the rotations in v (k, k).</summary>
    private static void Jacobi(double[] c, int n, int k, double[] v)
    {
        for (int sweep = 0; sweep < 60; sweep++)
        {
            double off = 0;
            for (int p = 0; p < k - 1; p++)
                for (int r = p + 1; r < k; r++)
                {
                    double alpha = 0, beta = 0, gamma = 0;
                    for (int i = 0; i < n; i++)
                    {
                        double x = c[i * k + p], y = c[i * k + r];
                        alpha += x * x;
                        beta += y * y;
                        gamma += x * y;
                    }
                    if (gamma == 0 || Math.Abs(gamma) <= 1e-15 * Math.Sqrt(alpha * beta)) continue;
                    off = Math.Max(off, Math.Abs(gamma) / Math.Sqrt(alpha * beta));
                    double zeta = (beta - alpha) / (2 * gamma);
                    double t = Math.Sign(zeta == 0 ? 1 : zeta) / (Math.Abs(zeta) + Math.Sqrt(1 + zeta * zeta));
                    double cs = 1 / Math.Sqrt(1 + t * t), sn = cs * t;
                    for (int i = 0; i < n; i++)
                    {
                        double x = c[i * k + p], y = c[i * k + r];
                        c[i * k + p] = cs * x - sn * y;
                        c[i * k + r] = sn * x + cs * y;
                    }
                    for (int i = 0; i < k; i++)
                    {
                        double x = v[i * k + p], y = v[i * k + r];
                        v[i * k + p] = cs * x - sn * y;
                        v[i * k + r] = sn * x + cs * y;
                    }
                }
            if (off <= 1e-15) return;
        }
    }

    /// <summary>Standard normal deviates from splitmix64 + Box-Muller: the same numbers on every platform.</summary>
    internal sealed class Gaussian(ulong seed)
    {
        private ulong _state = seed;
        private double? _spare;

        public double Next()
        {
            if (_spare is { } s)
            {
                _spare = null;
                return s;
            }
            double u1 = (NextULong() >> 11) * (1.0 / (1UL << 53)), u2 = (NextULong() >> 11) * (1.0 / (1UL << 53));
            if (u1 < 1e-300) u1 = 1e-300;
            double radius = Math.Sqrt(-2 * Math.Log(u1)), angle = 2 * Math.PI * u2;
            _spare = radius * Math.Sin(angle);
            return radius * Math.Cos(angle);
        }

        public ulong NextULong()
        {
            ulong z = _state += 0x9E3779B97F4A7C15UL;
            z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
            z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
            return z ^ (z >> 31);
        }
    }
}
