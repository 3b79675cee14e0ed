using System.Buffers;
using System.Text;

namespace FlashLm.Formats;

/// <summary>UTF-8 decoding of text read from model files.</summary>
public static class Utf8Text
{
    /// <summary>
    /// Decodes <paramref name="bytes"/> as <see cref="Encoding.UTF8"/> does (each ill-formed subsequence becomes U+FFFD),
    /// allocating only the result. Encoding.UTF8's replacement fallback allocates per error, about 15 bytes per byte
    /// of random data: a corrupt length that makes a string swallow tensor data would cost 15x the file.
    /// </summary>
    public static string Decode(ReadOnlySpan<byte> bytes)
    {
        if (System.Text.Unicode.Utf8.IsValid(bytes)) return Encoding.UTF8.GetString(bytes);
        // Every byte decodes to at most one UTF-16 unit (a 4-byte sequence to two), so chars <= bytes.
        var chars = ArrayPool<char>.Shared.Rent(bytes.Length);
        try
        {
            int n = 0;
            while (!bytes.IsEmpty)
            {
                Rune.DecodeFromUtf8(bytes, out var rune, out int used);
                n += rune.EncodeToUtf16(chars.AsSpan(n));
                bytes = bytes[used..];
            }
            return new string(chars, 0, n);
        }
        finally
        {
            ArrayPool<char>.Shared.Return(chars);
        }
    }
}
