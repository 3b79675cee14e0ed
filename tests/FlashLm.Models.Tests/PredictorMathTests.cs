using FlashLm.Models.Predictors;
using Xunit;

namespace FlashLm.Tests.Predictors;

public sealed class PredictorMathTests
{
    private static double[] Random(int n, int seed)
    {
        var g = new TruncatedSvdTestRng(seed);
        var a = new double[n];
        for (int i = 0; i < n; i++) a[i] = g.Next();
        return a;
    }

    /// <summary>Plain uniform numbers in [-1, 1) (System.Random is fine for test data).</summary>
    private sealed class TruncatedSvdTestRng(int seed)
    {
        private readonly Random _r = new(seed);
        public double Next() => _r.NextDouble() * 2 - 1;
    }

    private static double[] Multiply(double[] a, double[] b, int n, int k, int m)
    {
        var c = new double[n * m];
        for (int i = 0; i < n; i++)
            for (int p = 0; p < k; p++)
                for (int j = 0; j < m; j++) c[i * m + j] += a[i * k + p] * b[p * m + j];
        return c;
    }

    [Fact]
    public void Truncated_svd_reconstructs_an_exactly_low_rank_matrix()
    {
        int rows = 70, cols = 45, rank = 5;
        var m = Multiply(Random(rows * rank, 1), Random(rank * cols, 2), rows, rank, cols);
        var svd = TruncatedSvd.Compute(m, rows, cols, rank, oversample: 4, powerIterations: 2, seed: 7);
        double err = 0, norm = 0;
        for (int i = 0; i < rows; i++)
            for (int j = 0; j < cols; j++)
            {
                double v = 0;
                for (int a = 0; a < rank; a++) v += svd.U[i * rank + a] * svd.S[a] * svd.Vt[a * cols + j];
                err += (v - m[i * cols + j]) * (v - m[i * cols + j]);
                norm += m[i * cols + j] * m[i * cols + j];
            }
        Assert.True(Math.Sqrt(err / norm) < 1e-10, $"relative error {Math.Sqrt(err / norm)}");
        // U has orthonormal columns and the values are sorted.
        for (int a = 0; a < rank; a++)
            for (int b = 0; b < rank; b++)
            {
                double d = 0;
                for (int i = 0; i < rows; i++) d += svd.U[i * rank + a] * svd.U[i * rank + b];
                Assert.Equal(a == b ? 1 : 0, d, 1e-10);
            }
        for (int a = 1; a < rank; a++) Assert.True(svd.S[a - 1] >= svd.S[a]);
        // Deterministic for a seed.
        Assert.Equal(svd.S, TruncatedSvd.Compute(m, rows, cols, rank, 4, 2, 7).S);
    }

    [Fact]
    public void Top_singular_values_of_a_random_matrix_match_power_iteration_with_deflation()
    {
        int rows = 60, cols = 40, rank = 3;
        var m = Random(rows * cols, 3);
        var svd = TruncatedSvd.Compute(m, rows, cols, rank, oversample: 10, powerIterations: 8, seed: 1);

        // Reference: power iteration on M^T M, deflating each found component.
        var mtm = new double[cols * cols];
        for (int i = 0; i < rows; i++)
            for (int a = 0; a < cols; a++)
                for (int b = 0; b < cols; b++) mtm[a * cols + b] += m[i * cols + a] * m[i * cols + b];
        for (int k = 0; k < rank; k++)
        {
            var v = Random(cols, 10 + k);
            double lambda = 0;
            for (int it = 0; it < 5000; it++)
            {
                var w = new double[cols];
                for (int a = 0; a < cols; a++)
                    for (int b = 0; b < cols; b++) w[a] += mtm[a * cols + b] * v[b];
                lambda = Math.Sqrt(w.Sum(x => x * x));
                for (int a = 0; a < cols; a++) v[a] = w[a] / lambda;
            }
            Assert.Equal(Math.Sqrt(lambda), svd.S[k], Math.Sqrt(lambda) * 1e-3);
            for (int a = 0; a < cols; a++)
                for (int b = 0; b < cols; b++) mtm[a * cols + b] -= lambda * v[a] * v[b];
        }
    }

    [Theory]
    [InlineData(PredictorHead.SiluMagnitude, 0.1)]
    [InlineData(PredictorHead.SiluMagnitude, 0.5)]
    [InlineData(PredictorHead.Relu, 0.0)]
    public void Balanced_bce_gradient_matches_finite_differences(PredictorHead head, double t)
    {
        int dim = 5, rank = 3, n = 7, batch = 4;
        var p = new LowRankParams(dim, rank, n);
        Random(p.A.Length, 1).CopyTo(p.A, 0);
        Random(p.B.Length, 2).CopyTo(p.B, 0);
        Random(p.Bias.Length, 3).CopyTo(p.Bias, 0);
        var xs = Random(batch * dim, 4).Select(v => 2 * v).ToArray();
        var labels = Random(batch * n, 5).Select(v => (byte)(v > 0.2 ? 1 : 0)).ToArray();
        double k = 3, wPos = 1.7, wNeg = 0.6;
        var grad = new LowRankParams(dim, rank, n);
        BalancedBce.LossAndGradient(p, head, t, k, wPos, wNeg, xs, labels, batch, grad);

        double Loss() => BalancedBce.LossAndGradient(p, head, t, k, wPos, wNeg, xs, labels, batch, null);
        foreach (var (param, g) in new[] { (p.A, grad.A), (p.B, grad.B), (p.Bias, grad.Bias) })
            for (int i = 0; i < param.Length; i++)
            {
                double keep = param[i], h = 1e-6;
                param[i] = keep + h;
                double up = Loss();
                param[i] = keep - h;
                double down = Loss();
                param[i] = keep;
                double numeric = (up - down) / (2 * h);
                Assert.True(Math.Abs(numeric - g[i]) <= 1e-7 + 1e-5 * Math.Abs(numeric), $"index {i}: analytic {g[i]}, numeric {numeric}");
            }
        Assert.True(grad.A.Any(v => v != 0) && grad.B.Any(v => v != 0));
    }

    [Fact]
    public void Balanced_weights_make_the_loss_of_a_constant_guess_equal_for_both_classes()
    {
        // z = 0 everywhere (score == t): every element costs w log 2, so the balanced mean is log 2 whatever the class ratio.
        var p = new LowRankParams(2, 1, 4);
        var xs = new double[] { 1, 2, 3, 4 };
        var labels = new byte[] { 1, 0, 0, 0, 1, 0, 0, 0 };
        double total = 8, pos = 2;
        double loss = BalancedBce.LossAndGradient(p, PredictorHead.Relu, 0, 1, total / (2 * pos), total / (2 * (total - pos)), xs, labels, 2, null);
        Assert.Equal(Math.Log(2), loss, 1e-12);
    }

    [Fact]
    public void Threshold_for_recall_keeps_the_requested_share_of_positives()
    {
        var scores = Enumerable.Range(0, 100).Select(i => (float)i).ToList();
        float t = PredictorTrainer.ThresholdForRecall(scores, 0.95);
        Assert.Equal(95, scores.Count(s => s >= t));
        Assert.Equal(0f, PredictorTrainer.ThresholdForRecall(scores, 1.0));
    }
}
