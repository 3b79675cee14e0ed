namespace FlashLm.Formats;

/// <summary>
/// GPT-2's reversible byte-to-character alphabet used by byte-level BPE vocabularies (vocab.json, GGUF "gpt2"):
/// every byte has a visible character, e.g. 'Ġ' (U+0120) for a space byte.
/// </summary>
public static class ByteLevel
{
    private static readonly char[] ByteToChar = BuildTable();
    private static readonly Dictionary<char, byte> CharToByte = Enumerable.Range(0, 256).ToDictionary(b => ByteToChar[b], b => (byte)b);

    /// <summary>Printable bytes ('!'..'~', '¡'..'¬', '®'..'ÿ') stand for themselves; the other 68 bytes map to U+0100 upwards in byte order.</summary>
    private static char[] BuildTable()
    {
        var t = new char[256];
        int next = 0;
        for (int b = 0; b < 256; b++)
        {
            bool printable = b is >= '!' and <= '~' or >= 0xA1 and <= 0xAC or >= 0xAE and <= 0xFF;
            t[b] = printable ? (char)b : (char)(256 + next++);
        }
        return t;
    }

    public static char CharOf(byte b) => ByteToChar[b];

    public static string ToChars(ReadOnlySpan<byte> bytes)
    {
        var c = new char[bytes.Length];
        for (int i = 0; i < bytes.Length; i++) c[i] = ByteToChar[bytes[i]];
        return new string(c);
    }

    /// <summary>The bytes a byte-level token stands for; characters outside the alphabet are kept as UTF-8.</summary>
    public static byte[] ToBytes(string token)
    {
        var result = new List<byte>(token.Length);
        Span<byte> utf8 = stackalloc byte[4];
        foreach (var rune in token.EnumerateRunes())
        {
            if (rune.IsBmp && CharToByte.TryGetValue((char)rune.Value, out var b)) result.Add(b);
            else result.AddRange(utf8[..rune.EncodeToUtf8(utf8)]);
        }
        return result.ToArray();
    }
}
