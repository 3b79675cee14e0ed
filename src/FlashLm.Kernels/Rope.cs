namespace FlashLm.Kernels;

/// <summary>
/// Rotary position embedding within each head: on interleaved pairs (i, i+1), as llama2.c and GGUF llama store q and k,
/// or on the two halves (i, i + headSize/2), NeoX style, as Qwen3 does (<c>halves</c>). Pair p turns by pos x theta^(-2p /
/// headSize) either way. Rotation angles are tabulated once per position: (positions, headSize / 2).
/// </summary>
public sealed class Rope
{
    private readonly float[] _cos;
    private readonly float[] _sin;
    private readonly int _half;

    public int HeadSize { get; }
    /// <summary>True: pairs are (i, i + headSize/2) (NeoX); false: (2i, 2i+1).</summary>
    public bool Halves { get; }

    public Rope(int headSize, int positions, float theta, bool halves = false)
    {
        HeadSize = headSize;
        Halves = halves;
        _half = headSize / 2;
        _cos = new float[positions * _half];
        _sin = new float[positions * _half];
        for (int pos = 0; pos < positions; pos++)
        {
            for (int p = 0; p < _half; p++)
            {
                // Same float arithmetic as run.c: freq = 1 / theta^(i / head_size), angle = pos * freq.
                float freq = 1.0f / MathF.Pow(theta, (2 * p) / (float)headSize);
                float val = pos * freq;
                _cos[pos * _half + p] = MathF.Cos(val);
                _sin[pos * _half + p] = MathF.Sin(val);
            }
        }
    }

    /// <summary>Bytes held by the angle tables.</summary>
    public long Bytes => (_cos.LongLength + _sin.LongLength) * 4;

    /// <summary>Bytes the angle tables take for <paramref name="positions"/> positions.</summary>
    public static long BytesFor(int headSize, int positions) => 2L * positions * (headSize / 2) * 4;

    /// <summary>Rotates every head of <paramref name="v"/> (length = heads * headSize) for position <paramref name="pos"/>.</summary>
    public void Apply(Span<float> v, int pos)
    {
        var c = _cos.AsSpan(pos * _half, _half);
        var s = _sin.AsSpan(pos * _half, _half);
        if (Halves)
        {
            for (int head = 0; head < v.Length; head += HeadSize)
                for (int p = 0; p < _half; p++)
                {
                    float v0 = v[head + p], v1 = v[head + p + _half];
                    v[head + p] = v0 * c[p] - v1 * s[p];
                    v[head + p + _half] = v0 * s[p] + v1 * c[p];
                }
            return;
        }
        for (int i = 0; i < v.Length; i += 2)
        {
            int p = (i % HeadSize) / 2;
            float v0 = v[i], v1 = v[i + 1];
            v[i] = v0 * c[p] - v1 * s[p];
            v[i + 1] = v0 * s[p] + v1 * c[p];
        }
    }
}
