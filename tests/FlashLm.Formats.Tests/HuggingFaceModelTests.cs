using System.Runtime.InteropServices;
using FlashLm.Formats;
using FlashLm.Formats.HuggingFace;
using Xunit;
using static FlashLm.Tests.HuggingFaceTestModels;

namespace FlashLm.Tests;

public sealed class HuggingFaceModelTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    private static void AssertTensorsEqual(HfModel m, ModelConfig c, DType dtype)
    {
        Assert.Equal(TensorNames.Expected(c).Count, m.Tensors.Count);
        foreach (var (name, shape) in TensorNames.Expected(c))
        {
            Assert.Equal(dtype, m.Tensors[name].DType);
            Assert.Equal(shape, m.Tensors[name].Shape);
            var got = m.ReadF32(name);
            Assert.Equal(shape.Aggregate(1L, (a, b) => a * b), got.LongLength);
            for (long i = 0; i < got.LongLength; i++)
            {
                float want = Rounded(dtype, Value(name, i));
                if (BitConverter.SingleToUInt32Bits(want) != BitConverter.SingleToUInt32Bits(got[i]))
                    Assert.Fail($"{name}[{i}]: got {got[i]}, want {want}");
            }
        }
    }

    [Theory]
    [InlineData(DType.F32)]
    [InlineData(DType.F16)]
    [InlineData(DType.BF16)]
    public void Llama_folder_written_then_read_gives_same_config_and_canonical_tensors(DType dtype)
    {
        WriteLlama(_dir.Path, dtype);
        using var m = new HfModel(_dir.Path);
        Assert.Equal("huggingface", m.Format);
        Assert.Equal(Llama, m.Config);
        Assert.Equal((1, 2), (m.BosId, m.EosId));
        AssertTensorsEqual(m, Llama, dtype);
        Assert.Equal("spm", m.Tokenizer.Kind);
    }

    [Theory]
    [InlineData(DType.F32)]
    [InlineData(DType.F16)]
    public void Opt_folder_written_then_read_gives_same_config_and_canonical_tensors(DType dtype)
    {
        WriteOpt(_dir.Path, dtype);
        using var m = new HfModel(_dir.Path);
        Assert.Equal(Opt, m.Config);
        Assert.Equal(2, m.Config.PositionOffset);
        Assert.True(m.Config.TiedEmbeddings);
        Assert.Equal((2, 2), (m.BosId, m.EosId));
        Assert.Equal([Opt.ContextLength + 2L, Opt.Dim], m.Tensors[TensorNames.PositionEmbedding].Shape);
        AssertTensorsEqual(m, Opt, dtype);
        Assert.Equal("gpt2", m.Tokenizer.Kind);
    }

    [Fact]
    public void Opt_names_without_model_prefix_are_accepted()
    {
        WriteOpt(_dir.Path);
        PatchHeader(Path.Combine(_dir.Path, HfNames.SingleFile), h =>
        {
            foreach (var key in h.Select(p => p.Key).Where(k => k.StartsWith("model.")).ToList())
            {
                var v = h[key]!;
                h.Remove(key);
                h[key["model.".Length..]] = v;
            }
        });
        using var m = new HfModel(_dir.Path);
        AssertTensorsEqual(m, Opt, DType.F32);
    }

    [Fact]
    public void Llama_q_and_k_are_stored_in_hf_row_order_and_read_back_canonical()
    {
        WriteLlama(_dir.Path);
        var st = SafetensorsFile.Open(Path.Combine(_dir.Path, HfNames.SingleFile));
        var bytes = File.ReadAllBytes(st.FilePath);
        int hs = Llama.HeadSize, cols = Llama.Dim;
        foreach (var (hf, canonical) in new[] { ("model.layers.1.self_attn.q_proj.weight", "blk.1.attn_q.weight"), ("model.layers.0.self_attn.k_proj.weight", "blk.0.attn_k.weight") })
        {
            var e = st.Tensors[hf];
            var stored = MemoryMarshal.Cast<byte, float>(bytes.AsSpan((int)e.Offset, (int)e.ByteLength));
            long rows = e.Shape[0];
            bool anyMoved = false;
            for (long r = 0; r < rows; r++)
            {
                long c = RopePermutation.CanonicalRowOfHfRow(r, hs);
                anyMoved |= c != r;
                for (int j = 0; j < cols; j++)
                    Assert.Equal(Value(canonical, c * cols + j), stored[(int)(r * cols + j)]);
            }
            Assert.True(anyMoved);
        }
        // V is not permuted.
        var v = st.Tensors["model.layers.0.self_attn.v_proj.weight"];
        Assert.Equal(Value("blk.0.attn_v.weight", 5), MemoryMarshal.Cast<byte, float>(bytes.AsSpan((int)v.Offset, 64))[5]);
    }

    [Fact]
    public void Hf_row_order_on_a_hand_made_two_head_example()
    {
        // Two heads of size 4, one column: canonical rows c0..c7 (interleaved pairs (c0,c1), (c2,c3), ...).
        // HF's conversion permutes each head with view(hs/2, 2).transpose, i.e. first elements then second elements:
        // head 0 -> [c0, c2, c1, c3], head 1 -> [c4, c6, c5, c7].
        float[] hf = [0, 2, 1, 3, 4, 6, 5, 7];
        RopePermutation.HfToCanonical(hf.AsSpan(), 1, 4);
        Assert.Equal([0f, 1, 2, 3, 4, 5, 6, 7], hf);
        Assert.Equal(new long[] { 0, 2, 1, 3, 4, 6, 5, 7 }, Enumerable.Range(0, 8).Select(r => RopePermutation.CanonicalRowOfHfRow(r, 4)));
        for (long r = 0; r < 8; r++)
            Assert.Equal(r, RopePermutation.HfRowOfCanonicalRow(RopePermutation.CanonicalRowOfHfRow(r, 4), 4));
    }

    [Fact]
    public void Rotate_half_rope_on_hf_rows_equals_interleaved_rope_on_canonical_rows()
    {
        // The point of the permutation: HF's rotate_half RoPE over its stored q equals FlashLm's interleaved
        // RoPE over the canonical q, row for row.
        const int heads = 2, hs = 8, half = hs / 2;
        var rnd = new Random(7);
        var q = Enumerable.Range(0, heads * hs).Select(_ => (float)rnd.NextDouble() - 0.5f).ToArray(); // canonical q = W x
        var qHf = new float[q.Length];
        for (int r = 0; r < q.Length; r++) qHf[r] = q[RopePermutation.CanonicalRowOfHfRow(r, hs)];
        int pos = 5;
        var inter = (float[])q.Clone();
        var rot = (float[])qHf.Clone();
        for (int h = 0; h < heads; h++)
            for (int i = 0; i < half; i++)
            {
                double freq = Math.Pow(10000, -2.0 * i / hs), a = pos * freq;
                float cos = (float)Math.Cos(a), sin = (float)Math.Sin(a);
                int b = h * hs;
                (float x0, float x1) = (q[b + 2 * i], q[b + 2 * i + 1]);
                inter[b + 2 * i] = x0 * cos - x1 * sin;
                inter[b + 2 * i + 1] = x0 * sin + x1 * cos;
                (float y0, float y1) = (qHf[b + i], qHf[b + i + half]);
                rot[b + i] = y0 * cos - y1 * sin;
                rot[b + i + half] = y1 * cos + y0 * sin;
            }
        for (int r = 0; r < q.Length; r++)
            Assert.Equal(inter[RopePermutation.CanonicalRowOfHfRow(r, hs)], rot[r]);
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void Sharded_folder_round_trips(bool llama)
    {
        const long shard = 16 << 10;
        if (llama) WriteLlama(_dir.Path, DType.F32, shard); else WriteOpt(_dir.Path, DType.F32, shard);
        Assert.True(File.Exists(Path.Combine(_dir.Path, HfNames.IndexFile)));
        Assert.False(File.Exists(Path.Combine(_dir.Path, HfNames.SingleFile)));
        var shards = Directory.GetFiles(_dir.Path, "model-*-of-*.safetensors");
        Assert.True(shards.Length > 2, $"{shards.Length} shards");
        foreach (var s in shards)
        {
            var f = SafetensorsFile.Open(s);
            // A shard exceeds the limit only when it holds a single tensor larger than the limit.
            Assert.True(f.Tensors.Count == 1 || f.Tensors.Values.Sum(t => t.ByteLength) <= shard);
        }
        using var m = new HfModel(_dir.Path);
        var c = llama ? Llama : Opt;
        Assert.Equal(c, m.Config);
        AssertTensorsEqual(m, c, DType.F32);
    }

    [Fact]
    public void Writer_streams_in_bounded_chunks_and_reports_progress()
    {
        long maxChunk = 0, last = 0;
        var specs = Specs(Opt, DType.F16);
        HfWriter.Write(_dir.Path, Opt, specs, (s, first, chunk) =>
        {
            maxChunk = Math.Max(maxChunk, chunk.Length);
            Fill(s, first, chunk);
        }, Gpt2BpeTokenizer.CreateSynthetic(500), 2, 2, new SyncProgress(v => last = v));
        Assert.True(maxChunk <= HfWriter.ChunkElements);
        Assert.Equal(specs.Sum(s => s.ByteLength), last);
    }

    private sealed class SyncProgress(Action<long> report) : IProgress<long>
    {
        public void Report(long value) => report(value);
    }
}
