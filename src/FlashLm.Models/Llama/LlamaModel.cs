using FlashLm.Formats;
using FlashLm.Kernels;

namespace FlashLm.Models.Llama;

/// <summary>Attention-side weights of one Llama block (all in DRAM).</summary>
public sealed class LlamaBlock
{
    public required float[] AttnNorm { get; init; } // (dim)
    public required Matrix Wq { get; init; }        // (q_dim, dim)
    public required Matrix Wk { get; init; }        // (kv_dim, dim)
    public required Matrix Wv { get; init; }        // (kv_dim, dim)
    public required Matrix Wo { get; init; }        // (dim, q_dim)
    public required float[] FfnNorm { get; init; }  // (dim)
    public float[]? QNorm { get; init; }            // Qwen3: (head size), RMSNorm weights of every q head
    public float[]? KNorm { get; init; }            // Qwen3: (head size), of every k head

    public long Bytes => (AttnNorm.Length + FfnNorm.Length + (QNorm?.Length ?? 0) + (KNorm?.Length ?? 0)) * 4L + Wq.Bytes + Wk.Bytes + Wv.Bytes + Wo.Bytes;
}

/// <summary>
/// Dense gated FFN: down(act(gate x) * up x), all three matrices in DRAM, with the model's activation (SwiGLU: act = silu;
/// ReLU-fied Llama: relu or fatrelu, see <see cref="FfnActivation"/>). With per-layer thresholds it is the dense thresholded
/// model: SwiGLU zeroes neurons with |silu(gate x)| below the layer's threshold, ReLU/FATReLU those with gate x at or below
/// it (the activation sparsity the flash runtime exploits; the reference sparse runs are compared with). Without thresholds
/// SwiGLU is the plain dense model and ReLU/FATReLU use the model's own threshold (<see cref="ModelConfig.DefaultThreshold"/>).
/// </summary>
public sealed class DenseSwiGlu : IFeedForward
{
    private readonly Matrix[] _gate, _up, _down; // per layer: (hidden, dim), (hidden, dim), (dim, hidden)
    private readonly float[]? _thresholds;       // (layers) or null: the plain dense model (SwiGLU) / the model's own threshold (ReLU)
    private readonly FfnActivation _activation;

    public DenseSwiGlu(ModelSource source, IReadOnlyList<float>? thresholds = null)
    {
        if (source.Config.MoE)
            throw new ArgumentException($"{source.Path}: a mixture-of-experts model ({source.Config.Experts} experts) has no single dense FFN per layer; use DenseMoe (per-neuron thresholds do not apply to it yet)");
        if (thresholds is not null && thresholds.Count != source.Config.Layers)
            throw new ArgumentException($"{thresholds.Count} thresholds for {source.Config.Layers} layers");
        _activation = source.Config.Activation;
        _thresholds = thresholds?.ToArray()
                      ?? (source.Config.ReluGated ? Enumerable.Repeat(source.Config.DefaultThreshold, source.Config.Layers).ToArray() : null);
        int n = source.Config.Layers;
        _gate = new Matrix[n];
        _up = new Matrix[n];
        _down = new Matrix[n];
        for (int l = 0; l < n; l++)
        {
            _gate[l] = Matrix.Load(source, TensorNames.Block(l, TensorNames.FfnGate));
            _up[l] = Matrix.Load(source, TensorNames.Block(l, TensorNames.FfnUp));
            _down[l] = Matrix.Load(source, TensorNames.Block(l, TensorNames.FfnDown));
        }
    }

    /// <summary>Applied to each layer's activations before the down projection (see <see cref="NeuronMask"/>).</summary>
    public NeuronMask? Mask { get; set; }

    /// <summary>Called with each layer's gate pre-activations (hidden) before they are used (calibration).</summary>
    public Action<int, float[]>? ObserveGate { get; set; }

    public long Bytes => _gate.Sum(m => m.Bytes) + _up.Sum(m => m.Bytes) + _down.Sum(m => m.Bytes);

    public void Compute(int layer, float[] input, float[] output, InferenceState s)
    {
        Matrix.Multiply(input, 0, (_gate[layer], s.Hb, 0), (_up[layer], s.Hb2, 0)); // x quantized once, one fork/join
        ObserveGate?.Invoke(layer, s.Hb);
        if (_thresholds is { } t) Norms.GatedThresholded(_activation, s.Hb, s.Hb2, t[layer]);
        else Norms.SwiGlu(s.Hb, s.Hb2);
        Mask?.Invoke(layer, input, s.Hb);
        _down[layer].Multiply(s.Hb, output);
    }
}

/// <summary>
/// The Llama-2 decoder (RMSNorm, RoPE on interleaved pairs, grouped-query attention, SwiGLU FFN),
/// following llama2.c's forward pass step for step; with the family's variants: Qwen3 (per-head q/k RMSNorm, RoPE on
/// the two halves of each head, a head width of its own) and experts in place of the FFN (Mixtral, Qwen3-MoE: <see cref="DenseMoe"/>). Matrices keep their stored type (F32, F16 or quantized
/// blocks, see <see cref="Matrix"/>); the norms are always F32.
/// </summary>
public sealed class LlamaModel : ITransformer
{
    private readonly Matrix _embedding;    // (vocab, dim)
    private readonly LlamaBlock[] _blocks;  // (layers)
    private readonly float[] _finalNorm;   // (dim)
    private readonly Matrix _classifier;   // (vocab, dim); the embedding when tied
    private readonly IFeedForward _ffn;
    private readonly Rope _rope;

    public ModelConfig Config { get; }

    public LlamaModel(ModelSource source, IFeedForward? ffn = null, MatrixLoader? attention = null)
    {
        var load = attention ?? Matrix.Load;
        var c = Config = source.Config;
        if (c.Architecture != Architecture.Llama) throw new ArgumentException($"{source.Path}: not a Llama model ({c.Architecture})");
        _embedding = Matrix.Load(source, TensorNames.TokenEmbedding);
        _blocks = new LlamaBlock[c.Layers];
        for (int l = 0; l < c.Layers; l++)
        {
            string B(string part) => TensorNames.Block(l, part);
            _blocks[l] = new LlamaBlock
            {
                AttnNorm = source.ReadF32(B(TensorNames.AttnNorm)),
                Wq = load(source, B(TensorNames.AttnQ)),
                Wk = load(source, B(TensorNames.AttnK)),
                Wv = load(source, B(TensorNames.AttnV)),
                Wo = load(source, B(TensorNames.AttnOutput)),
                FfnNorm = source.ReadF32(B(TensorNames.FfnNorm)),
                QNorm = c.QkNorm ? source.ReadF32(B(TensorNames.AttnQNorm)) : null,
                KNorm = c.QkNorm ? source.ReadF32(B(TensorNames.AttnKNorm)) : null,
            };
        }
        _finalNorm = source.ReadF32(TensorNames.OutputNorm);
        _classifier = c.TiedEmbeddings ? _embedding : Matrix.Load(source, TensorNames.Output);
        _ffn = ffn ?? (c.MoE ? new DenseMoe(source) : new DenseSwiGlu(source));
        _rope = new Rope(c.HeadSize, c.ContextLength, c.RopeTheta, c.RopeHalves);
    }

    public long WeightBytes =>
        _embedding.Bytes + _blocks.Sum(b => b.Bytes) + _finalNorm.Length * 4L
        + (ReferenceEquals(_classifier, _embedding) ? 0 : _classifier.Bytes) + _ffn.Bytes + _rope.Bytes;

    public InferenceState CreateState(int positions) => new(Config, positions);

    public IFeedForward Ffn => _ffn;

    public float[] Forward(InferenceState s, int token, int pos) => ForwardPass.Run(this, s, token, pos);

    public void Embed(InferenceState s, int token, int pos) => _embedding.CopyRow(token, s.X);

    public void Attend(InferenceState s, int l, int pos)
    {
        var c = Config;
        int kvDim = c.KvDim;
        var b = _blocks[l];
        Norms.RmsNorm(s.X, b.AttnNorm, s.Xb, c.NormEps);

        // q, k, v for this position; k and v go straight into the cache row.
        int cacheRow = (int)(((long)l * s.Positions + pos) * kvDim);
        Matrix.Multiply(s.Xb, 0, (b.Wq, s.Q, 0), (b.Wk, s.KeyCache, cacheRow), (b.Wv, s.ValueCache, cacheRow)); // x quantized once, one fork/join
        var k = s.KeyCache.AsSpan(cacheRow, kvDim);
        if (b.QNorm is { } qNorm && b.KNorm is { } kNorm)
        {
            // Qwen3: every head of q and k RMS-normalised on its own, before the rotation.
            int hs = c.HeadSize;
            for (int h = 0; h < c.Heads; h++) Norms.RmsNorm(s.Q.AsSpan(h * hs, hs), qNorm, s.Q.AsSpan(h * hs, hs), c.NormEps);
            for (int h = 0; h < c.KvHeads; h++) Norms.RmsNorm(k.Slice(h * hs, hs), kNorm, k.Slice(h * hs, hs), c.NormEps);
        }
        _rope.Apply(s.Q, pos);
        _rope.Apply(k, pos);

        Attention.Run(s, l, pos, c.Heads, c.KvHeads, c.HeadSize);
        b.Wo.Multiply(s.AttnOut, s.Xb2);
        System.Numerics.Tensors.TensorPrimitives.Add(s.X, s.Xb2, s.X);

        Norms.RmsNorm(s.X, b.FfnNorm, s.Xb, c.NormEps);
    }

    public void AddFfnOutput(InferenceState s) => System.Numerics.Tensors.TensorPrimitives.Add(s.X, s.Xb2, s.X);

    public float[] Head(InferenceState s)
    {
        Norms.RmsNorm(s.X, _finalNorm, s.X, Config.NormEps);
        _classifier.Multiply(s.X, s.Logits);
        return s.Logits;
    }
}
