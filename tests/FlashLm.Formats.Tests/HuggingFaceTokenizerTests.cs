using System.Text;
using System.Text.Json;
using FlashLm.Formats;
using FlashLm.Formats.Gguf;
using FlashLm.Formats.HuggingFace;
using Xunit;

namespace FlashLm.Tests;

public sealed class HuggingFaceTokenizerTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    public static readonly TheoryData<string> Texts = new()
    {
        "The quick brown fox jumps over the lazy dog.",
        "Once upon a time, there was a little girl.",
        "  leading and trailing spaces  ",
        "tabs\tand\nnewlines\r\n",
        "Grüße aus Köln, naïve café",
        "日本語のテキスト",
        "emoji 🙂🚀 and symbols ©®™ €100",
        "1234567890 3.14159 2024-10-13",
        "",
    };

    private static string Decode(ITextTokenizer t, int[] ids)
    {
        var bytes = new List<byte>();
        for (int i = 0; i < ids.Length; i++) bytes.AddRange(t.Piece(i == 0 ? -1 : ids[i - 1], ids[i]));
        return Encoding.UTF8.GetString(bytes.ToArray());
    }

    private static Gpt2BpeTokenizer Synthetic(int size) => Gpt2BpeTokenizer.FromFiles(Gpt2BpeTokenizer.CreateSynthetic(size), "synthetic", 2, 2);

    private static SpmTokenizer LlamaStyleSpm() =>
        new(SentencePieceModelProto.Read(SentencePieceModelProto.Write(HuggingFaceTestModels.SpmVocabOf(HuggingFaceTestModels.SpmPieces)), "test"));

    /// <summary>A byte-level BPE folder (vocab.json, merges.txt of <paramref name="size"/> tokens) plus <paramref name="extra"/> files.</summary>
    private string BpeFolder(string name, int size, params (string File, string Text)[] extra)
    {
        var folder = Directory.CreateDirectory(_dir.Sub(name)).FullName;
        foreach (var (file, bytes) in Gpt2BpeTokenizer.CreateSynthetic(size)) File.WriteAllBytes(Path.Combine(folder, file), bytes);
        foreach (var (file, text) in extra) File.WriteAllText(Path.Combine(folder, file), text);
        return folder;
    }

    /// <summary>
    /// Qwen's folders keep their added tokens (&lt;|im_start|&gt;, &lt;|im_end|&gt;, &lt;think&gt;) out of vocab.json, in tokenizer.json
    /// (or tokenizer_config.json's added_tokens_decoder): they join the vocabulary, special ones as control tokens (parsed only when
    /// special tokens are, decoded to nothing), the others as user-defined ones (always matched, decoded as written).
    /// </summary>
    [Theory]
    [InlineData("tokenizer.json")]
    [InlineData("tokenizer_config.json")]
    public void Added_tokens_of_a_hugging_face_folder_join_the_vocabulary(string file)
    {
        string json = file == "tokenizer.json"
            ? """{"version":"1.0","added_tokens":[{"id":700,"content":"<|im_start|>","special":true},{"id":701,"content":"<|im_end|>","special":true},{"id":702,"content":"<think>","special":false}],"model":{"type":"BPE"}}"""
            : """{"added_tokens_decoder":{"700":{"content":"<|im_start|>","special":true},"701":{"content":"<|im_end|>","special":true},"702":{"content":"<think>","special":false}}}""";
        var t = Gpt2BpeTokenizer.Load(BpeFolder("added-" + file, 700, (file, json)), bos: 2, eos: 701, maxVocab: 800);
        Assert.Equal(703, t.VocabSize);
        var ids = t.Encode("<|im_start|>user\nhi <think>ok<|im_end|>", addBos: false);
        Assert.Equal(700, ids[0]);
        Assert.Equal(701, ids[^1]);
        Assert.Contains(702, ids);
        Assert.Equal("user\nhi <think>ok", Decode(t, ids));
        // Unparsed, a control token is plain text; a user-defined one is still matched.
        var plain = t.Encode("<|im_start|>x<think>", addBos: false, parseSpecial: false);
        Assert.DoesNotContain(700, plain);
        Assert.Contains(702, plain);
        Assert.Equal("<|im_start|>x<think>", Decode(t, plain));
    }

    [Fact]
    public void Added_tokens_that_clash_with_the_vocabulary_or_the_model_are_refused_naming_the_file()
    {
        var clash = BpeFolder("clash", 700, ("tokenizer.json", """{"added_tokens":[{"id":5,"content":"<pad>","special":true}]}"""));
        var e = Assert.Throws<ModelFormatException>(() => Gpt2BpeTokenizer.Load(clash, 2, 2, 800));
        Assert.Contains("tokenizer.json", e.Message);
        Assert.Contains("vocab.json gives it 1", e.Message);
        // From tokenizer_config.json, the error names that file.
        var clashConfig = BpeFolder("clash-config", 700, ("tokenizer_config.json", """{"added_tokens_decoder":{"5":{"content":"<pad>","special":true}}}"""));
        e = Assert.Throws<ModelFormatException>(() => Gpt2BpeTokenizer.Load(clashConfig, 2, 2, 800));
        Assert.Contains("tokenizer_config.json", e.Message);
        var beyond = BpeFolder("beyond", 700, ("tokenizer.json", """{"added_tokens":[{"id":900,"content":"<|x|>","special":true}]}"""));
        e = Assert.Throws<ModelFormatException>(() => Gpt2BpeTokenizer.Load(beyond, 2, 2, 800));
        Assert.Contains("id 900", e.Message);
        var bad = BpeFolder("bad", 700, ("tokenizer.json", """{"added_tokens":[{"id":"x","content":"<|x|>"}]}"""));
        e = Assert.Throws<ModelFormatException>(() => Gpt2BpeTokenizer.Load(bad, 2, 2, 800));
        Assert.Contains("added_tokens[0]", e.Message);
        var broken = BpeFolder("broken", 700, ("tokenizer.json", """{"added_tokens":[""" ));
        Assert.Throws<ModelFormatException>(() => Gpt2BpeTokenizer.Load(broken, 2, 2, 800));
    }

    [Fact]
    public void Synthetic_vocabulary_has_exactly_the_requested_size_with_opt_special_ids()
    {
        foreach (int size in new[] { 260, 700, 5000 })
        {
            var files = Gpt2BpeTokenizer.CreateSynthetic(size);
            var vocab = JsonSerializer.Deserialize<Dictionary<string, int>>(files[Gpt2BpeTokenizer.VocabFileName])!;
            Assert.Equal(size, vocab.Count);
            Assert.Equal(Enumerable.Range(0, size), vocab.Values.Order());
            Assert.Equal(0, vocab["<s>"]);
            Assert.Equal(1, vocab["<pad>"]);
            Assert.Equal(2, vocab["</s>"]);
            Assert.Equal(3, vocab["<unk>"]);
            Assert.Equal(size, Synthetic(size).VocabSize);
        }
        Assert.Throws<ArgumentOutOfRangeException>(() => Gpt2BpeTokenizer.CreateSynthetic(259));
    }

    [Theory]
    [MemberData(nameof(Texts))]
    public void Synthetic_bpe_encodes_and_decodes_text_exactly(string text)
    {
        var t = Synthetic(700);
        var ids = t.Encode(text, addBos: true);
        Assert.Equal(2, ids[0]);
        Assert.All(ids, id => Assert.InRange(id, 0, t.VocabSize - 1));
        Assert.Equal(text, Decode(t, ids));
        Assert.Equal(text, Decode(t, t.Encode(text, addBos: false)));
    }

    [Fact]
    public void Synthetic_bpe_uses_learned_merges()
    {
        var t = Synthetic(700);
        const string text = "the quick brown fox jumps over the lazy dog";
        var ids = t.Encode(text, addBos: false);
        Assert.True(ids.Length < text.Length / 2, $"{ids.Length} tokens for {text.Length} bytes");
        Assert.Contains(ids, id => id >= 260);
        // "Ġthe" is a single token: a space followed by a frequent word.
        Assert.Single(t.Encode(" the", false));
        Assert.Equal("\u0120the", t.TokenText(t.Encode(" the", false)[0]));
    }

    [Fact]
    public void Bpe_export_and_load_recreate_the_same_tokenizer()
    {
        var t = Synthetic(600);
        foreach (var (name, bytes) in t.Export()) File.WriteAllBytes(Path.Combine(_dir.Path, name), bytes);
        var u = TokenizerStore.Open("gpt2", _dir.Path, 600);
        Assert.Equal((t.VocabSize, t.BosId, t.EosId, t.Kind), (u.VocabSize, u.BosId, u.EosId, u.Kind));
        foreach (var text in Texts) Assert.Equal(t.Encode(text, true), u.Encode(text, true));
        var ex = Assert.Throws<ModelFormatException>(() => TokenizerStore.Open("gpt2", _dir.Path, 500));
        Assert.Equal("vocab_size", ex.Key);
    }

    [Fact]
    public void Bpe_special_tokens_print_nothing_and_bytes_map_back()
    {
        var t = Synthetic(300);
        Assert.Empty(t.Piece(0, 2));
        Assert.Empty(t.Piece(0, 0));
        Assert.Equal([(byte)' '], t.Piece(2, t.Encode(" ", false)[0]));
        Assert.Equal([(byte)0xC3, (byte)0xA9], t.Encode("é", false).SelectMany(id => t.Piece(0, id)).ToArray());
    }

    [Theory]
    [InlineData("hello the world")]
    [InlineData("the sea is on a hat")]
    [InlineData("café ünïcode 日本")]
    public void Spm_encodes_with_bos_and_decodes_with_byte_fallback(string text)
    {
        var t = LlamaStyleSpm();
        var ids = t.Encode(text, addBos: true);
        Assert.Equal(1, ids[0]);
        Assert.Equal(text, Decode(t, ids));
        Assert.DoesNotContain(1, ids[1..]);
    }

    [Fact]
    public void Spm_merges_pieces_and_maps_bytes()
    {
        var t = LlamaStyleSpm();
        var ids = t.Encode("the", addBos: true);
        Assert.Equal(new[] { 1, 259 + 2 }, ids); // BOS, "▁the"
        Assert.Equal("the"u8.ToArray(), t.Piece(1, ids[1])); // leading space dropped after BOS
        Assert.Equal(" the"u8.ToArray(), t.Piece(5, ids[1]));
        Assert.Equal([(byte)0xE9], t.Piece(5, 3 + 0xE9)); // <0xE9>
        Assert.Equal("spm", t.Kind);
        // Export/Load round trip.
        foreach (var (name, bytes) in t.Export()) File.WriteAllBytes(Path.Combine(_dir.Path, name), bytes);
        var u = SpmTokenizer.LoadModel(_dir.Path);
        Assert.Equal(t.Encode("hello the world", true), u.Encode("hello the world", true));
    }

    [Fact]
    public void Model_tokenizer_is_loaded_from_the_folder()
    {
        HuggingFaceTestModels.WriteOpt(_dir.Path);
        using var m = new HfModel(_dir.Path);
        var ids = m.Tokenizer.Encode("Once upon a time", true);
        Assert.Equal(2, ids[0]);
        Assert.Equal("Once upon a time", Decode(m.Tokenizer, ids));
    }
}

public sealed class HuggingFaceSharedModelTests
{
    /// <summary>
    /// tok512.bin re-expressed as a SentencePiece tokenizer.model (spaces as U+2581, same scores) encodes like
    /// llama2.c's run.c tokenizer: a check of SentencePieceModelProto (write and read) and SpmTokenizer against real vocabulary data.
    /// </summary>
    [RequiresSharedModelsFact]
    public void Spm_model_built_from_tok512_encodes_like_llama2c()
    {
        var path = Path.Combine(SharedModels.Dir!, "stories260K", "tok512.bin");
        var reference = FlashLm.Formats.Llama2c.Llama2cTokenizer.Load(path, 512);
        var model = SentencePieceModelProto.Write(GgufWriter.FromLlama2c(reference));
        var spm = new SpmTokenizer(SentencePieceModelProto.Read(model, "tok512"), "tok512");
        foreach (var text in new[] { "Once upon a time", "Lily and Tom went to the park. They saw a big dog!", "The cat sat on the mat." })
        {
            Assert.Equal(reference.Encode(text, true), spm.Encode(text, true));
            var ids = spm.Encode(text, true);
            var decoded = new List<byte>();
            for (int i = 1; i < ids.Length; i++) decoded.AddRange(spm.Piece(ids[i - 1], ids[i]));
            Assert.Equal(text, Encoding.UTF8.GetString(decoded.ToArray()));
        }
    }
}
