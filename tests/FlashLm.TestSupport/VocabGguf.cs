using System.Text;

namespace FlashLm.Tests;

/// <summary>
/// Writes a vocabulary-only GGUF v3 file (metadata, no tensors), as llama.cpp's tokenizer test vocabularies are:
/// a small byte-level BPE vocabulary with the given pre-tokenizer, token types and BOS/EOS settings.
/// </summary>
public static class VocabGguf
{
    public const int TypeNormal = 1, TypeControl = 3, TypeUserDefined = 4;

    /// <summary>
    /// The 256 byte-level symbols (GPT-2's byte-to-char table), then "he", "ll", "hell", "hello", "Ġw", "Ġwo", then
    /// the <paramref name="extra"/> tokens with their types; merges build the words.
    /// </summary>
    public static (List<string> Tokens, List<int> Types, List<string> Merges) Bpe(params (string Text, int Type)[] extra)
    {
        var tokens = Enumerable.Range(0, 256).Select(b => ByteChar(b).ToString()).ToList();
        tokens.AddRange(["he", "ll", "hell", "hello", "Ġw", "Ġwo"]);
        var types = Enumerable.Repeat(TypeNormal, tokens.Count).ToList();
        foreach (var (t, ty) in extra) { tokens.Add(t); types.Add(ty); }
        return (tokens, types, ["h e", "l l", "he ll", "hell o", "Ġ w", "Ġw o"]);
    }

    /// <summary>GPT-2's byte-to-char table, written out independently of the tokenizer.</summary>
    public static char ByteChar(int b)
    {
        int n = 0;
        for (int x = 0; x < 256; x++)
        {
            bool printable = (x >= 33 && x <= 126) || (x >= 161 && x <= 172) || (x >= 174 && x <= 255);
            if (x == b) return printable ? (char)x : (char)(256 + n);
            if (!printable) n++;
        }
        throw new ArgumentOutOfRangeException(nameof(b));
    }

    public static void Write(string path, IReadOnlyList<string> tokens, IReadOnlyList<int> types, IReadOnlyList<string> merges,
        string? pre, int bos, int eos, bool? addBos = null, bool? addEos = null)
    {
        var kv = new List<(string Key, Action<BinaryWriter> Value)>
        {
            ("general.architecture", w => Str(w, "gpt2")),
            ("tokenizer.ggml.model", w => Str(w, "gpt2")),
            ("tokenizer.ggml.tokens", w => StrArray(w, tokens)),
            ("tokenizer.ggml.token_type", w => { w.Write(9u); w.Write(5u); w.Write((ulong)types.Count); foreach (var t in types) w.Write(t); }),
            ("tokenizer.ggml.merges", w => StrArray(w, merges)),
            ("tokenizer.ggml.bos_token_id", w => { w.Write(4u); w.Write((uint)bos); }),
            ("tokenizer.ggml.eos_token_id", w => { w.Write(4u); w.Write((uint)eos); }),
        };
        if (pre is not null) kv.Add(("tokenizer.ggml.pre", w => Str(w, pre)));
        if (addBos is { } ab) kv.Add(("tokenizer.ggml.add_bos_token", w => { w.Write(7u); w.Write(ab); }));
        if (addEos is { } ae) kv.Add(("tokenizer.ggml.add_eos_token", w => { w.Write(7u); w.Write(ae); }));
        using var w = new BinaryWriter(File.Create(path));
        w.Write(0x46554747u);  // "GGUF"
        w.Write(3u);
        w.Write(0UL);          // tensors
        w.Write((ulong)kv.Count);
        foreach (var (key, value) in kv)
        {
            Raw(w, key);
            value(w);
        }
        while (w.BaseStream.Position % 32 != 0) w.Write((byte)0);
    }

    private static void Raw(BinaryWriter w, string s)
    {
        var b = Encoding.UTF8.GetBytes(s);
        w.Write((ulong)b.Length);
        w.Write(b);
    }

    private static void Str(BinaryWriter w, string s) { w.Write(8u); Raw(w, s); }

    private static void StrArray(BinaryWriter w, IReadOnlyList<string> items)
    {
        w.Write(9u);
        w.Write(8u);
        w.Write((ulong)items.Count);
        foreach (var s in items) Raw(w, s);
    }
}
