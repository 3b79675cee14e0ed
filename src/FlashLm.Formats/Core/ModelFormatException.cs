using System.Globalization;
using System.Text;

namespace FlashLm.Formats;

/// <summary>
/// A model, tokenizer or layout file is malformed, truncated or inconsistent.
/// The message always names the file and, where known, the tensor or key and the byte offset.
/// </summary>
/// <remarks>
/// Keys and problems often quote text read from the file (a GGUF key, a JSON value), which a corrupt file can make
/// kilobytes long or fill with raw bytes: the message escapes control characters and invalid text and bounds both
/// (<see cref="MaxKeyChars"/>, <see cref="MaxProblemChars"/>); <see cref="Key"/> keeps the text as read.
/// </remarks>
public sealed class ModelFormatException : Exception
{
    /// <summary>Longest key, and longest problem text, that a message quotes before cutting it.</summary>
    public const int MaxKeyChars = 120, MaxProblemChars = 1000;

    /// <summary>The file (or folder) that is wrong.</summary>
    public string FilePath { get; }

    /// <summary>The tensor name or metadata key involved, if any.</summary>
    public string? Key { get; }

    /// <summary>The byte offset in <see cref="FilePath"/> where the problem was found, if known.</summary>
    public long? Offset { get; }

    public ModelFormatException(string filePath, string problem, string? key = null, long? offset = null, Exception? inner = null)
        : base(Compose(filePath, problem, key, offset), inner)
    {
        FilePath = filePath;
        Key = key;
        Offset = offset;
    }

    private static string Compose(string filePath, string problem, string? key, long? offset)
    {
        var where = Printable(filePath, 4096); // parts of a path can come from a file (a manifest's file names)
        if (key is not null) where += $", '{Printable(key, MaxKeyChars)}'";
        if (offset is not null) where += $", offset {offset}";
        return $"{where}: {Printable(problem, MaxProblemChars)}";
    }

    /// <summary>
    /// <paramref name="text"/> safe to print: control characters, U+FFFD (what invalid UTF-8 decodes to) and lone
    /// surrogates escaped as \xNN or \uNNNN, and cut to <paramref name="max"/> characters with the full length noted.
    /// Use it for any text from a file that goes into a message.
    /// </summary>
    public static string Printable(string text, int max = 60)
    {
        var sb = new StringBuilder(Math.Min(text.Length, max) + 16);
        int i = 0;
        for (; i < text.Length && sb.Length < max; i++)
        {
            char c = text[i];
            if (c < 0x20 || c == 0x7F) sb.Append(CultureInfo.InvariantCulture, $"\\x{(int)c:X2}");
            else if (c == '\uFFFD' || (char.IsSurrogate(c) && !(char.IsHighSurrogate(c) && i + 1 < text.Length && char.IsLowSurrogate(text[i + 1]))
                         && !(char.IsLowSurrogate(c) && i > 0 && char.IsHighSurrogate(text[i - 1])))
                     || (c >= 0x80 && c < 0xA0))
                sb.Append(CultureInfo.InvariantCulture, $"\\u{(int)c:X4}");
            else sb.Append(c);
        }
        if (i < text.Length) sb.Append(CultureInfo.InvariantCulture, $"...({text.Length} chars)");
        return sb.ToString();
    }
}
