using FlashLm.Formats;

namespace FlashLm.Models;

/// <summary>
/// A decoder that maps (token, position) to next-token logits, keeping its KV cache in an
/// <see cref="InferenceState"/> so several sequences can share one set of weights.
/// </summary>
public interface ITransformer
{
    ModelConfig Config { get; }

    /// <summary>Allocates the buffers and KV cache for sequences of up to <paramref name="positions"/> positions.</summary>
    InferenceState CreateState(int positions);

    /// <summary>
    /// Runs one position and returns the logits (vocab_size, owned by <paramref name="state"/>, valid until
    /// the next call). Positions must be fed in order 0, 1, 2, ...; nothing is allocated.
    /// </summary>
    float[] Forward(InferenceState state, int token, int pos);

    /// <summary>Bytes of weights held in DRAM.</summary>
    long WeightBytes { get; }

    /// <summary>Step 1 of a position: the input embedding into s.X.</summary>
    void Embed(InferenceState s, int token, int pos);

    /// <summary>
    /// Step 2, per layer: attention with its residual (s.X updated, k/v cached), then the FFN norm:
    /// leaves the FFN input in s.Xb.
    /// </summary>
    void Attend(InferenceState s, int layer, int pos);

    /// <summary>Step 3, per layer: the FFN output (in s.Xb2) added to the residual stream.</summary>
    void AddFfnOutput(InferenceState s);

    /// <summary>Step 4: final norm and LM head; returns s.Logits.</summary>
    float[] Head(InferenceState s);

    /// <summary>The FFN the dense <see cref="Forward"/> uses.</summary>
    IFeedForward Ffn { get; }
}

/// <summary>Shared forward-pass driver over the steps of <see cref="ITransformer"/>.</summary>
public static class ForwardPass
{
    public static float[] Run(ITransformer m, InferenceState s, int token, int pos)
    {
        var c = m.Config;
        if ((uint)token >= (uint)c.VocabSize) throw new ArgumentOutOfRangeException(nameof(token), $"token {token} is outside the vocabulary (0..{c.VocabSize - 1})");
        if ((uint)pos >= (uint)s.Positions) throw new ArgumentOutOfRangeException(nameof(pos), $"position {pos} is beyond the state's {s.Positions} positions");
        m.Embed(s, token, pos);
        for (int l = 0; l < c.Layers; l++)
        {
            m.Attend(s, l, pos);
            m.Ffn.Compute(l, s.Xb, s.Xb2, s);
            m.AddFfnOutput(s);
        }
        return m.Head(s);
    }
}

/// <summary>Per-sequence buffers and KV cache, allocated once (llama2.c's RunState).</summary>
public sealed class InferenceState
{
    public int Positions { get; }
    public float[] X { get; }      // (dim) residual stream
    public float[] Xb { get; }     // (dim) normed input / attention output
    public float[] Xb2 { get; }    // (dim)
    public float[] Hb { get; }     // (hidden_dim)
    public float[] Hb2 { get; }    // (hidden_dim)
    public float[] Q { get; }      // (q_dim = heads x head size; dim unless the head width is set apart)
    public float[] AttnOut { get; } // (q_dim) attention output, before the output projection
    public float[] Router { get; } // (experts) MoE router scores, then weights; empty for a dense FFN
    public float[] ExpertOut { get; } // (dim) MoE: one expert's output before it is weighted in; empty for a dense FFN
    public float[] K { get; }      // (kv_dim)
    public float[] V { get; }      // (kv_dim)
    public float[] Att { get; }    // (heads, positions) scores
    public float[] Logits { get; } // (vocab)
    public float[] KeyCache { get; }   // (layers, positions, kv_dim)
    public float[] ValueCache { get; } // (layers, positions, kv_dim)

    public InferenceState(ModelConfig c, int positions)
    {
        if (positions <= 0 || positions > c.ContextLength)
            throw new ArgumentOutOfRangeException(nameof(positions), $"positions {positions} must be in 1..{c.ContextLength} (the model's context length)");
        Positions = positions;
        X = new float[c.Dim];
        Xb = new float[c.Dim];
        Xb2 = new float[c.Dim];
        Hb = new float[c.HiddenDim];
        Hb2 = new float[c.HiddenDim];
        Q = new float[c.QDim];
        AttnOut = new float[c.QDim];
        Router = new float[c.Experts];
        ExpertOut = new float[c.MoE ? c.Dim : 0];
        K = new float[c.KvDim];
        V = new float[c.KvDim];
        Att = new float[c.Heads * positions];
        Logits = new float[c.VocabSize];
        KeyCache = new float[(long)c.Layers * positions * c.KvDim];
        ValueCache = new float[(long)c.Layers * positions * c.KvDim];
    }

    /// <summary>Bytes held by this state (KV cache and buffers).</summary>
    public long Bytes =>
        4L * (X.Length + Xb.Length + Xb2.Length + Hb.Length + Hb2.Length + Q.Length + AttnOut.Length + Router.Length + ExpertOut.Length
              + K.Length + V.Length + Att.Length + Logits.Length + KeyCache.LongLength + ValueCache.LongLength);

    /// <summary>Bytes a state for <paramref name="positions"/> positions would take.</summary>
    public static long BytesFor(ModelConfig c, int positions) =>
        4L * (3L * c.Dim + 2L * c.QDim + c.Experts + (c.MoE ? c.Dim : 0) + 2L * c.HiddenDim + 2L * c.KvDim + (long)c.Heads * positions + c.VocabSize
              + 2L * c.Layers * positions * c.KvDim);
}
