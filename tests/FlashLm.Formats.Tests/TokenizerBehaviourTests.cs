using FlashLm.Formats;
using Xunit;

namespace FlashLm.Tests;

/// <summary>Special tokens, add_bos/add_eos, tokenizer.ggml.pre handling and pre-tokenizer rules on small synthetic vocabularies.</summary>
public sealed class TokenizerBehaviourTests
{
    private static Gpt2BpeTokenizer Vocab(TempDir dir, string? pre, bool? addBos = null, bool? addEos = null, params (string, int)[] extra)
    {
        var (tokens, types, merges) = VocabGguf.Bpe([("<s>", VocabGguf.TypeControl), ("</s>", VocabGguf.TypeControl), .. extra]);
        var path = dir.File("vocab.gguf");
        VocabGguf.Write(path, tokens, types, merges, pre, bos: tokens.IndexOf("<s>"), eos: tokens.IndexOf("</s>"), addBos, addEos);
        return (Gpt2BpeTokenizer)GgufTokenizer.Read(path);
    }

    [Fact]
    public void Control_tokens_in_the_text_are_single_tokens_unless_special_parsing_is_off()
    {
        using var dir = new TempDir();
        var t = Vocab(dir, "gpt-2", extra: ("<|im_start|>", VocabGguf.TypeControl));
        int imStart = t.VocabSize - 1;
        Assert.Equal([imStart, .. t.Encode("hello", false)], t.Encode("<|im_start|>hello", addBos: false));
        var plain = t.Encode("<|im_start|>hello", addBos: false, parseSpecial: false);
        Assert.DoesNotContain(imStart, plain);
        Assert.Equal((byte)'<', t.Piece(-1, plain[0])[0]);
        Assert.Empty(t.Piece(-1, imStart));  // control tokens print nothing
    }

    [Fact]
    public void User_defined_tokens_are_matched_even_without_special_parsing_and_print_their_text()
    {
        using var dir = new TempDir();
        var t = Vocab(dir, "mpt", extra: ("   ", VocabGguf.TypeUserDefined));
        int spaces = t.VocabSize - 1;
        var ids = t.Encode("   hello", addBos: false, parseSpecial: false);
        Assert.Equal([spaces, t.Encode("hello", false)[0]], ids);
        Assert.Equal("   "u8.ToArray(), t.Piece(-1, spaces));
    }

    [Fact]
    public void Add_bos_and_add_eos_follow_the_metadata_and_the_family_default()
    {
        using var dir = new TempDir();
        var gpt2 = Vocab(dir, "gpt-2");  // no add_bos_token: byte-level BPE adds none, as llama.cpp
        Assert.Equal(gpt2.Encode("hello", false), gpt2.Encode("hello", true));
        using var dir2 = new TempDir();
        var llama3 = Vocab(dir2, "llama-bpe");  // Llama 3 adds BOS by default
        Assert.Equal([llama3.BosId, .. llama3.Encode("hello", false)], llama3.Encode("hello", true));
        using var dir3 = new TempDir();
        var both = Vocab(dir3, "gpt-2", addBos: true, addEos: true);
        Assert.Equal([both.BosId, .. both.Encode("hello", false), both.EosId], both.Encode("hello", true));
        Assert.True(both.AddBos && both.AddEos);
    }

    [Fact]
    public void An_unknown_pre_tokenizer_is_refused_by_name_unless_allowed_then_warned()
    {
        using var dir = new TempDir();
        var (tokens, types, merges) = VocabGguf.Bpe(("<s>", VocabGguf.TypeControl));
        var path = dir.File("odd.gguf");
        VocabGguf.Write(path, tokens, types, merges, "frobnicator-7", 256 + 6, 256 + 6);
        var e = Assert.Throws<ModelFormatException>(() => GgufTokenizer.Read(path));
        Assert.Contains("frobnicator-7", e.Message);
        Assert.Contains("tokenizer.ggml.pre", e.Message);
        Assert.Contains(path, e.Message);
        var warnings = new List<string>();
        var t = (Gpt2BpeTokenizer)GgufTokenizer.Read(path, allowUnknownPre: true, warnings.Add);
        Assert.Equal("default", t.PreTokenizerName);
        Assert.Contains(warnings, w => w.Contains("frobnicator-7"));
        Assert.NotEmpty(t.Encode("hello world", false));
    }

    [Fact]
    public void Pre_tokenizers_differ_in_digits_as_their_families_do()
    {
        static string[] Pieces(string pre, string text)
        {
            var pieces = new List<(int Start, int Length)>();
            PreTokenizer.ForName(pre)!.Split(text, 0, text.Length, pieces);
            return pieces.Select(p => text.Substring(p.Start, p.Length)).ToArray();
        }
        Assert.Equal([" 12345"], Pieces("gpt-2", " 12345"));
        Assert.Equal([" ", "123", "45"], Pieces("llama-bpe", " 12345"));
        Assert.Equal([" ", "1", "2", "3", "4", "5"], Pieces("qwen2", " 12345"));
        Assert.Equal([" ", "1", "2", "3", "4", "5"], Pieces("starcoder", " 12345"));
        Assert.Equal(["I", "'ve", " seen"], Pieces("llama-bpe", "I've seen"));
        Assert.Equal(["I", "'VE", " seen"], Pieces("llama-bpe", "I'VE seen"));   // Llama 3: case-insensitive contractions
        Assert.Equal(["I", "'", "VE", " seen"], Pieces("gpt-2", "I'VE seen"));    // GPT-2: lower-case only
        Assert.Null(PreTokenizer.ForName("no-such-family"));
    }

    [Fact]
    public void Every_known_pre_tokenizer_compiles_and_covers_its_input()
    {
        const string text = "Hello, y'all! 3333 Füh 我想 😀 \n\n  x\t";
        foreach (var name in PreTokenizer.KnownNames)
        {
            var pieces = new List<(int Start, int Length)>();
            PreTokenizer.ForName(name)!.Split(text, 0, text.Length, pieces);
            // Pieces tile the text: in order, no gaps, no overlaps, none empty.
            int at = 0;
            foreach (var (start, length) in pieces)
            {
                Assert.True(start == at && length > 0, $"{name}: piece at {start} (+{length}), expected {at}");
                at += length;
            }
            Assert.Equal(text.Length, at);
        }
        Assert.Contains("qwen2", PreTokenizer.KnownNames);
        Assert.Contains("llama-bpe", PreTokenizer.KnownNames);
        Assert.Contains("deepseek-coder", PreTokenizer.KnownNames);
        Assert.Contains("refact", PreTokenizer.KnownNames);
    }

    [Fact]
    public void Letters_and_symbols_outside_the_BMP_keep_their_category_and_offsets()
    {
        var pieces = new List<(int Start, int Length)>();
        var text = "a 𝐀𝐁c 😀😀 x";  // mathematical bold capitals are letters (Lu), the emoji is a symbol (So)
        PreTokenizer.ForName("gpt-2")!.Split(text, 0, text.Length, pieces);
        Assert.Equal(["a", " 𝐀𝐁c", " 😀😀", " x"], pieces.Select(p => text.Substring(p.Start, p.Length)));
    }

    [Fact]
    public void SentencePiece_merges_equal_scores_leftmost_first()
    {
        // "▁aaa": "aa" can merge at positions 1 and 2 with the same score; SentencePiece takes the leftmost.
        var v = SpmVocab.LlamaStyle([("▁", -1f), ("a", -2f), ("aa", 5f)]);
        var t = new SpmTokenizer(v);
        int space = v.Tokens.ToList().IndexOf("▁"), a = v.Tokens.ToList().IndexOf("a"), aa = v.Tokens.ToList().IndexOf("aa");
        Assert.Equal([space, aa, a], t.Encode("aaa", addBos: false));
        Assert.Equal([v.Bos, space, aa, aa], t.Encode("aaaa", addBos: true));
        Assert.Empty(t.Encode("", addBos: false));
    }

    [Fact]
    public void SentencePiece_falls_back_to_byte_pieces_and_parses_its_control_tokens()
    {
        var v = SpmVocab.LlamaStyle([("▁", -1f), ("h", -2f), ("i", -2f), ("▁h", 1f), ("▁hi", 2f)]);
        var t = new SpmTokenizer(v);
        var ids = t.Encode("hi é", addBos: false);
        int hi = v.Tokens.ToList().IndexOf("▁hi");
        Assert.Equal([hi, v.Tokens.ToList().IndexOf("▁"), SpmVocab.LlamaFirstByte + 0xC3, SpmVocab.LlamaFirstByte + 0xA9], ids);
        // "</s>" written in the text is EOS when special tokens are parsed, and the dummy prefix follows it.
        Assert.Equal([hi, v.Eos, hi], t.Encode("hi</s>hi", addBos: false));
        Assert.DoesNotContain(v.Eos, t.Encode("hi</s>hi", addBos: false, parseSpecial: false));
    }
}

/// <summary>Utf8Joiner: the text stream never splits a character across tokens.</summary>
public sealed class Utf8JoinerTests
{
    [Fact]
    public void A_character_split_across_pieces_is_held_until_complete()
    {
        var j = new Utf8Joiner();
        var emoji = System.Text.Encoding.UTF8.GetBytes("😀");  // F0 9F 98 80
        Assert.Equal("a", j.Push("a"u8));
        Assert.Equal("", j.Push(emoji.AsSpan(0, 1)));
        Assert.Equal("", j.Push(emoji.AsSpan(1, 2)));
        Assert.Equal(3, j.Pending);
        Assert.Equal("😀b", j.Push([emoji[3], (byte)'b']));
        Assert.Equal(0, j.Pending);
        Assert.Equal("é", j.Push([0xC3]) + j.Push([0xA9]));
        Assert.Equal("", j.Flush());
    }

    [Fact]
    public void Ill_formed_bytes_become_U_FFFD_and_a_cut_off_character_only_on_flush()
    {
        var j = new Utf8Joiner();
        Assert.Equal("\uFFFDx", j.Push([0x80, (byte)'x']));    // a lone continuation byte can never be completed
        Assert.Equal("", j.Push([0xE2, 0x82]));
        Assert.Equal("\uFFFDy", j.Push([(byte)'y']));        // the started character was abandoned
        Assert.Equal("", j.Push([0xE2]));
        Assert.Equal("\uFFFD", j.Flush());
        Assert.Equal("", j.Flush());
    }

    [Fact]
    public void Every_split_of_mixed_text_gives_the_text_back_whole()
    {
        var text = "Füh 😀 我想 ok";
        var bytes = System.Text.Encoding.UTF8.GetBytes(text);
        for (int cut = 1; cut < bytes.Length; cut++)
        {
            var j = new Utf8Joiner();
            var a = j.Push(bytes.AsSpan(0, cut));
            Assert.DoesNotContain('\uFFFD', a);
            Assert.Equal(text, a + j.Push(bytes.AsSpan(cut)));
        }
    }
}
