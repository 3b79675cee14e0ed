using Xunit;
using System.Text;
using FlashLm.Formats;
using FlashLm.Formats.Gguf;
using FlashLm.Formats.Llama2c;

namespace FlashLm.Tests;

public sealed class GgufReaderTests
{
    internal static string Gguf => SharedModels.File("stories260K", "stories260K.gguf");
    internal static string Bin => SharedModels.File("stories260K", "stories260K.bin");
    internal static string Tok => SharedModels.File("stories260K", "tok512.bin");

    /// <summary>Prompts that exercise spaces, punctuation, digits, newlines, accents and emoji.</summary>
    public static readonly string[] Prompts =
    [
        "Once upon a time",
        "Hello, world!",
        "The cat sat on the mat. The dog barked.",
        "  two leading spaces and   three inside",
        "trailing space ",
        "Lily had 3 apples and 42 pears in 2023.",
        "line one\nline two\n\nline four",
        "tabs\tand\r\nwindows lines",
        "café au lait, naïve façade",
        "emoji 😀 and 🐶!",
        "日本語のテキスト",
        "\"Quoted\" (parens) [brackets] {braces} #hash @at 100% a+b=c",
        "It's a dog's life; isn't it? Yes -- no...",
        "x",
        " ",
        "supercalifragilisticexpialidocious antidisestablishmentarianism",
    ];

    [RequiresSharedModelsFact]
    public void Config_matches_the_llama2c_header_except_the_converters_context_length()
    {
        using var m = new GgufModel(Gguf);
        var c = m.Config;
        Assert.Equal("gguf", m.Format);
        Assert.Equal((64, 172, 5, 8, 4, 512, 128), (c.Dim, c.HiddenDim, c.Layers, c.Heads, c.KvHeads, c.VocabSize, c.ContextLength));
        Assert.Equal(1e-5f, c.NormEps);
        Assert.Equal(10000f, c.RopeTheta);
        Assert.False(c.TiedEmbeddings); // the converter wrote an explicit output.weight
        Assert.Equal(48, m.Tensors.Count);
        Assert.Equal(3u, m.File.Version);
        Assert.Equal(32, m.File.Alignment);
        Assert.Equal([32L, 64L], m.Info("blk.0.attn_k.weight").Shape);
        Assert.Equal([64L, 172L], m.Info("blk.3.ffn_down.weight").Shape);
    }

    [RequiresSharedModelsFact]
    public void Tensors_are_bit_identical_to_the_llama2c_checkpoint()
    {
        using var g = new GgufModel(Gguf);
        using var b = new Llama2cModel(Bin, Tok);
        foreach (var name in b.Tensors.Keys)
            Assert.True(g.ReadF32(name).AsSpan().SequenceEqual(b.ReadF32(name)), name);
        Assert.True(g.ReadF32(TensorNames.Output).AsSpan().SequenceEqual(b.ReadF32(TensorNames.TokenEmbedding)));
    }

    [RequiresSharedModelsFact]
    public void Once_upon_a_time_encodes_as_runc_does()
    {
        using var m = new GgufModel(Gguf);
        Assert.Equal("spm", m.Tokenizer.Kind);
        Assert.Equal([1, 403, 407, 261, 378], m.Tokenizer.Encode("Once upon a time", addBos: true));
        Assert.Equal([403, 407, 261, 378], m.Tokenizer.Encode("Once upon a time", addBos: false));
    }

    [RequiresSharedModelsFact]
    public void Spm_encoding_equals_the_runc_tokenizer_on_varied_prompts()
    {
        using var m = new GgufModel(Gguf);
        var reference = Llama2cTokenizer.Load(Tok, 512);
        var failures = new StringBuilder();
        foreach (var p in Prompts)
        {
            var expected = reference.Encode(p, addBos: true);
            var actual = m.Tokenizer.Encode(p, addBos: true);
            if (!expected.SequenceEqual(actual))
                failures.AppendLine($"{p.Replace("\n", "\\n")}: run.c [{string.Join(' ', expected)}] spm [{string.Join(' ', actual)}]");
        }
        Assert.True(failures.Length == 0, failures.ToString());
    }

    [RequiresSharedModelsFact]
    public void Pieces_print_the_bytes_runc_prints()
    {
        using var m = new GgufModel(Gguf);
        var reference = Llama2cTokenizer.Load(Tok, 512);
        var t = m.Tokenizer;
        // every token after BOS and after an ordinary token, except BOS/EOS/UNK whose texts differ by design
        for (int id = 3; id < 512; id++)
        {
            Assert.Equal(reference.Piece(1, id), t.Piece(1, id));
            Assert.Equal(reference.Piece(400, id), t.Piece(400, id));
        }
        Assert.Equal("Once"u8.ToArray(), t.Piece(1, 403));
        Assert.Equal(" upon"u8.ToArray(), t.Piece(403, 407));
        Assert.Equal(new byte[] { 0x0A }, t.Piece(1, 13)); // <0x0A>
    }

    [RequiresSharedModelsFact]
    public void Greedy_reference_text_decodes_from_the_reference_tokens()
    {
        using var m = new GgufModel(Gguf);
        var lines = File.ReadAllLines(SharedModels.File("stories260K", "reference", "greedy_once_upon_a_time_n64.tokens.txt"));
        var tokens = SharedModels.ReferenceTokens(lines);
        var text = new List<byte>();
        for (int i = 1; i < tokens.Length; i++) text.AddRange(m.Tokenizer.Piece(tokens[i - 1], tokens[i]));
        var stdout = File.ReadAllText(SharedModels.File("stories260K", "reference", "greedy_once_upon_a_time_n64.stdout.txt"));
        Assert.StartsWith(Encoding.UTF8.GetString(text.ToArray()), stdout);
        Assert.True(text.Count > 100);
    }

    /// <summary>The token sequence from the reference tokens file: the prompt, then each argmax.</summary>

    [RequiresSharedModelsFact]
    public void Spm_tokenizer_survives_export_and_TokenizerStore_open()
    {
        using var m = new GgufModel(Gguf);
        var dir = Directory.CreateTempSubdirectory("flashlm-spm-");
        try
        {
            foreach (var (name, bytes) in m.Tokenizer.Export()) File.WriteAllBytes(System.IO.Path.Combine(dir.FullName, name), bytes);
            var t = TokenizerStore.Open("spm", dir.FullName, 512);
            Assert.Equal("spm", t.Kind);
            Assert.Equal((1, 2), (t.BosId, t.EosId));
            foreach (var p in Prompts) Assert.Equal(m.Tokenizer.Encode(p, true), t.Encode(p, true));
            for (int id = 0; id < 512; id++)
            {
                Assert.Equal(m.Tokenizer.TokenText(id), t.TokenText(id));
                Assert.Equal(m.Tokenizer.Piece(1, id), t.Piece(1, id));
            }
            Assert.Throws<ModelFormatException>(() => TokenizerStore.Open("spm", dir.FullName, 513));
        }
        finally { dir.Delete(true); }
    }
}
