
namespace FlashLm.Models.Predictors;

/// <summary>Training settings. Defaults suit small models; the paper uses ranks 128..1024 at 4096 dims.</summary>
public sealed record PredictorTrainingOptions
{
    /// <summary>Bottleneck rank per layer (capped at min(dim, neurons)).</summary>
    public int Rank { get; init; } = 32;
    public int Epochs { get; init; } = 8;
    public int BatchSize { get; init; } = 32;
    /// <summary>Adam step size.</summary>
    public double LearningRate { get; init; } = 3e-3;
    /// <summary>Recall the decision thresholds aim for.</summary>
    public double TargetRecall { get; init; } = 0.95;
    /// <summary>Thresholds are picked on the training positions for TargetRecall + this, so held-out recall keeps the target.</summary>
    public double RecallMargin { get; init; } = 0.02;
    /// <summary>Logit scale k = LogitScale / RMS(score - t) over the training data.</summary>
    public double LogitScale { get; init; } = 4;
    public int SvdOversampling { get; init; } = 8;
    public int SvdPowerIterations { get; init; } = 4;
    /// <summary>Lookahead initialisation: ridge strength, relative to the mean input variance.</summary>
    public double RidgeLambda { get; init; } = 1e-3;
    public ulong Seed { get; init; } = 42;
}

/// <summary>One epoch of one layer: training loss, and recall / over-selection on the held-out positions at the head's natural decision (score &gt;= t).</summary>
public sealed record TrainingProgress(PredictorKind Kind, int Layer, int Epoch, double Loss, double HeldOutRecall, double HeldOutOverSelection);

/// <summary>Trains a <see cref="LowRankPredictor"/> per layer from <see cref="ActivitySamples"/>.</summary>
public static class PredictorTrainer
{
    /// <summary>
    /// Per layer: initialise the low-rank path from a truncated SVD (same-layer: of the gate/up projection W, so
    /// g^ ~ W x; lookahead: of the ridge-regression map from layer l-1's input to layer l's pre-activations), set the
    /// bias to the mean residual, train with balanced BCE and Adam, then pick the decision threshold for the target recall.
    /// </summary>
    public static LowRankPredictor Train(ActivitySamples data, PredictorKind kind, PredictorTrainingOptions? options = null, Action<TrainingProgress>? progress = null)
    {
        var o = options ?? new PredictorTrainingOptions();
        if (o.Epochs < 0 || o.BatchSize <= 0 || o.Rank <= 0) throw new ArgumentException("epochs must be >= 0, batch size and rank > 0");
        if (!(o.TargetRecall > 0 && o.TargetRecall <= 1)) throw new ArgumentException($"target recall {o.TargetRecall} is outside (0, 1]");
        var c = data.Config;
        var layers = new LowRankLayer[c.Layers];
        for (int l = 0; l < c.Layers; l++) layers[l] = TrainLayer(data, kind, l, o, progress);
        return new LowRankPredictor(kind, data.Head, c.Dim, c.HiddenDim, layers);
    }

    private static int InputLayer(PredictorKind kind, int layer) => kind == PredictorKind.Lookahead && layer > 0 ? layer - 1 : layer;

    private static LowRankLayer TrainLayer(ActivitySamples data, PredictorKind kind, int layer, PredictorTrainingOptions o, Action<TrainingProgress>? progress)
    {
        var c = data.Config;
        int dim = c.Dim, n = c.HiddenDim, rank = Math.Min(o.Rank, Math.Min(dim, n));
        int inLayer = InputLayer(kind, layer);
        var head = data.Head;
        double t = data.ActivityThresholds[layer];
        var train = data.Train;
        int N = train.Length;

        // Training inputs (N, dim), true pre-activations (N, n) and labels (N, n).
        var xs = new double[N * dim];
        var gs = new double[N * n];
        var ys = new byte[N * n];
        long positives = 0;
        for (int s = 0; s < N; s++)
        {
            var x = data.Input(inLayer, train[s]);
            for (int j = 0; j < dim; j++) xs[s * dim + j] = x[j];
            var g = data.PreActivation(layer, train[s]);
            for (int i = 0; i < n; i++)
            {
                gs[s * n + i] = g[i];
                if (data.IsActive(layer, g[i])) { ys[s * n + i] = 1; positives++; }
            }
        }
        long total = (long)N * n;
        // Balanced weights; a layer with no positives (or no negatives) falls back to equal weights.
        double wPos = positives > 0 && positives < total ? total / (2.0 * positives) : 1;
        double wNeg = positives > 0 && positives < total ? total / (2.0 * (total - positives)) : 1;

        // Logit scale from the spread of the true scores around the threshold.
        double ss = 0;
        for (long e = 0; e < total; e++)
        {
            double d = BalancedBce.Score(head, gs[e]) - t;
            ss += d * d;
        }
        double k = o.LogitScale / Math.Sqrt(Math.Max(ss / total, 1e-12));

        var p = Initialise(data, kind, layer, rank, xs, gs, N, o);

        // Adam over shuffled mini-batches (seeded per layer and kind, so each layer is reproducible on its own).
        var rng = new TruncatedSvd.Gaussian(o.Seed ^ ((ulong)(layer + 1) * 0x9E3779B97F4A7C15UL) ^ (ulong)kind);
        var grad = new LowRankParams(dim, rank, n);
        var adam = new Adam(p, o.LearningRate);
        var order = Enumerable.Range(0, N).ToArray();
        var bx = new double[o.BatchSize * dim];
        var by = new byte[o.BatchSize * n];
        for (int epoch = 1; epoch <= o.Epochs; epoch++)
        {
            for (int i = N - 1; i > 0; i--)
            {
                int j = (int)(rng.NextULong() % (ulong)(i + 1));
                (order[i], order[j]) = (order[j], order[i]);
            }
            double lossSum = 0;
            int batches = 0;
            for (int start = 0; start < N; start += o.BatchSize)
            {
                int b = Math.Min(o.BatchSize, N - start);
                for (int r = 0; r < b; r++)
                {
                    int s = order[start + r];
                    Array.Copy(xs, s * dim, bx, r * dim, dim);
                    Array.Copy(ys, s * n, by, r * n, n);
                }
                grad.Clear();
                lossSum += BalancedBce.LossAndGradient(p, head, t, k, wPos, wNeg, bx.AsSpan(0, b * dim), by.AsSpan(0, b * n), b, grad);
                batches++;
                adam.Step(p, grad);
            }
            if (progress is not null)
            {
                var (recall, over) = HeldOutAtNaturalThreshold(data, layer, inLayer, p, t);
                progress(new TrainingProgress(kind, layer, epoch, lossSum / Math.Max(batches, 1), recall, over));
            }
        }

        // To F32, then pick the decision threshold with the very scoring path inference uses.
        var weights = new LowRankLayer(rank, ToFloat(p.A), ToFloat(p.B), ToFloat(p.Bias), 0f, (float)t);
        var single = new LowRankPredictor(kind, head, dim, n, [weights]);
        var positiveScores = new List<float>();
        var scores = new float[n];
        var xf = new float[dim];
        for (int s = 0; s < N; s++)
        {
            for (int j = 0; j < dim; j++) xf[j] = (float)xs[s * dim + j];
            single.Scores(0, xf, scores);
            for (int i = 0; i < n; i++) if (ys[s * n + i] != 0) positiveScores.Add(scores[i]);
        }
        return weights with { DecisionThreshold = ThresholdForRecall(positiveScores, Math.Min(1.0, o.TargetRecall + o.RecallMargin)) };
    }

    /// <summary>
    /// The largest threshold that keeps at least <paramref name="recall"/> of the positives' scores (score &gt;= threshold),
    /// i.e. the least over-selection a monotone score allows for that recall.
    /// </summary>
    public static float ThresholdForRecall(List<float> positiveScores, double recall)
    {
        if (positiveScores.Count == 0) return float.MaxValue; // nothing is ever active: select (almost) nothing; finite, so JSON can hold it
        positiveScores.Sort();
        int drop = (int)Math.Floor((1 - recall) * positiveScores.Count + 1e-9);
        return positiveScores[Math.Clamp(drop, 0, positiveScores.Count - 1)];
    }

    private static LowRankParams Initialise(ActivitySamples data, PredictorKind kind, int layer, int rank, double[] xs, double[] gs, int N, PredictorTrainingOptions o)
    {
        var c = data.Config;
        int dim = c.Dim, n = c.HiddenDim;
        double[] m;
        if (kind == PredictorKind.SameLayer || layer == 0)
        {
            m = data.Weights[layer].Select(v => (double)v).ToArray();
        }
        else
        {
            m = RidgeMap(xs, gs, N, dim, n, o.RidgeLambda);
        }
        var svd = TruncatedSvd.Compute(m, n, dim, rank, o.SvdOversampling, o.SvdPowerIterations, o.Seed + (ulong)layer);
        var p = new LowRankParams(dim, svd.Rank, n);
        // Split the singular values evenly (B = U sqrt(S), A = sqrt(S) Vt) so both factors have the same scale for Adam.
        for (int a = 0; a < svd.Rank; a++)
        {
            double r = Math.Sqrt(svd.S[a]);
            for (int j = 0; j < dim; j++) p.A[a * dim + j] = r * svd.Vt[a * dim + j];
            for (int i = 0; i < n; i++) p.B[i * svd.Rank + a] = svd.U[i * svd.Rank + a] * r;
        }
        // Bias: the mean of what the rank-r path misses (includes the ReLU up bias and, for lookahead, the intercept).
        Span<double> h = new double[svd.Rank];
        var g = new double[n];
        var sum = new double[n];
        for (int s = 0; s < N; s++)
        {
            p.PreActivation(xs.AsSpan(s * dim, dim), h, g);
            for (int i = 0; i < n; i++) sum[i] += gs[s * n + i] - g[i];
        }
        for (int i = 0; i < n; i++) p.Bias[i] = sum[i] / Math.Max(N, 1);
        return p;
    }

    /// <summary>
    /// M (n, dim) minimising sum |g_s - M x_s|^2 + lambda |M|^2 over centred data: M = Gc^T Xc (Xc^T Xc + lambda I)^-1
    /// (Cholesky solve; lambda relative to the mean input variance).
    /// </summary>
    private static double[] RidgeMap(double[] xs, double[] gs, int N, int dim, int n, double relLambda)
    {
        var mx = new double[dim];
        var mg = new double[n];
        for (int s = 0; s < N; s++)
        {
            for (int j = 0; j < dim; j++) mx[j] += xs[s * dim + j];
            for (int i = 0; i < n; i++) mg[i] += gs[s * n + i];
        }
        for (int j = 0; j < dim; j++) mx[j] /= N;
        for (int i = 0; i < n; i++) mg[i] /= N;
        var xtx = new double[dim * dim];
        var xtg = new double[dim * n]; // (dim, n)
        var xc = new double[dim];
        for (int s = 0; s < N; s++)
        {
            for (int j = 0; j < dim; j++) xc[j] = xs[s * dim + j] - mx[j];
            for (int a = 0; a < dim; a++)
            {
                double v = xc[a];
                if (v == 0) continue;
                for (int b = 0; b < dim; b++) xtx[a * dim + b] += v * xc[b];
                for (int i = 0; i < n; i++) xtg[a * n + i] += v * (gs[s * n + i] - mg[i]);
            }
        }
        double trace = 0;
        for (int j = 0; j < dim; j++) trace += xtx[j * dim + j];
        double lambda = Math.Max(relLambda * trace / dim, 1e-9);
        for (int j = 0; j < dim; j++) xtx[j * dim + j] += lambda;
        Cholesky(xtx, dim);
        // Solve (XtX + lambda I) Mt = XtG column by column; Mt is (dim, n), M = Mt^T.
        var m = new double[n * dim];
        var col = new double[dim];
        for (int i = 0; i < n; i++)
        {
            for (int j = 0; j < dim; j++) col[j] = xtg[j * n + i];
            CholeskySolve(xtx, dim, col);
            for (int j = 0; j < dim; j++) m[i * dim + j] = col[j];
        }
        return m;
    }

    /// <summary>In place: the lower triangle of a becomes L with a = L L^T.</summary>
    private static void Cholesky(double[] a, int n)
    {
        for (int j = 0; j < n; j++)
        {
            double d = a[j * n + j];
            for (int k = 0; k < j; k++) d -= a[j * n + k] * a[j * n + k];
            if (!(d > 0)) throw new InvalidOperationException("ridge system is not positive definite");
            double l = Math.Sqrt(d);
            a[j * n + j] = l;
            for (int i = j + 1; i < n; i++)
            {
                double s = a[i * n + j];
                for (int k = 0; k < j; k++) s -= a[i * n + k] * a[j * n + k];
                a[i * n + j] = s / l;
            }
        }
    }

    private static void CholeskySolve(double[] l, int n, double[] b)
    {
        for (int i = 0; i < n; i++)
        {
            double s = b[i];
            for (int k = 0; k < i; k++) s -= l[i * n + k] * b[k];
            b[i] = s / l[i * n + i];
        }
        for (int i = n - 1; i >= 0; i--)
        {
            double s = b[i];
            for (int k = i + 1; k < n; k++) s -= l[k * n + i] * b[k];
            b[i] = s / l[i * n + i];
        }
    }

    private static (double Recall, double OverSelection) HeldOutAtNaturalThreshold(ActivitySamples data, int layer, int inLayer, LowRankParams p, double t)
    {
        int dim = p.Dim, n = p.Neurons;
        var x = new double[dim];
        var h = new double[p.Rank];
        var g = new double[n];
        long actual = 0, predicted = 0, hit = 0;
        foreach (var pos in data.HeldOut)
        {
            var xf = data.Input(inLayer, pos);
            for (int j = 0; j < dim; j++) x[j] = xf[j];
            p.PreActivation(x, h, g);
            var truth = data.PreActivation(layer, pos);
            for (int i = 0; i < n; i++)
            {
                bool a = data.IsActive(layer, truth[i]);
                bool q = BalancedBce.Score(data.Head, g[i]) >= t;
                if (a) actual++;
                if (q) predicted++;
                if (a && q) hit++;
            }
        }
        return (actual == 0 ? 1 : (double)hit / actual, actual == 0 ? 0 : (double)predicted / actual);
    }

    private static float[] ToFloat(double[] d)
    {
        var f = new float[d.Length];
        for (int i = 0; i < d.Length; i++) f[i] = (float)d[i];
        return f;
    }

    /// <summary>Adam (Kingma and Ba) with the usual betas.</summary>
    private sealed class Adam(LowRankParams shape, double lr)
    {
        private const double Beta1 = 0.9, Beta2 = 0.999, Eps = 1e-8;
        private readonly LowRankParams _m = new(shape.Dim, shape.Rank, shape.Neurons), _v = new(shape.Dim, shape.Rank, shape.Neurons);
        private int _t;

        public void Step(LowRankParams p, LowRankParams g)
        {
            _t++;
            double c1 = 1 - Math.Pow(Beta1, _t), c2 = 1 - Math.Pow(Beta2, _t);
            Update(p.A, g.A, _m.A, _v.A, c1, c2);
            Update(p.B, g.B, _m.B, _v.B, c1, c2);
            Update(p.Bias, g.Bias, _m.Bias, _v.Bias, c1, c2);
        }

        private void Update(double[] p, double[] g, double[] m, double[] v, double c1, double c2)
        {
            for (int i = 0; i < p.Length; i++)
            {
                m[i] = Beta1 * m[i] + (1 - Beta1) * g[i];
                v[i] = Beta2 * v[i] + (1 - Beta2) * g[i] * g[i];
                p[i] -= lr * (m[i] / c1) / (Math.Sqrt(v[i] / c2) + Eps);
            }
        }
    }
}
