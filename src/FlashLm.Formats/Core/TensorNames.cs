namespace FlashLm.Formats;

/// <summary>
/// Canonical tensor names (GGUF style) used by every reader. Shapes are row-major, outermost first,
/// so a projection is [out, in]: row i of ffn_up is neuron i's input weights.
/// </summary>
public static class TensorNames
{
    public const string TokenEmbedding = "token_embd.weight";      // (vocab, dim)
    public const string PositionEmbedding = "position_embd.weight"; // OPT: (context + offset, dim)
    public const string OutputNorm = "output_norm.weight";          // (dim)
    public const string OutputNormBias = "output_norm.bias";        // OPT: (dim)
    public const string Output = "output.weight";                   // (vocab, dim); absent when tied

    public static string Block(int layer, string part) => $"blk.{layer}.{part}";

    public const string AttnNorm = "attn_norm.weight";
    public const string AttnNormBias = "attn_norm.bias";
    public const string AttnQ = "attn_q.weight";
    public const string AttnK = "attn_k.weight";
    public const string AttnV = "attn_v.weight";
    public const string AttnOutput = "attn_output.weight";
    public const string AttnQBias = "attn_q.bias";
    public const string AttnKBias = "attn_k.bias";
    public const string AttnVBias = "attn_v.bias";
    public const string AttnOutputBias = "attn_output.bias";
    public const string FfnNorm = "ffn_norm.weight";
    public const string FfnNormBias = "ffn_norm.bias";
    public const string FfnGate = "ffn_gate.weight";
    public const string FfnUp = "ffn_up.weight";
    public const string FfnDown = "ffn_down.weight";
    public const string FfnUpBias = "ffn_up.bias";
    public const string FfnDownBias = "ffn_down.bias";
    public const string AttnQNorm = "attn_q_norm.weight";           // Qwen3: (head size), RMSNorm of every q head
    public const string AttnKNorm = "attn_k_norm.weight";           // Qwen3: (head size), RMSNorm of every k head
    public const string FfnRouter = "ffn_gate_inp.weight";          // MoE: (experts, dim), the router's logits
    public const string FfnGateExperts = "ffn_gate_exps.weight";    // MoE: (experts, hidden, dim)
    public const string FfnUpExperts = "ffn_up_exps.weight";        // MoE: (experts, hidden, dim)
    public const string FfnDownExperts = "ffn_down_exps.weight";    // MoE: (experts, dim, hidden)

    /// <summary>True for the tensors that live on flash in the flash layout (the FFN projections; a MoE model's experts).</summary>
    public static bool IsFfnMatrix(string name) =>
        name.EndsWith("." + FfnGate, StringComparison.Ordinal)
        || name.EndsWith("." + FfnUp, StringComparison.Ordinal)
        || name.EndsWith("." + FfnDown, StringComparison.Ordinal)
        || name.EndsWith("." + FfnGateExperts, StringComparison.Ordinal)
        || name.EndsWith("." + FfnUpExperts, StringComparison.Ordinal)
        || name.EndsWith("." + FfnDownExperts, StringComparison.Ordinal);

    /// <summary>Every tensor the architecture needs, with its expected shape.</summary>
    public static IReadOnlyList<(string Name, long[] Shape)> Expected(ModelConfig c)
    {
        var list = new List<(string, long[])>();
        long dim = c.Dim, hid = c.HiddenDim, kv = c.KvDim, vocab = c.VocabSize;
        list.Add((TokenEmbedding, [vocab, dim]));
        if (c.Architecture == Architecture.Opt)
            list.Add((PositionEmbedding, [c.ContextLength + c.PositionOffset, dim]));
        for (int l = 0; l < c.Layers; l++)
        {
            long q = c.QDim;
            list.Add((Block(l, AttnNorm), [dim]));
            list.Add((Block(l, AttnQ), [q, dim]));
            list.Add((Block(l, AttnK), [kv, dim]));
            list.Add((Block(l, AttnV), [kv, dim]));
            list.Add((Block(l, AttnOutput), [dim, q]));
            if (c.QkNorm)
            {
                list.Add((Block(l, AttnQNorm), [c.HeadSize]));
                list.Add((Block(l, AttnKNorm), [c.HeadSize]));
            }
            list.Add((Block(l, FfnNorm), [dim]));
            if (c.MoE)
            {
                long e = c.Experts;
                list.Add((Block(l, FfnRouter), [e, dim]));
                list.Add((Block(l, FfnGateExperts), [e, hid, dim]));
                list.Add((Block(l, FfnUpExperts), [e, hid, dim]));
                list.Add((Block(l, FfnDownExperts), [e, dim, hid]));
                continue;
            }
            if (c.Architecture == Architecture.Llama)
                list.Add((Block(l, FfnGate), [hid, dim]));
            list.Add((Block(l, FfnUp), [hid, dim]));
            list.Add((Block(l, FfnDown), [dim, hid]));
            if (c.Architecture == Architecture.Opt)
            {
                list.Add((Block(l, AttnNormBias), [dim]));
                list.Add((Block(l, AttnQBias), [dim]));
                list.Add((Block(l, AttnKBias), [kv]));
                list.Add((Block(l, AttnVBias), [kv]));
                list.Add((Block(l, AttnOutputBias), [dim]));
                list.Add((Block(l, FfnNormBias), [dim]));
                list.Add((Block(l, FfnUpBias), [hid]));
                list.Add((Block(l, FfnDownBias), [dim]));
            }
        }
        list.Add((OutputNorm, [dim]));
        if (c.Architecture == Architecture.Opt) list.Add((OutputNormBias, [dim]));
        if (!c.TiedEmbeddings) list.Add((Output, [vocab, dim]));
        return list;
    }

    public static string ShapeText(long[] shape) => "[" + string.Join(", ", shape) + "]";
}
