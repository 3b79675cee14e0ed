using System.Numerics.Tensors;

namespace FlashLm.Models.Predictors;

/// <summary>One layer's predictor parameters during training (double). A: (rank, dim), B: (neurons, rank), Bias: (neurons).</summary>
public sealed class LowRankParams(int dim, int rank, int neurons)
{
    public int Dim { get; } = dim;
    public int Rank { get; } = rank;
    public int Neurons { get; } = neurons;
    public double[] A { get; } = new double[rank * dim];
    public double[] B { get; } = new double[neurons * rank];
    public double[] Bias { get; } = new double[neurons];

    public void Clear()
    {
        Array.Clear(A);
        Array.Clear(B);
        Array.Clear(Bias);
    }

    /// <summary>g^ (neurons) = B (A x) + Bias; h (rank) receives A x.</summary>
    public void PreActivation(ReadOnlySpan<double> x, Span<double> h, Span<double> g)
    {
        for (int j = 0; j < Rank; j++) h[j] = TensorPrimitives.Dot(A.AsSpan(j * Dim, Dim), x);
        for (int i = 0; i < Neurons; i++) g[i] = TensorPrimitives.Dot(B.AsSpan(i * Rank, Rank), h) + Bias[i];
    }
}

/// <summary>
/// The paper's balanced binary cross-entropy on the head's logit z = k (score(g^) - t), with its analytic gradient.
/// Positives weigh N / (2 #pos) and negatives N / (2 #neg), so active and inactive neurons count equally
/// however sparse the layer is.
/// </summary>
public static class BalancedBce
{
    /// <summary>score(g): g (ReLU) or |silu(g)| (SwiGLU).</summary>
    public static double Score(PredictorHead head, double g) => head == PredictorHead.Relu ? g : Math.Abs(g * Sigmoid(g));

    /// <summary>d score / d g.</summary>
    public static double ScoreDerivative(PredictorHead head, double g)
    {
        if (head == PredictorHead.Relu) return 1;
        double s = Sigmoid(g);
        double dsilu = s * (1 + g * (1 - s));
        return g >= 0 ? dsilu : -dsilu; // sign(silu(g)) = sign(g)
    }

    public static double Sigmoid(double z) => z >= 0 ? 1 / (1 + Math.Exp(-z)) : Math.Exp(z) / (1 + Math.Exp(z));

    /// <summary>log(1 + e^z) without overflow.</summary>
    public static double Softplus(double z) => Math.Max(z, 0) + Math.Log(1 + Math.Exp(-Math.Abs(z)));

    /// <summary>
    /// Mean weighted loss over <paramref name="batch"/> samples x neurons; when <paramref name="grad"/> is given,
    /// adds the gradient of that mean to it.
    /// </summary>
    /// <param name="xs">(batch, dim) inputs.</param>
    /// <param name="labels">(batch, neurons) 1 = active.</param>
    /// <param name="t">The model's activity threshold on the score (0 for ReLU).</param>
    /// <param name="k">Logit scale.</param>
    public static double LossAndGradient(LowRankParams p, PredictorHead head, double t, double k, double wPos, double wNeg,
        ReadOnlySpan<double> xs, ReadOnlySpan<byte> labels, int batch, LowRankParams? grad)
    {
        int dim = p.Dim, rank = p.Rank, n = p.Neurons;
        Span<double> h = rank <= 512 ? stackalloc double[rank] : new double[rank];
        Span<double> dh = rank <= 512 ? stackalloc double[rank] : new double[rank];
        var g = new double[n];
        double scale = 1.0 / ((double)batch * n);
        double loss = 0;
        for (int b = 0; b < batch; b++)
        {
            var x = xs.Slice(b * dim, dim);
            var y = labels.Slice(b * n, n);
            p.PreActivation(x, h, g);
            if (grad is not null) dh.Clear();
            for (int i = 0; i < n; i++)
            {
                double z = k * (Score(head, g[i]) - t);
                bool active = y[i] != 0;
                double w = active ? wPos : wNeg;
                // BCE with logits: -[y log sigmoid(z) + (1 - y) log(1 - sigmoid(z))] = softplus(z) - y z.
                loss += w * (Softplus(z) - (active ? z : 0));
                if (grad is null) continue;
                double dz = w * (Sigmoid(z) - (active ? 1 : 0)) * scale;
                double dg = dz * k * ScoreDerivative(head, g[i]);
                if (dg == 0) continue;
                grad.Bias[i] += dg;
                var bRow = p.B.AsSpan(i * rank, rank);
                var gbRow = grad.B.AsSpan(i * rank, rank);
                TensorPrimitives.MultiplyAdd(h, dg, gbRow, gbRow);
                TensorPrimitives.MultiplyAdd(bRow, dg, dh, dh);
            }
            if (grad is null) continue;
            for (int j = 0; j < rank; j++)
            {
                var gaRow = grad.A.AsSpan(j * dim, dim);
                TensorPrimitives.MultiplyAdd(x, dh[j], gaRow, gaRow);
            }
        }
        return loss * scale;
    }
}
