namespace FlashLm.Formats;

/// <summary>
/// Finds the vocabulary entries that are matched in raw text before any pre-tokenization: user-defined tokens always
/// (e.g. MPT's runs of spaces), control tokens (&lt;s&gt;, &lt;|im_start|&gt;) only when the caller parses special
/// tokens. Matching is leftmost-longest, as Hugging Face's added-token splitter does; the text between matches is
/// returned as raw fragments.
/// </summary>
internal sealed class SpecialTokenSplitter
{
    /// <summary>A fragment of the input: a token id (Start = -1) or raw text [Start, Start+Length).</summary>
    public readonly record struct Fragment(int Token, int Start, int Length)
    {
        public bool IsToken => Start < 0;
    }

    // First character -> candidates, longest first; `Control` tells whether parseSpecial is needed.
    private readonly Dictionary<char, (string Text, int Id, bool Control)[]> _byFirst;

    public SpecialTokenSplitter(IReadOnlyList<string> tokens, IReadOnlyList<int> types)
    {
        var candidates = new List<(string, int, bool)>();
        for (int i = 0; i < tokens.Count; i++)
        {
            int type = types[i];
            if (tokens[i].Length == 0) continue;
            if (type == SpmVocab.TypeUserDefined) candidates.Add((tokens[i], i, false));
            else if (type is SpmVocab.TypeControl or SpmVocab.TypeUnknown) candidates.Add((tokens[i], i, true));
        }
        _byFirst = candidates
            .GroupBy(c => c.Item1[0])
            .ToDictionary(g => g.Key, g => g.OrderByDescending(c => c.Item1.Length).ThenBy(c => c.Item2).ToArray());
    }

    public bool IsEmpty => _byFirst.Count == 0;

    /// <summary>Splits <paramref name="text"/> into token and raw-text fragments.</summary>
    public List<Fragment> Split(string text, bool parseSpecial)
    {
        var result = new List<Fragment>();
        int raw = 0;
        if (!IsEmpty)
        {
            for (int i = 0; i < text.Length;)
            {
                int matched = 0;
                if (_byFirst.TryGetValue(text[i], out var list))
                    foreach (var (t, id, control) in list)
                    {
                        if (control && !parseSpecial) continue;
                        if (text.AsSpan(i).StartsWith(t, StringComparison.Ordinal))
                        {
                            if (i > raw) result.Add(new Fragment(-1, raw, i - raw));
                            result.Add(new Fragment(id, -1, 0));
                            matched = t.Length;
                            break;
                        }
                    }
                if (matched > 0) { i += matched; raw = i; }
                else i++;
            }
        }
        if (text.Length > raw) result.Add(new Fragment(-1, raw, text.Length - raw));
        return result;
    }
}
