using System.Numerics.Tensors;
using FlashLm.Formats;
using FlashLm.Kernels;

namespace FlashLm.Models.Opt;

/// <summary>Attention-side weights of one OPT block (pre-LayerNorm, biased projections).</summary>
public sealed class OptBlock
{
    public required float[] AttnNormW { get; init; }  // (dim)
    public required float[] AttnNormB { get; init; }  // (dim)
    public required Matrix Wq { get; init; }          // (dim, dim)
    public required float[] Bq { get; init; }         // (dim)
    public required Matrix Wk { get; init; }          // (dim, dim)
    public required float[] Bk { get; init; }         // (dim)
    public required Matrix Wv { get; init; }          // (dim, dim)
    public required float[] Bv { get; init; }         // (dim)
    public required Matrix Wo { get; init; }          // (dim, dim)
    public required float[] Bo { get; init; }         // (dim)
    public required float[] FfnNormW { get; init; }   // (dim)
    public required float[] FfnNormB { get; init; }   // (dim)

    public long Bytes =>
        Wq.Bytes + Wk.Bytes + Wv.Bytes + Wo.Bytes
        + 4L * (AttnNormW.Length + AttnNormB.Length + Bq.Length + Bk.Length + Bv.Length + Bo.Length + FfnNormW.Length + FfnNormB.Length);
}

/// <summary>Dense ReLU FFN with biases: fc2(relu(fc1 x + b1)) + b2.</summary>
public sealed class DenseRelu : IFeedForward
{
    private readonly Matrix[] _up, _down;       // (hidden, dim), (dim, hidden)
    private readonly float[][] _upB, _downB;    // (hidden), (dim)

    public DenseRelu(ModelSource source)
    {
        int n = source.Config.Layers;
        _up = new Matrix[n];
        _down = new Matrix[n];
        _upB = new float[n][];
        _downB = new float[n][];
        for (int l = 0; l < n; l++)
        {
            _up[l] = Matrix.Load(source, TensorNames.Block(l, TensorNames.FfnUp));
            _down[l] = Matrix.Load(source, TensorNames.Block(l, TensorNames.FfnDown));
            _upB[l] = source.ReadF32(TensorNames.Block(l, TensorNames.FfnUpBias));
            _downB[l] = source.ReadF32(TensorNames.Block(l, TensorNames.FfnDownBias));
        }
    }

    public long Bytes => _up.Sum(m => m.Bytes) + _down.Sum(m => m.Bytes) + 4L * (_upB.Sum(b => b.Length) + _downB.Sum(b => b.Length));

    /// <summary>Applied to each layer's activations before the down projection (see <see cref="NeuronMask"/>).</summary>
    public NeuronMask? Mask { get; set; }

    public void Compute(int layer, float[] input, float[] output, InferenceState s)
    {
        _up[layer].Multiply(input, s.Hb);
        TensorPrimitives.Add(s.Hb, _upB[layer], s.Hb);
        Norms.Relu(s.Hb);
        Mask?.Invoke(layer, input, s.Hb);
        _down[layer].Multiply(s.Hb, output);
        TensorPrimitives.Add(output, _downB[layer], output);
    }
}

/// <summary>
/// OPT decoder (as Hugging Face's OPTForCausalLM with do_layer_norm_before): token + learned position
/// embeddings (position p at row p + 2), pre-LayerNorm blocks, biased multi-head attention, ReLU FFN,
/// final LayerNorm, LM head tied to the token embedding unless given.
/// </summary>
public sealed class OptModel : ITransformer
{
    private readonly Matrix _embedding;   // (vocab, dim)
    private readonly Matrix _positions;   // (context + offset, dim)
    private readonly OptBlock[] _blocks;
    private readonly float[] _finalW, _finalB; // (dim)
    private readonly Matrix _classifier;  // (vocab, dim)
    private readonly IFeedForward _ffn;

    public ModelConfig Config { get; }

    public OptModel(ModelSource source, IFeedForward? ffn = null, MatrixLoader? attention = null)
    {
        var load = attention ?? Matrix.Load;
        var c = Config = source.Config;
        if (c.Architecture != Architecture.Opt) throw new ArgumentException($"{source.Path}: not an OPT model ({c.Architecture})");
        _embedding = Matrix.Load(source, TensorNames.TokenEmbedding);
        _positions = Matrix.Load(source, TensorNames.PositionEmbedding);
        _blocks = new OptBlock[c.Layers];
        for (int l = 0; l < c.Layers; l++)
        {
            string B(string part) => TensorNames.Block(l, part);
            _blocks[l] = new OptBlock
            {
                AttnNormW = source.ReadF32(B(TensorNames.AttnNorm)),
                AttnNormB = source.ReadF32(B(TensorNames.AttnNormBias)),
                Wq = load(source, B(TensorNames.AttnQ)),
                Bq = source.ReadF32(B(TensorNames.AttnQBias)),
                Wk = load(source, B(TensorNames.AttnK)),
                Bk = source.ReadF32(B(TensorNames.AttnKBias)),
                Wv = load(source, B(TensorNames.AttnV)),
                Bv = source.ReadF32(B(TensorNames.AttnVBias)),
                Wo = load(source, B(TensorNames.AttnOutput)),
                Bo = source.ReadF32(B(TensorNames.AttnOutputBias)),
                FfnNormW = source.ReadF32(B(TensorNames.FfnNorm)),
                FfnNormB = source.ReadF32(B(TensorNames.FfnNormBias)),
            };
        }
        _finalW = source.ReadF32(TensorNames.OutputNorm);
        _finalB = source.ReadF32(TensorNames.OutputNormBias);
        _classifier = c.TiedEmbeddings ? _embedding : Matrix.Load(source, TensorNames.Output);
        _ffn = ffn ?? new DenseRelu(source);
    }

    public long WeightBytes =>
        _embedding.Bytes + _positions.Bytes + _blocks.Sum(b => b.Bytes) + 8L * _finalW.Length
        + (ReferenceEquals(_classifier, _embedding) ? 0 : _classifier.Bytes) + _ffn.Bytes;

    public InferenceState CreateState(int positions) => new(Config, positions);

    public IFeedForward Ffn => _ffn;

    public float[] Forward(InferenceState s, int token, int pos) => ForwardPass.Run(this, s, token, pos);

    public void Embed(InferenceState s, int token, int pos)
    {
        _embedding.CopyRow(token, s.X);
        _positions.CopyRow(pos + Config.PositionOffset, s.Xb); // Xb is free until the first norm
        TensorPrimitives.Add(s.X, s.Xb, s.X);
    }

    public void Attend(InferenceState s, int l, int pos)
    {
        var c = Config;
        int kvDim = c.KvDim;
        var b = _blocks[l];
        Norms.LayerNorm(s.X, b.AttnNormW, b.AttnNormB, s.Xb, c.NormEps);
        int cacheRow = (int)(((long)l * s.Positions + pos) * kvDim);
        b.Wq.Multiply(s.Xb, s.Q);
        TensorPrimitives.Add(s.Q, b.Bq, s.Q);
        b.Wk.Multiply(s.Xb, 0, s.KeyCache, cacheRow);
        var k = s.KeyCache.AsSpan(cacheRow, kvDim);
        TensorPrimitives.Add(k, b.Bk, k);
        b.Wv.Multiply(s.Xb, 0, s.ValueCache, cacheRow);
        var v = s.ValueCache.AsSpan(cacheRow, kvDim);
        TensorPrimitives.Add(v, b.Bv, v);

        Attention.Run(s, l, pos, c.Heads, c.KvHeads, c.HeadSize);
        b.Wo.Multiply(s.AttnOut, s.Xb2);
        TensorPrimitives.Add(s.Xb2, b.Bo, s.Xb2);
        TensorPrimitives.Add(s.X, s.Xb2, s.X);

        Norms.LayerNorm(s.X, b.FfnNormW, b.FfnNormB, s.Xb, c.NormEps);
    }

    public void AddFfnOutput(InferenceState s) => TensorPrimitives.Add(s.X, s.Xb2, s.X);

    public float[] Head(InferenceState s)
    {
        Norms.LayerNorm(s.X, _finalW, _finalB, s.X, Config.NormEps);
        _classifier.Multiply(s.X, s.Logits);
        return s.Logits;
    }
}
