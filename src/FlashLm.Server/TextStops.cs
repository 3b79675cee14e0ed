namespace FlashLm.Server;

/// <summary>
/// Generated text under stop sequences: text is released only once no stop sequence can start in it, and a stop
/// sequence found cuts the text there (the sequence itself is not returned).
/// </summary>
internal sealed class TextStops(IReadOnlyList<string> stops)
{
    private readonly System.Text.StringBuilder _text = new();
    private readonly int _hold = stops.Count == 0 ? 0 : stops.Max(s => s.Length) - 1;
    private int _released;

    /// <summary>True once a stop sequence was found.</summary>
    public bool Stopped { get; private set; }

    /// <summary>All text released so far.</summary>
    public string Released => _text.ToString(0, _released);

    /// <summary>Appends <paramref name="piece"/>; returns the text now safe to release (maybe empty).</summary>
    public string Push(string piece)
    {
        if (Stopped || piece.Length == 0) return "";
        int searchFrom = Math.Max(0, _text.Length - _hold);
        _text.Append(piece);
        if (stops.Count > 0)
        {
            var all = _text.ToString();
            int cut = -1;
            foreach (var s in stops)
            {
                int at = all.IndexOf(s, searchFrom, StringComparison.Ordinal);
                if (at >= 0 && (cut < 0 || at < cut)) cut = at;
            }
            if (cut >= 0)
            {
                Stopped = true;
                _text.Length = cut;
                return Release(cut);
            }
        }
        return Release(Math.Max(_released, _text.Length - _hold));
    }

    /// <summary>At the end: whatever was held back.</summary>
    public string Flush() => Release(_text.Length);

    private string Release(int upTo)
    {
        if (upTo <= _released) return "";
        var s = _text.ToString(_released, upTo - _released);
        _released = upTo;
        return s;
    }
}
