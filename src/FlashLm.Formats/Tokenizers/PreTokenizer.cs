using System.Collections.Concurrent;
using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;

namespace FlashLm.Formats;

/// <summary>
/// The pre-tokenizer a byte-level BPE vocabulary names in GGUF's <c>tokenizer.ggml.pre</c>: a sequence of regular
/// expressions, each splitting every piece the previous one left into its matches and the text between them
/// (Hugging Face's Split with "isolated" behaviour; the unmatched text stays a piece of its own). The expressions and
/// the name table are the ones llama.cpp lists per pre-tokenizer type (src/llama-vocab.cpp), which reproduce each
/// model's tokenizer.json.
/// </summary>
/// <remarks>
/// .NET's Regex sees UTF-16 code units, so a character outside the BMP (an emoji, a CJK extension B ideograph) would
/// be two surrogates of category Cs and never match \p{L} or \p{N}. Text holding surrogates is therefore matched as
/// a stand-in string with one BMP character per code point, of the same general category and outside every literal
/// range the expressions use, and the matches are mapped back to the original offsets.
/// </remarks>
internal sealed class PreTokenizer
{
    // Contractions, letters, digits, other symbols, trailing whitespace: GPT-2's expression.
    private const string Gpt2 = @"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
    // Llama 3 (tiktoken cl100k style): case-insensitive contractions, a non-letter before letters, digits in threes.
    private const string Llama3 = @"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    // Qwen2 (and Qwen3, StableLM 2): as Llama 3 but single digits.
    private const string Qwen2 = @"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    private const string DeepSeekLetters = "\\s?[A-Za-z\u00B5\u00C0-\u00D6\u00D8-\u00F6\u00F8-\u01BA\u01BC-\u01BF\u01C4-\u0293\u0295-\u02AF\u0370-\u0373\u0376\u0377\u037B-\u037D\u037F\u0386\u0388-\u038A\u038C\u038E-\u03A1\u03A3-\u03F5\u03F7-\u0481\u048A-\u052F\u0531-\u0556\u10A0-\u10C5\u13A0-\u13F5\u13F8-\u13FD\u1C90-\u1CBA\u1CBD-\u1CBF\u1D00-\u1D2B\u1D6B-\u1D77\u1D79-\u1D9A\u1E00-\u1F15\u1F18-\u1F1D\u1F20-\u1F45\u1F48-\u1F4D\u1F50-\u1F57\u1F59\u1F5B\u1F5D\u1F5F-\u1F7D\u1F80-\u1FB4\u1FB6-\u1FBC\u1FBE\u1FC2-\u1FC4\u1FC6-\u1FCC\u1FD0-\u1FD3\u1FD6-\u1FDB\u1FE0-\u1FEC\u1FF2-\u1FF4\u1FF6-\u1FFC\u2102\u2107\u210A-\u2113\u2115\u2119-\u211D\u2124\u2126\u2128\u212A-\u212D\u212F-\u2134\u2139\u213C-\u213F\u2145-\u2149\u214E\u2183\u2184\u2C00-\u2C7B\u2C7E-\u2CE4\u2CEB-\u2CEE\u2CF2\u2CF3\uA640-\uA66D\uA680-\uA69B\uA722-\uA76F\uA771-\uA787\uA78B-\uA78E\uAB70-\uABBF\uFB00-\uFB06\uFB13-\uFB17\uFF21-\uFF3A\uFF41-\uFF5A" + AstralCased + "]+";
    // DeepSeek's letter class lists the cased letters (escaped: several are canonical singletons, which an editor's
    // normalization would silently change). Its astral ranges (Deseret, Osage, Old Hungarian, Warang Citi, Adlam) are
    // seen through the stand-in string, where those letters become the two characters below (see StandInFor).
    private const string AstralCased = "\u00C0\u00DF";
    private const string Han = "[一-龥ࠀ-一가-퟿]+";

    private sealed record Family(string[] Names, string[] Steps, bool IgnoreMerges = false, bool AddBos = false);

    private static readonly Family[] Families =
    [
        new(["gpt-2", "gpt2", "phi-2", "jina-es", "jina-de", "jina-v2-es", "jina-v2-de", "gigachat", "a.x-4.0", "mellum", "mpt", "olmo", "jais", "trillion",
             "granite-docling", "exaone4", "roberta-bpe", "jina-v1-en", "jina-v2-code"], [Gpt2]),
        new(["default"], [@"[\p{P}\$\+<=>\^~\|]+", Gpt2, @"\p{N}+", "[0-9][0-9][0-9]"]),
        new(["llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2"], [Llama3], IgnoreMerges: true, AddBos: true),
        new(["dbrx", "smaug-bpe", "chatglm-bpe", "glm4"], [Llama3]),
        new(["qwen2", "qwen2.5", "qwen-2.5", "deepseek-r1-qwen", "kormo", "stablelm2", "megrez", "hunyuan"], [Qwen2]),
        new(["deepseek-llm"], ["[\r\n]", DeepSeekLetters, "\\s?[!-/:-~！-／：-～‘-‟　-。]+", @"\s+\z", Han, @"\p{N}+"]),
        new(["deepseek-coder"], ["[\r\n]", @"\s?\p{L}+", @"\s?\p{P}+", Han, @"\p{N}"]),
        new(["deepseek-v3", "hunyuan-dense"], [@"\p{N}{1,3}", "[一-龥぀-ゟ゠-ヿ]+",
            "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+"]),
        new(["falcon"], [@"[\p{P}\$\+<=>\^~\|`]+", Gpt2, "[0-9][0-9][0-9]"]),
        new(["starcoder", "refact", "command-r", "smollm", "codeshell", "exaone", "minerva-7b"], [@"\p{N}", Gpt2]),
        new(["poro-chat", "bloom", "gpt3-finnish"], [@" ?[^(\s|.,!?…。，、।۔،)]+"]),
        new(["viking"], [@" ?[^(\s|.,!?…。，、।۔،)]+", @"\p{N}"]),
        new(["seed-coder"], [@"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1}| ?[^\s\p{L}\p{N}\r\n]+|\s*[\r\n]+|\s+(?!\S)|\s+"]),
        new(["tekken"], [@"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"],
            IgnoreMerges: true, AddBos: true),
        new(["gpt-4o", "llama4", "minimax-m2"], [@"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"]),
        new(["bailingmoe", "bailingmoe2", "llada-moe"], [@"'(?:[sSdDmMtT]|[lL][lL]|[vV][eE]|[rR][eE])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+"]),
        new(["grok-2"], [Qwen2]),
    ];

    private static readonly Dictionary<string, Family> ByName = Families
        .SelectMany(f => f.Names.Select(n => (n, f))).ToDictionary(x => x.n, x => x.f, StringComparer.Ordinal);

    private static readonly ConcurrentDictionary<string, Regex> Compiled = new(StringComparer.Ordinal);

    /// <summary>The names this class knows, for error messages.</summary>
    public static IEnumerable<string> KnownNames => ByName.Keys.Order(StringComparer.Ordinal);

    private readonly Regex[] _steps;

    /// <summary>The tokenizer.ggml.pre value this pre-tokenizer was made for.</summary>
    public string Name { get; }

    /// <summary>Whether a piece that is itself a vocabulary entry is emitted whole, without merges (Llama 3's ignore_merges).</summary>
    public bool IgnoreMerges { get; }

    /// <summary>Whether the family adds BOS when the GGUF has no tokenizer.ggml.add_bos_token.</summary>
    public bool AddBosByDefault { get; }

    private PreTokenizer(string name, Family f)
    {
        Name = name;
        IgnoreMerges = f.IgnoreMerges;
        AddBosByDefault = f.AddBos;
        _steps = Array.ConvertAll(f.Steps, p => Compiled.GetOrAdd(p, static p => new Regex(p, RegexOptions.Compiled | RegexOptions.CultureInvariant)));
    }

    /// <summary>GPT-2's pre-tokenizer (Hugging Face vocab.json + merges.txt folders, GGUF "gpt-2").</summary>
    public static PreTokenizer Gpt2Default { get; } = new("gpt-2", ByName["gpt-2"]);

    /// <summary>The pre-tokenizer named <paramref name="name"/>, or null when FlashLm does not know it.</summary>
    public static PreTokenizer? ForName(string name) =>
        name == "gpt-2" ? Gpt2Default : ByName.TryGetValue(name, out var f) ? new PreTokenizer(name, f) : null;

    /// <summary>Appends the pieces of <paramref name="text"/>[start, start+length) as (offset, length) pairs in UTF-16 units.</summary>
    public void Split(string text, int start, int length, List<(int Start, int Length)> output)
    {
        if (length == 0) return;
        int[]? offsets = null;
        string subject = text;
        int subjectStart = start, subjectLength = length;
        if (HasSurrogates(text.AsSpan(start, length)))
        {
            (subject, offsets) = StandIn(text.AsSpan(start, length), start);
            subjectStart = 0;
            subjectLength = subject.Length;
        }
        var pieces = new List<(int, int)> { (subjectStart, subjectLength) };
        var next = new List<(int, int)>();
        foreach (var regex in _steps)
        {
            next.Clear();
            foreach (var (ps, pl) in pieces)
            {
                int pos = ps, end = ps + pl;
                for (var m = regex.Match(subject, ps, pl); m.Success; m = m.NextMatch())
                {
                    if (m.Length == 0) continue;
                    if (m.Index > pos) next.Add((pos, m.Index - pos));
                    next.Add((m.Index, m.Length));
                    pos = m.Index + m.Length;
                }
                if (pos < end) next.Add((pos, end - pos));
            }
            (pieces, next) = (next, pieces);
        }
        if (offsets is null) output.AddRange(pieces);
        else
            foreach (var (ps, pl) in pieces)
                output.Add((offsets[ps], offsets[ps + pl] - offsets[ps]));
    }

    private static bool HasSurrogates(ReadOnlySpan<char> s)
    {
        foreach (var c in s)
            if (char.IsSurrogate(c)) return true;
        return false;
    }

    /// <summary>
    /// One BMP character per code point of <paramref name="s"/>: BMP characters stay, others become a stand-in of their
    /// general category. Returns the string and, for each of its positions (and one past the end), the original offset.
    /// </summary>
    private static (string, int[]) StandIn(ReadOnlySpan<char> s, int baseOffset)
    {
        var sb = new StringBuilder(s.Length);
        var offsets = new List<int>(s.Length + 1);
        int i = 0;
        while (i < s.Length)
        {
            offsets.Add(baseOffset + i);
            if (Rune.DecodeFromUtf16(s[i..], out var rune, out int used) == System.Buffers.OperationStatus.Done && !rune.IsBmp)
                sb.Append(StandInFor(rune));
            else
                sb.Append(s[i]);  // a BMP character, or a lone surrogate (category Cs, as the original)
            i += Math.Max(used, 1);
        }
        offsets.Add(baseOffset + s.Length);
        return (sb.ToString(), offsets.ToArray());
    }

    /// <summary>
    /// A BMP character of category <paramref name="c"/> that lies outside the literal ranges of the expressions above
    /// (not ASCII, not in DeepSeek's letter, punctuation or CJK ranges), except that the astral cased letters DeepSeek's
    /// letter class lists get cased stand-ins inside that class.
    /// </summary>
    private static char StandInFor(Rune r) => Rune.GetUnicodeCategory(r) switch
    {
        UnicodeCategory.UppercaseLetter => InDeepSeekAstralLetters(r.Value) ? '\u00C0' : '\uA7C0',
        UnicodeCategory.LowercaseLetter => InDeepSeekAstralLetters(r.Value) ? '\u00DF' : '\uA7C1',
        UnicodeCategory.TitlecaseLetter => '\u01C5',
        UnicodeCategory.ModifierLetter => '\u02B0',
        UnicodeCategory.OtherLetter => '\u00AA',
        UnicodeCategory.NonSpacingMark => '\u0300',
        UnicodeCategory.SpacingCombiningMark => '\u0903',
        UnicodeCategory.EnclosingMark => '\u0488',
        UnicodeCategory.DecimalDigitNumber => '\u0660',
        UnicodeCategory.LetterNumber => '\u2160',
        UnicodeCategory.OtherNumber => '\u00B2',
        UnicodeCategory.ConnectorPunctuation => '\u203F',
        UnicodeCategory.DashPunctuation => '\u2010',
        UnicodeCategory.OpenPunctuation => '\u2045',
        UnicodeCategory.ClosePunctuation => '\u2046',
        UnicodeCategory.InitialQuotePunctuation => '\u2039',
        UnicodeCategory.FinalQuotePunctuation => '\u203A',
        UnicodeCategory.OtherPunctuation => '\u203B',
        UnicodeCategory.MathSymbol => '\u2044',
        UnicodeCategory.CurrencySymbol => '\u20A0',
        UnicodeCategory.ModifierSymbol => '\u02C2',
        UnicodeCategory.OtherSymbol => '\u00A9',
        UnicodeCategory.Format => '\u2060',
        UnicodeCategory.PrivateUse => '\uE000',
        UnicodeCategory.SpaceSeparator => '\u2000',
        UnicodeCategory.Control => '\u0080',
        _ => '\u0378',  // unassigned
    };

    private static bool InDeepSeekAstralLetters(int cp) =>
        cp is >= 0x10400 and <= 0x1044F or >= 0x104B0 and <= 0x104D3 or >= 0x104D8 and <= 0x104FB or >= 0x10C80 and <= 0x10CB2
            or >= 0x10CC0 and <= 0x10CF2 or >= 0x118A0 and <= 0x118DF or >= 0x1E900 and <= 0x1E943;
}
