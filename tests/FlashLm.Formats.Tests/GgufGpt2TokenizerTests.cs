using System.Text;
using FlashLm.Formats;
using Xunit;

namespace FlashLm.Tests;

/// <summary>Gpt2BpeTokenizer (byte-level BPE) on a tiny hand-made vocabulary.</summary>
public sealed class GgufGpt2TokenizerTests
{
    /// <summary>GPT-2's byte-to-char table, written out independently of the tokenizer (shared with the vocabulary-only GGUF writer).</summary>
    private static char ByteChar(int b) => VocabGguf.ByteChar(b);

    private static (List<string> Tokens, List<string> Merges) Vocab()
    {
        var tokens = Enumerable.Range(0, 256).Select(b => ByteChar(b).ToString()).ToList();
        string[] merged = ["he", "ll", "hell", "hello", "Ġw", "Ġwo", "or", "</s>"];
        tokens.AddRange(merged);
        return (tokens, ["h e", "l l", "he ll", "hell o", "Ġ w", "Ġw o"]);
    }

    [Fact]
    public void Encodes_with_merges_and_decodes_byte_level_pieces()
    {
        var (tokens, merges) = Vocab();
        var t = new Gpt2BpeTokenizer(tokens, merges, bos: tokens.IndexOf("</s>"), eos: tokens.IndexOf("</s>"));
        Assert.Equal("gpt2", t.Kind);
        var ids = t.Encode("hello world", addBos: true);
        Assert.Equal([tokens.IndexOf("</s>"), tokens.IndexOf("hello"), tokens.IndexOf("Ġwo"), 'r', 'l', 'd'], ids);
        Assert.Equal(" wo"u8.ToArray(), t.Piece(ids[1], ids[2]));
        var cafe = t.Encode("café\n", addBos: false);
        var bytes = cafe.SelectMany(id => t.Piece(0, id)).ToArray();
        Assert.Equal(Encoding.UTF8.GetBytes("café\n"), bytes);
        Assert.Contains(0xC3, cafe); // 'é' falls back to its two UTF-8 bytes, each a base token
    }

    [Fact]
    public void Survives_export_and_TokenizerStore_open()
    {
        var (tokens, merges) = Vocab();
        var t = new Gpt2BpeTokenizer(tokens, merges, bos: 263, eos: 263);
        var dir = Directory.CreateTempSubdirectory("flashlm-gpt2-");
        try
        {
            foreach (var (name, b) in t.Export()) File.WriteAllBytes(Path.Combine(dir.FullName, name), b);
            var u = TokenizerStore.Open("gpt2", dir.FullName, tokens.Count);
            Assert.Equal((263, 263), (u.BosId, u.EosId));
            foreach (var s in new[] { "hello world", "Hello, hello!", "well... 12 ° 😀" })
                Assert.Equal(t.Encode(s, true), u.Encode(s, true));
            var direct = Gpt2BpeTokenizer.Load(dir.FullName, bos: 5, eos: 6);
            Assert.Equal((5, 6), (direct.BosId, direct.EosId));
            Assert.Throws<ModelFormatException>(() => TokenizerStore.Open("gpt2", dir.FullName, tokens.Count - 1));
        }
        finally { dir.Delete(true); }
    }
}
