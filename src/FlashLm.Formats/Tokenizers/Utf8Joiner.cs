using System.Buffers;
using System.Text;

namespace FlashLm.Formats;

/// <summary>
/// Turns a stream of token pieces (UTF-8 bytes, as <see cref="ITextTokenizer.Piece"/> gives them) into text without
/// ever splitting a character: the bytes of a character that spans several tokens (byte-fallback pieces, byte-level
/// BPE pieces of emoji or CJK) are held until it is complete. Bytes that can never form a character (ill-formed
/// UTF-8) become U+FFFD, as <see cref="Encoding.UTF8"/> decodes them. Not thread-safe: one per stream.
/// </summary>
public sealed class Utf8Joiner
{
    private readonly byte[] _held = new byte[4];
    private int _heldCount;

    /// <summary>Bytes held back: the start of a character whose remaining bytes have not arrived.</summary>
    public int Pending => _heldCount;

    /// <summary>Appends <paramref name="piece"/>; returns the text of every character now complete (maybe empty).</summary>
    public string Push(ReadOnlySpan<byte> piece)
    {
        if (piece.IsEmpty) return "";
        byte[]? rented = null;
        Span<byte> all = _heldCount + piece.Length <= 256
            ? stackalloc byte[_heldCount + piece.Length]
            : (rented = ArrayPool<byte>.Shared.Rent(_heldCount + piece.Length)).AsSpan(0, _heldCount + piece.Length);
        try
        {
            _held.AsSpan(0, _heldCount).CopyTo(all);
            piece.CopyTo(all[_heldCount..]);
            _heldCount = 0;
            var sb = new StringBuilder(all.Length);
            Span<char> utf16 = stackalloc char[2];
            while (!all.IsEmpty)
            {
                var status = Rune.DecodeFromUtf8(all, out var rune, out int used);
                if (status == OperationStatus.NeedMoreData)
                {
                    // A valid start of a character cut off by the end of the piece: keep it for the next one.
                    all.CopyTo(_held);
                    _heldCount = all.Length;
                    break;
                }
                // Done, or InvalidData (rune is then U+FFFD for the maximal ill-formed subsequence).
                sb.Append(utf16[..rune.EncodeToUtf16(utf16)]);
                all = all[used..];
            }
            return sb.ToString();
        }
        finally
        {
            if (rented is not null) ArrayPool<byte>.Shared.Return(rented);
        }
    }

    /// <summary>
    /// Ends the stream: returns U+FFFD for held bytes (a character cut off by the end), or "" when nothing is held.
    /// Callers that prefer to drop a cut-off character simply do not call this.
    /// </summary>
    public string Flush()
    {
        if (_heldCount == 0) return "";
        _heldCount = 0;
        return "\uFFFD";
    }
}
