using System.Numerics.Tensors;
using FlashLm.Kernels;

namespace FlashLm.Models;

/// <summary>Causal multi-head attention over the KV cache with grouped-query heads (llama2.c's loop).</summary>
public static class Attention
{
    /// <summary>
    /// Writes the attention output for position <paramref name="pos"/> of layer <paramref name="layer"/> into s.AttnOut,
    /// reading s.Q (heads * headSize) and the cache rows 0..pos (already holding this position's k, v).
    /// </summary>
    public static void Run(InferenceState s, int layer, int pos, int heads, int kvHeads, int headSize)
    {
        int kvDim = kvHeads * headSize;
        int kvMul = heads / kvHeads;
        long layerOffset = (long)layer * s.Positions * kvDim;
        float scale = MathF.Sqrt(headSize);
        for (int h = 0; h < heads; h++)
        {
            var q = s.Q.AsSpan(h * headSize, headSize);
            var att = s.Att.AsSpan(h * s.Positions, pos + 1);
            int kvHead = (h / kvMul) * headSize;
            for (int t = 0; t <= pos; t++)
            {
                var k = s.KeyCache.AsSpan((int)(layerOffset + (long)t * kvDim + kvHead), headSize);
                att[t] = TensorPrimitives.Dot(q, k) / scale;
            }
            Norms.Softmax(att);
            var xb = s.AttnOut.AsSpan(h * headSize, headSize);
            xb.Clear();
            for (int t = 0; t <= pos; t++)
            {
                var v = s.ValueCache.AsSpan((int)(layerOffset + (long)t * kvDim + kvHead), headSize);
                TensorPrimitives.MultiplyAdd(v, att[t], xb, xb);
            }
        }
    }
}
