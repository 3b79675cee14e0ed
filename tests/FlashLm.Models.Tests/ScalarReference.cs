using FlashLm.Formats;

namespace FlashLm.Tests;

/// <summary>
/// A plain, double-precision, loops-only forward pass of Llama (also Mixtral's experts and Qwen3's per-head q/k norms,
/// rotated halves and head width) and OPT, written for obviousness rather than
/// speed, to check FlashLm's optimized models against. Weights come from a <see cref="ModelSource"/> through
/// ReadF32 (canonical names, row-major [out, in]); the KV cache is a list per layer.
/// </summary>
public sealed class ScalarReference
{
    private readonly ModelConfig _c;
    private readonly Dictionary<string, double[]> _w = new();
    private readonly List<double[]>[] _keys, _values; // per layer, per position: (kv_dim)

    /// <param name="config">The hyper-parameters to compute with (default: the source's), e.g. to read the same weights with another activation.</param>
    public ScalarReference(ModelSource source, ModelConfig? config = null)
    {
        _c = config ?? source.Config;
        foreach (var (name, _) in TensorNames.Expected(_c))
        {
            var f = source.ReadF32(name);
            var d = new double[f.Length];
            for (int i = 0; i < f.Length; i++) d[i] = f[i];
            _w[name] = d;
        }
        _keys = new List<double[]>[_c.Layers];
        _values = new List<double[]>[_c.Layers];
        for (int l = 0; l < _c.Layers; l++)
        {
            _keys[l] = new();
            _values[l] = new();
        }
    }

    /// <summary>Logits (vocab) for <paramref name="token"/> at the next position (positions are fed in order 0, 1, ...).</summary>
    public double[] Forward(int token)
    {
        int pos = _keys[0].Count;
        return _c.Architecture == Architecture.Llama ? Llama(token, pos) : Opt(token, pos);
    }

    private double[] W(string name) => _w[name];
    private double[] B(int layer, string part) => _w[TensorNames.Block(layer, part)];

    private double[] Llama(int token, int pos)
    {
        int dim = _c.Dim, hs = _c.HeadSize;
        var x = Row(W(TensorNames.TokenEmbedding), token, dim);
        for (int l = 0; l < _c.Layers; l++)
        {
            var h = RmsNorm(x, B(l, TensorNames.AttnNorm));
            var q = MatVec(B(l, TensorNames.AttnQ), h, _c.QDim);
            var k = MatVec(B(l, TensorNames.AttnK), h, _c.KvDim);
            var v = MatVec(B(l, TensorNames.AttnV), h, _c.KvDim);
            if (_c.QkNorm)
            {
                // Qwen3: every head of q and of k RMS-normalised on its own.
                HeadNorm(q, B(l, TensorNames.AttnQNorm), hs);
                HeadNorm(k, B(l, TensorNames.AttnKNorm), hs);
            }
            // RoPE on interleaved pairs (2i, 2i+1) of every head (Qwen3: pairs (i, i + hs/2)), frequency theta^(-2i / head_size).
            Rope(q, pos, hs);
            Rope(k, pos, hs);
            _keys[l].Add(k);
            _values[l].Add(v);
            var att = Attend(l, q, 1.0 / Math.Sqrt(hs));
            var o = MatVec(B(l, TensorNames.AttnOutput), att, dim);
            for (int i = 0; i < dim; i++) x[i] += o[i];

            h = RmsNorm(x, B(l, TensorNames.FfnNorm));
            if (_c.MoE)
            {
                var moe = Experts(l, h);
                for (int i = 0; i < dim; i++) x[i] += moe[i];
                continue;
            }
            var gate = MatVec(B(l, TensorNames.FfnGate), h, _c.HiddenDim);
            var up = MatVec(B(l, TensorNames.FfnUp), h, _c.HiddenDim);
            var act = new double[_c.HiddenDim];
            for (int i = 0; i < act.Length; i++)
                act[i] = _c.Activation == FfnActivation.Silu
                    ? gate[i] / (1 + Math.Exp(-gate[i])) * up[i]           // silu(gate) * up
                    : (gate[i] > _c.DefaultThreshold ? gate[i] : 0) * up[i]; // relu(gate) * up, fatrelu: the threshold is t
            var down = MatVec(B(l, TensorNames.FfnDown), act, dim);
            for (int i = 0; i < dim; i++) x[i] += down[i];
        }
        x = RmsNorm(x, W(TensorNames.OutputNorm));
        return MatVec(W(_c.TiedEmbeddings ? TensorNames.TokenEmbedding : TensorNames.Output), x, _c.VocabSize);
    }

    private double[] Opt(int token, int pos)
    {
        int dim = _c.Dim, hs = _c.HeadSize;
        var x = Row(W(TensorNames.TokenEmbedding), token, dim);
        var p = Row(W(TensorNames.PositionEmbedding), pos + _c.PositionOffset, dim); // learned positions start at row 2
        for (int i = 0; i < dim; i++) x[i] += p[i];
        for (int l = 0; l < _c.Layers; l++)
        {
            var h = LayerNorm(x, B(l, TensorNames.AttnNorm), B(l, TensorNames.AttnNormBias));
            var q = Add(MatVec(B(l, TensorNames.AttnQ), h, dim), B(l, TensorNames.AttnQBias));
            for (int i = 0; i < dim; i++) q[i] *= 1.0 / Math.Sqrt(hs); // HF scales q (bias included) by head_size^-0.5
            var k = Add(MatVec(B(l, TensorNames.AttnK), h, _c.KvDim), B(l, TensorNames.AttnKBias));
            var v = Add(MatVec(B(l, TensorNames.AttnV), h, _c.KvDim), B(l, TensorNames.AttnVBias));
            _keys[l].Add(k);
            _values[l].Add(v);
            var att = Attend(l, q, 1.0);
            var o = Add(MatVec(B(l, TensorNames.AttnOutput), att, dim), B(l, TensorNames.AttnOutputBias));
            for (int i = 0; i < dim; i++) x[i] += o[i];

            h = LayerNorm(x, B(l, TensorNames.FfnNorm), B(l, TensorNames.FfnNormBias));
            var up = Add(MatVec(B(l, TensorNames.FfnUp), h, _c.HiddenDim), B(l, TensorNames.FfnUpBias));
            for (int i = 0; i < up.Length; i++) up[i] = Math.Max(0, up[i]);
            var down = Add(MatVec(B(l, TensorNames.FfnDown), up, dim), B(l, TensorNames.FfnDownBias));
            for (int i = 0; i < dim; i++) x[i] += down[i];
        }
        x = LayerNorm(x, W(TensorNames.OutputNorm), W(TensorNames.OutputNormBias));
        return MatVec(W(_c.TiedEmbeddings ? TensorNames.TokenEmbedding : TensorNames.Output), x, _c.VocabSize);
    }

    /// <summary>
    /// Mixture of experts: softmax of the router's logits, the top k experts by probability (ties: lower index), their
    /// probabilities renormalised, and the weighted sum of their SwiGLU FFNs (each expert's slab of the experts tensors).
    /// </summary>
    private double[] Experts(int l, double[] h)
    {
        int dim = _c.Dim, hid = _c.HiddenDim, n = _c.Experts;
        var p = MatVec(B(l, TensorNames.FfnRouter), h, n);
        double max = p.Max(), sum = 0;
        for (int e = 0; e < n; e++) sum += p[e] = Math.Exp(p[e] - max);
        for (int e = 0; e < n; e++) p[e] /= sum;
        var chosen = Enumerable.Range(0, n).OrderByDescending(e => p[e]).ThenBy(e => e).Take(_c.ExpertsUsed).ToArray();
        double total = chosen.Sum(e => p[e]);
        var y = new double[dim];
        foreach (var e in chosen)
        {
            var gate = MatVec(Slab(B(l, TensorNames.FfnGateExperts), e, hid * dim), h, hid);
            var up = MatVec(Slab(B(l, TensorNames.FfnUpExperts), e, hid * dim), h, hid);
            var act = new double[hid];
            for (int i = 0; i < hid; i++) act[i] = gate[i] / (1 + Math.Exp(-gate[i])) * up[i];
            var down = MatVec(Slab(B(l, TensorNames.FfnDownExperts), e, dim * hid), act, dim);
            for (int i = 0; i < dim; i++) y[i] += p[e] / total * down[i];
        }
        return y;
    }

    private static double[] Slab(double[] w, int index, int size) => w.AsSpan(index * size, size).ToArray();

    private void HeadNorm(double[] v, double[] w, int hs)
    {
        for (int head = 0; head < v.Length; head += hs)
        {
            var normed = RmsNorm(v.AsSpan(head, hs).ToArray(), w);
            normed.CopyTo(v, head);
        }
    }

    /// <summary>Causal attention of q (dim) over the cached positions of layer l; head h reads kv head h / (heads / kv_heads).</summary>
    private double[] Attend(int l, double[] q, double scale)
    {
        int hs = _c.HeadSize, group = _c.Heads / _c.KvHeads, n = _keys[l].Count;
        var result = new double[_c.QDim];
        for (int h = 0; h < _c.Heads; h++)
        {
            int kvOff = h / group * hs;
            var scores = new double[n];
            for (int t = 0; t < n; t++)
            {
                double s = 0;
                for (int i = 0; i < hs; i++) s += q[h * hs + i] * _keys[l][t][kvOff + i];
                scores[t] = s * scale;
            }
            double max = double.NegativeInfinity, sum = 0;
            for (int t = 0; t < n; t++) max = Math.Max(max, scores[t]);
            for (int t = 0; t < n; t++) sum += scores[t] = Math.Exp(scores[t] - max);
            for (int t = 0; t < n; t++)
                for (int i = 0; i < hs; i++)
                    result[h * hs + i] += scores[t] / sum * _values[l][t][kvOff + i];
        }
        return result;
    }

    private void Rope(double[] v, int pos, int hs)
    {
        if (_c.RopeHalves)
        {
            for (int head = 0; head < v.Length; head += hs)
                for (int i = 0; i < hs / 2; i++)
                {
                    double angle = pos * Math.Pow(_c.RopeTheta, -2.0 * i / hs);
                    double c = Math.Cos(angle), s = Math.Sin(angle), a = v[head + i], b = v[head + i + hs / 2];
                    v[head + i] = a * c - b * s;
                    v[head + i + hs / 2] = a * s + b * c;
                }
            return;
        }
        for (int i = 0; i < v.Length; i += 2)
        {
            int j = i % hs;
            double angle = pos * Math.Pow(_c.RopeTheta, -(double)j / hs);
            double c = Math.Cos(angle), s = Math.Sin(angle), a = v[i], b = v[i + 1];
            v[i] = a * c - b * s;
            v[i + 1] = a * s + b * c;
        }
    }

    private double[] RmsNorm(double[] x, double[] w)
    {
        double ss = 0;
        for (int i = 0; i < x.Length; i++) ss += x[i] * x[i];
        double r = 1 / Math.Sqrt(ss / x.Length + _c.NormEps);
        var o = new double[x.Length];
        for (int i = 0; i < x.Length; i++) o[i] = x[i] * r * w[i];
        return o;
    }

    private double[] LayerNorm(double[] x, double[] w, double[] b)
    {
        double mean = 0, var = 0;
        for (int i = 0; i < x.Length; i++) mean += x[i];
        mean /= x.Length;
        for (int i = 0; i < x.Length; i++) var += (x[i] - mean) * (x[i] - mean);
        var /= x.Length;
        double r = 1 / Math.Sqrt(var + _c.NormEps);
        var o = new double[x.Length];
        for (int i = 0; i < x.Length; i++) o[i] = (x[i] - mean) * r * w[i] + b[i];
        return o;
    }

    /// <summary>y (rows) = W (rows, x.Length) x.</summary>
    private static double[] MatVec(double[] w, double[] x, int rows)
    {
        int cols = x.Length;
        var y = new double[rows];
        for (int r = 0; r < rows; r++)
        {
            double s = 0;
            for (int c = 0; c < cols; c++) s += w[(long)r * cols + c] * x[c];
            y[r] = s;
        }
        return y;
    }

    private static double[] Row(double[] m, int row, int cols)
    {
        var o = new double[cols];
        for (int i = 0; i < cols; i++) o[i] = m[(long)row * cols + i];
        return o;
    }

    private static double[] Add(double[] a, double[] b)
    {
        for (int i = 0; i < a.Length; i++) a[i] += b[i];
        return a;
    }
}
