using FlashLm.Formats;
using FlashLm.Formats.Gguf;
using FlashLm.Formats.Llama2c;
using Xunit;

namespace FlashLm.Tests;

public sealed class GgufWriterTests
{
    [RequiresSharedModelsFact]
    public void Gguf_read_written_and_read_back_keeps_tensors_config_and_tokenizer()
    {
        var dir = Directory.CreateTempSubdirectory("flashlm-gguf-rt-");
        try
        {
            var path = System.IO.Path.Combine(dir.FullName, "copy.gguf");
            using var a = new GgufModel(GgufReaderTests.Gguf);
            long last = -1;
            var progress = new SyncProgress(v => { Assert.True(v >= last); last = v; });
            GgufWriter.Copy(a, path, progress: progress);
            Assert.Equal(new FileInfo(path).Length, last);

            using var b = new GgufModel(path);
            Assert.Equal(a.Config, b.Config);
            Assert.Equal(a.Tensors.Keys.Order(), b.Tensors.Keys.Order());
            foreach (var name in a.Tensors.Keys)
            {
                Assert.Equal(a.Info(name).Shape, b.Info(name).Shape);
                Assert.Equal(DType.F32, b.Info(name).DType);
                Assert.Equal(0, b.Info(name).Offset % 32);
                Assert.True(a.ReadF32(name).AsSpan().SequenceEqual(b.ReadF32(name)), name);
            }
            for (int id = 0; id < 512; id++)
            {
                Assert.Equal(a.Tokenizer.TokenText(id), b.Tokenizer.TokenText(id));
                Assert.Equal(a.Tokenizer.Piece(1, id), b.Tokenizer.Piece(1, id));
            }
            foreach (var p in GgufReaderTests.Prompts) Assert.Equal(a.Tokenizer.Encode(p, true), b.Tokenizer.Encode(p, true));
            Assert.Equal(((SpmTokenizer)a.Tokenizer).Vocab.Scores, ((SpmTokenizer)b.Tokenizer).Vocab.Scores);
            Assert.Equal(((SpmTokenizer)a.Tokenizer).Vocab.Types, ((SpmTokenizer)b.Tokenizer).Vocab.Types);
            Assert.Equal(8L, b.File.GetInteger("llama.rope.dimension_count"));
        }
        finally { dir.Delete(true); }
    }

    [RequiresSharedModelsFact]
    public void Llama2c_checkpoint_written_as_gguf_is_tied_and_tokenizes_like_runc()
    {
        var dir = Directory.CreateTempSubdirectory("flashlm-gguf-l2c-");
        try
        {
            var path = System.IO.Path.Combine(dir.FullName, "from-bin.gguf");
            using var a = new Llama2cModel(GgufReaderTests.Bin, GgufReaderTests.Tok);
            GgufWriter.Copy(a, path);
            using var b = new GgufModel(path);
            Assert.True(b.Config.TiedEmbeddings);
            Assert.False(b.Tensors.ContainsKey(TensorNames.Output));
            Assert.Equal(512, b.Config.ContextLength);
            foreach (var name in a.Tensors.Keys) Assert.True(a.ReadF32(name).AsSpan().SequenceEqual(b.ReadF32(name)), name);
            foreach (var p in GgufReaderTests.Prompts) Assert.Equal(a.Tokenizer.Encode(p, true), b.Tokenizer.Encode(p, true));
            // the same pieces as llama.cpp's own converter wrote into stories260K.gguf
            using var c = new GgufModel(GgufReaderTests.Gguf);
            for (int id = 0; id < 512; id++) Assert.Equal(c.Tokenizer.TokenText(id), b.Tokenizer.TokenText(id));
        }
        finally { dir.Delete(true); }
    }

    [Fact]
    public void F16_Q8_0_and_BF16_tensors_stream_in_chunks_and_read_back_within_their_precision()
    {
        var dir = Directory.CreateTempSubdirectory("flashlm-gguf-types-");
        try
        {
            var config = new ModelConfig
            {
                Architecture = Architecture.Llama, Dim = 64, HiddenDim = 96, Layers = 1, Heads = 4, KvHeads = 2,
                VocabSize = 16400, ContextLength = 16, TiedEmbeddings = true,
            };
            // 16400 x 64 embedding = 1,049,600 elements: more than one 1M-element chunk.
            string[] head = ["<unk>", "<s>", "</s>", "\u2581a", "b", "\u2581ab", "c", "<0x0A>"];
            var tokens = head.Concat(Enumerable.Range(0, 16400 - head.Length).Select(i => $"x{i}")).ToArray();
            var scores = tokens.Select((_, i) => i < 3 ? 0f : -i).ToArray();
            var ttypes = tokens.Select((_, i) => i switch { 0 => 2, 1 or 2 => 3, 7 => 6, _ => 1 }).ToArray();
            var vocab = new SpmVocab(tokens, scores, ttypes, 1, 2, 0);
            var types = new[] { DType.F16, DType.Q8_0, DType.BF16, DType.F32 };
            int k = 0;
            var specs = TensorNames.Expected(config)
                .Select(e => new TensorSpec(e.Name, e.Shape.Length == 1 ? DType.F32 : types[k++ % types.Length], e.Shape)).ToList();
            static float Value(TensorSpec s, long i) => MathF.Sin(i * 0.37f + s.Name.Length) * (1 + i % 7);
            var calls = 0;
            var path = System.IO.Path.Combine(dir.FullName, "mixed.gguf");
            GgufWriter.Write(path, config, vocab, specs, (spec, first, chunk) =>
            {
                calls++;
                for (int i = 0; i < chunk.Length; i++) chunk[i] = Value(spec, first + i);
            });
            Assert.Equal(specs.Count + 1, calls); // the embedding takes two chunks, the rest one each

            using var m = new GgufModel(path);
            foreach (var s in specs)
            {
                var t = m.Info(s.Name);
                Assert.Equal(s.DType, t.DType);
                Assert.Equal(s.Shape, t.Shape);
                var got = m.ReadF32(s.Name);
                for (int i = 0; i < got.Length; i++)
                {
                    float want = Value(s, i);
                    float tol = s.DType switch { DType.F32 => 0, DType.F16 => 4e-3f, DType.BF16 => 3e-2f, _ => 7f / 127 * 0.6f };
                    Assert.True(MathF.Abs(got[i] - want) <= tol, $"{s.Name}[{i}] {s.DType}: {got[i]} vs {want}");
                }
            }
            Assert.Equal([1, 5], m.Tokenizer.Encode("ab", true));
        }
        finally { dir.Delete(true); }
    }

    /// <summary>IProgress that reports synchronously (Progress&lt;T&gt; posts to the thread pool).</summary>
    private sealed class SyncProgress(Action<long> report) : IProgress<long>
    {
        public void Report(long value) => report(value);
    }
}
