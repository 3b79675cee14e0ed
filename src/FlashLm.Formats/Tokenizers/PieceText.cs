namespace FlashLm.Formats;

/// <summary>Helpers shared by the tokenizers for SentencePiece-style pieces.</summary>
public static class PieceText
{
    /// <summary>
    /// Parses a byte-fallback piece "&lt;0xAB&gt;" exactly as run.c's sscanf("&lt;0x%02hhX&gt;") accepts it:
    /// one or two hex digits after "&lt;0x" are enough (sscanf counts the conversion before matching "&gt;").
    /// </summary>
    public static bool TryParseByteToken(ReadOnlySpan<byte> piece, out byte value)
    {
        value = 0;
        if (piece.Length < 4 || piece[0] != '<' || piece[1] != '0' || piece[2] != 'x') return false;
        int v = 0, digits = 0, i = 3;
        for (; i < piece.Length && digits < 2; i++, digits++)
        {
            int d = Hex(piece[i]);
            if (d < 0) break;
            v = v * 16 + d;
        }
        if (digits == 0) return false;
        value = (byte)v;
        return true;
    }

    private static int Hex(byte c) => c switch
    {
        >= (byte)'0' and <= (byte)'9' => c - '0',
        >= (byte)'a' and <= (byte)'f' => c - 'a' + 10,
        >= (byte)'A' and <= (byte)'F' => c - 'A' + 10,
        _ => -1,
    };
}
