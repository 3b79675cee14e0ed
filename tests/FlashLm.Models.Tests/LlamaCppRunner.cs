using LLama;
using LLama.Common;
using LLama.Native;

namespace FlashLm.Tests;

/// <summary>
/// llama.cpp in-process (LLamaSharp 0.30.0, CPU backend) as a reference implementation: load a GGUF,
/// feed token ids, read the logits of every position. CPU only, no GPU layers, flash attention off, F32 KV cache.
/// </summary>
public sealed class LlamaCppRunner : IDisposable
{
    private readonly LLamaWeights _weights;
    private readonly LLamaContext _context;

    public int VocabSize { get; }

    public LlamaCppRunner(string ggufPath, int contextSize = 128, int threads = 2)
    {
        NativeLogConfig.llama_log_set((level, message) => { }); // keep llama.cpp's loader chatter out of the test log
        var p = new ModelParams(ggufPath)
        {
            ContextSize = (uint)contextSize,
            GpuLayerCount = 0,
            BatchSize = (uint)contextSize,
            UBatchSize = (uint)contextSize,
            Threads = threads,
            BatchThreads = threads,
            FlashAttention = false,
            // F32 KV cache: the default F16 cache rounds K and V and moves logits by ~1e-3.
            TypeK = GGMLType.GGML_TYPE_F32,
            TypeV = GGMLType.GGML_TYPE_F32,
        };
        _weights = LLamaWeights.LoadFromFile(p);
        _context = _weights.CreateContext(p);
        VocabSize = _context.Vocab.Count;
    }

    /// <summary>Clears the KV cache, feeds <paramref name="tokens"/> at positions 0.. in one batch; returns logits [position][vocab].</summary>
    public float[][] Logits(IReadOnlyList<int> tokens)
    {
        _context.NativeHandle.MemoryClear(true);
        var batch = new LLamaBatch();
        for (int i = 0; i < tokens.Count; i++) batch.Add((LLamaToken)tokens[i], (LLamaPos)i, LLamaSeqId.Zero, logits: true);
        var r = _context.Decode(batch);
        if (r != DecodeResult.Ok) throw new InvalidOperationException($"llama_decode failed: {r}");
        var result = new float[tokens.Count][];
        for (int i = 0; i < tokens.Count; i++) result[i] = _context.NativeHandle.GetLogitsIth(i).ToArray();
        return result;
    }

    /// <summary>Greedy decoding: feeds the prompt, then <paramref name="steps"/> argmax tokens one at a time; returns the generated ids.</summary>
    public int[] Greedy(IReadOnlyList<int> prompt, int steps)
    {
        var logits = Logits(prompt);
        var output = new int[steps];
        int next = ArgMax(logits[^1]);
        var batch = new LLamaBatch();
        for (int s = 0; s < steps; s++)
        {
            output[s] = next;
            if (s == steps - 1) break;
            batch.Clear();
            batch.Add((LLamaToken)next, (LLamaPos)(prompt.Count + s), LLamaSeqId.Zero, logits: true);
            var r = _context.Decode(batch);
            if (r != DecodeResult.Ok) throw new InvalidOperationException($"llama_decode failed: {r}");
            next = ArgMax(_context.NativeHandle.GetLogitsIth(0));
        }
        return output;
    }

    /// <summary>First index of the largest value (run.c's argmax tie rule).</summary>
    public static int ArgMax(ReadOnlySpan<float> x)
    {
        int best = 0;
        for (int i = 1; i < x.Length; i++) if (x[i] > x[best]) best = i;
        return best;
    }

    public void Dispose()
    {
        _context.Dispose();
        _weights.Dispose();
    }
}
