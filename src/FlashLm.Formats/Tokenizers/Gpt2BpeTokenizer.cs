using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using Microsoft.ML.Tokenizers;

namespace FlashLm.Formats;

/// <summary>
/// GPT-2 style byte-level BPE (GGUF tokenizer.ggml.model = "gpt2"; OPT's vocab.json + merges.txt).
/// Encoding goes through Microsoft.ML.Tokenizers' BpeTokenizer with byte-level mode and the RoBERTa
/// (GPT-2) pre-tokenizer; BOS, when asked for, is prepended by id. Vocabulary strings use GPT-2's
/// byte-to-unicode mapping (<see cref="ByteLevel"/>), which <see cref="Piece"/> undoes; special tokens
/// (BOS, EOS, &lt;s&gt;, &lt;/s&gt;, &lt;pad&gt;, &lt;unk&gt;) print nothing.
/// </summary>
public sealed class Gpt2BpeTokenizer : ITextTokenizer
{
    public const string VocabFileName = "vocab.json";
    public const string MergesFileName = "merges.txt";
    /// <summary>FlashLm's own small file with the BOS/EOS ids, written by <see cref="Export"/>.</summary>
    public const string SettingsFileName = "gpt2.json";

    // Ids above this in a vocab.json are treated as corruption (the id -> text table is sized by the largest id).
    private const int MaxId = (1 << 24) - 1;

    private readonly Dictionary<string, int> _vocab;
    private readonly string[] _tokens;  // id -> stored text ("" for ids a sparse vocabulary leaves unused)
    private readonly string[] _merges;  // "a b", highest priority first
    private readonly byte[][] _pieces;  // id -> printed bytes (empty for special tokens)
    private readonly BpeTokenizer _inner;

    public int VocabSize => _tokens.Length;
    public int BosId { get; }
    public int EosId { get; }
    public string Kind => "gpt2";
    public IReadOnlyList<string> Merges => _merges;

    /// <param name="tokens">Token strings by id (byte-level characters).</param>
    /// <param name="merges">Merge rules "a b", highest priority first ("#version" lines and empty lines are skipped).</param>
    public Gpt2BpeTokenizer(IReadOnlyList<string> tokens, IReadOnlyList<string> merges, int bos, int eos, string source = "tokenizer")
        : this(ById(tokens), merges, bos, eos, source)
    {
    }

    /// <summary>Builds from a vocabulary dictionary (token string to id; ids may leave gaps, which become empty tokens).</summary>
    public Gpt2BpeTokenizer(IReadOnlyDictionary<string, int> vocab, IReadOnlyList<string> merges, int bos, int eos, string source = "tokenizer")
        : this(ByText(vocab, source), merges, bos, eos, source)
    {
    }

    private Gpt2BpeTokenizer((string[] Tokens, Dictionary<string, int> Vocab) v, IReadOnlyList<string> merges, int bos, int eos, string source)
    {
        (_tokens, _vocab) = v;
        if (_tokens.Length == 0) throw new ModelFormatException(source, "the vocabulary is empty", "tokens");
        if (bos < 0 || bos >= _tokens.Length) throw new ModelFormatException(source, $"BOS id {bos} is outside the vocabulary of {_tokens.Length}", "bos_token_id");
        if (eos < 0 || eos >= _tokens.Length) throw new ModelFormatException(source, $"EOS id {eos} is outside the vocabulary of {_tokens.Length}", "eos_token_id");
        BosId = bos;
        EosId = eos;
        var kept = new List<string>(merges.Count);
        for (int i = 0; i < merges.Count; i++)
        {
            var m = merges[i];
            if (m.Length == 0 || m.StartsWith("#version", StringComparison.Ordinal)) continue;
            CheckMerge(m, source, $"merges[{i}]");
            kept.Add(m);
        }
        _merges = kept.ToArray();
        try
        {
            _inner = BpeTokenizer.Create(new BpeOptions(_vocab)
            {
                Merges = _merges,
                ByteLevel = true,
                PreTokenizer = RobertaPreTokenizer.Instance,
            });
        }
        catch (Exception e) when (e is ArgumentException or InvalidOperationException or FormatException or KeyNotFoundException)
        {
            throw new ModelFormatException(source, $"the BPE vocabulary and merges do not form a tokenizer: {e.Message}", "merges", null, e);
        }
        _pieces = new byte[_tokens.Length][];
        for (int i = 0; i < _tokens.Length; i++)
            _pieces[i] = IsSpecial(_tokens[i]) || i == bos || i == eos ? [] : ByteLevel.ToBytes(_tokens[i]);
    }

    private static bool IsSpecial(string t) => t is "<s>" or "</s>" or "<pad>" or "<unk>";

    private static (string[], Dictionary<string, int>) ById(IReadOnlyList<string> tokens)
    {
        var vocab = new Dictionary<string, int>(tokens.Count, StringComparer.Ordinal);
        for (int i = 0; i < tokens.Count; i++) vocab.TryAdd(tokens[i], i);
        return (tokens.ToArray(), vocab);
    }

    private static (string[], Dictionary<string, int>) ByText(IReadOnlyDictionary<string, int> vocab, string source)
    {
        int max = -1;
        foreach (var (text, id) in vocab)
        {
            if (id < 0 || id > MaxId) throw new ModelFormatException(source, $"token id {id} is out of range 0..{MaxId}", text);
            max = Math.Max(max, id);
        }
        var tokens = new string?[max + 1];
        foreach (var (text, id) in vocab)
        {
            if (tokens[id] is not null)
                throw new ModelFormatException(source, $"id {id} is used by '{tokens[id]}' and '{text}'", text);
            tokens[id] = text;
        }
        return (Array.ConvertAll(tokens, t => t ?? ""), new Dictionary<string, int>(vocab, StringComparer.Ordinal));
    }

    /// <summary>A merge rule is two non-empty symbols separated by one space.</summary>
    private static void CheckMerge(string m, string file, string key)
    {
        int sp = m.IndexOf(' ');
        if (sp <= 0 || sp == m.Length - 1 || m.IndexOf(' ', sp + 1) >= 0)
            throw new ModelFormatException(file, $"merge rule '{m}' is not a pair 'a b'", key);
    }

    public int[] Encode(string text, bool addBos)
    {
        var ids = _inner.EncodeToIds(text);
        var result = new int[ids.Count + (addBos ? 1 : 0)];
        int k = 0;
        if (addBos) result[k++] = BosId;
        foreach (var id in ids) result[k++] = id;
        return result;
    }

    /// <summary>The bytes of the token (GPT-2 byte-level decoding needs no context: spaces are part of pieces).</summary>
    public byte[] Piece(int previous, int token) => _pieces[token];

    public string TokenText(int token) => _tokens[token];

    public IReadOnlyDictionary<string, byte[]> Export() => new Dictionary<string, byte[]>
    {
        [VocabFileName] = VocabJson(_tokens.Select((t, id) => (t, id)).Where(e => _vocab.TryGetValue(e.t, out var v) && v == e.id)),
        [MergesFileName] = MergesText(_merges),
        [SettingsFileName] = JsonSerializer.SerializeToUtf8Bytes(new Settings(BosId, EosId)),
    };

    private static byte[] VocabJson(IEnumerable<(string Text, int Id)> entries)
    {
        var ms = new MemoryStream();
        using (var w = new Utf8JsonWriter(ms))
        {
            w.WriteStartObject();
            foreach (var (text, id) in entries) w.WriteNumber(text, id);
            w.WriteEndObject();
        }
        return ms.ToArray();
    }

    private static byte[] MergesText(IEnumerable<string> merges)
    {
        var sb = new StringBuilder("#version: 0.2\n");
        foreach (var m in merges) sb.Append(m).Append('\n');
        return Encoding.UTF8.GetBytes(sb.ToString());
    }

    /// <summary>
    /// Loads vocab.json + merges.txt from <paramref name="folder"/> (a Hugging Face model folder or a folder
    /// written by <see cref="Export"/>). BOS/EOS come from the arguments, else from gpt2.json, else both are 0.
    /// </summary>
    /// <param name="maxVocab">The model's vocabulary size, when known: ids at or past it are refused before any table is sized by them.</param>
    public static Gpt2BpeTokenizer Load(string folder, int? bos = null, int? eos = null, int? maxVocab = null)
    {
        var files = new Dictionary<string, byte[]>();
        foreach (var name in new[] { VocabFileName, MergesFileName, SettingsFileName })
        {
            var path = System.IO.Path.Combine(folder, name);
            if (File.Exists(path)) files[name] = File.ReadAllBytes(path);
            else if (name != SettingsFileName) throw new ModelFormatException(folder, $"tokenizer file {name} is missing", name);
        }
        return FromFiles(files, folder, bos, eos, maxVocab);
    }

    /// <summary>
    /// Builds the tokenizer from file contents as <see cref="Export"/> or <see cref="CreateSynthetic"/> give them
    /// (vocab.json, merges.txt, optional gpt2.json); <paramref name="folder"/> names the files in errors.
    /// </summary>
    public static Gpt2BpeTokenizer FromFiles(IReadOnlyDictionary<string, byte[]> files, string folder, int? bos = null, int? eos = null, int? maxVocab = null)
    {
        var vocabPath = System.IO.Path.Combine(folder, VocabFileName);
        var mergesPath = System.IO.Path.Combine(folder, MergesFileName);
        if (!files.TryGetValue(VocabFileName, out var vocabJson)) throw new ModelFormatException(folder, $"tokenizer file {VocabFileName} is missing", VocabFileName);
        if (!files.TryGetValue(MergesFileName, out var mergesTxt)) throw new ModelFormatException(folder, $"tokenizer file {MergesFileName} is missing", MergesFileName);
        Dictionary<string, int> vocab;
        try
        {
            vocab = JsonSerializer.Deserialize<Dictionary<string, int>>(vocabJson)
                    ?? throw new ModelFormatException(vocabPath, "vocabulary is null");
        }
        catch (JsonException e)
        {
            throw new ModelFormatException(vocabPath, $"not a JSON object of token -> id: {e.Message}", null, e.LineNumber == 0 ? e.BytePositionInLine : null, e);
        }
        if (vocab.Count == 0) throw new ModelFormatException(vocabPath, "vocabulary is empty");
        // The id table is sized by the largest id: one corrupt id of 14 million cost seconds and 100 MB.
        if (maxVocab is { } limit)
            foreach (var (text, id) in vocab)
                if (id < 0 || id >= limit)
                    throw new ModelFormatException(vocabPath, $"token '{ModelFormatException.Printable(text)}' has id {id}, outside the model's vocabulary of {limit}", "vocab_size");

        var merges = new List<string>();
        var lines = Utf8Text.Decode(mergesTxt).Split('\n');
        for (int i = 0; i < lines.Length; i++)
        {
            var line = lines[i].TrimEnd('\r');
            if (line.Length == 0 || (i == 0 && line.StartsWith("#version", StringComparison.Ordinal))) continue;
            CheckMerge(line, mergesPath, $"line {i + 1}");
            merges.Add(line);
        }

        if ((bos is null || eos is null) && files.TryGetValue(SettingsFileName, out var settings))
        {
            var settingsPath = System.IO.Path.Combine(folder, SettingsFileName);
            try
            {
                var s = JsonSerializer.Deserialize<Settings>(settings);
                bos ??= s?.Bos;
                eos ??= s?.Eos;
            }
            catch (JsonException e) { throw new ModelFormatException(settingsPath, $"malformed settings: {e.Message}", null, null, e); }
        }
        return new Gpt2BpeTokenizer(vocab, merges, bos ?? 0, eos ?? 0, vocabPath);
    }

    private sealed record Settings(int Bos, int Eos);

    /// <summary>
    /// A small but real GPT-2 style vocabulary of exactly <paramref name="vocabSize"/> tokens for synthetic OPT
    /// models: ids 0..3 are &lt;s&gt;, &lt;pad&gt;, &lt;/s&gt;, &lt;unk&gt; (as in OPT), then the 256 byte-level
    /// symbols, then merges learned greedily (most frequent adjacent pair, ties by ordinal order) from a short
    /// embedded English text, then placeholder tokens once the text has no pairs left.
    /// Returns the files vocab.json and merges.txt (load them with <see cref="FromFiles"/>).
    /// </summary>
    public static IReadOnlyDictionary<string, byte[]> CreateSynthetic(int vocabSize)
    {
        const int baseTokens = 4 + 256;
        if (vocabSize < baseTokens) throw new ArgumentOutOfRangeException(nameof(vocabSize), $"need at least {baseTokens} tokens, got {vocabSize}");
        var vocab = new List<string> { "<s>", "<pad>", "</s>", "<unk>" };
        for (int b = 0; b < 256; b++) vocab.Add(ByteLevel.CharOf((byte)b).ToString());
        var known = new HashSet<string>(vocab, StringComparer.Ordinal);
        var merges = new List<string>();

        // Words as GPT-2 pre-tokenizes them (a leading space belongs to the word), in byte-level characters.
        var words = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (Match m in Regex.Matches(SyntheticText, @" ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+"))
        {
            var w = ByteLevel.ToChars(Encoding.UTF8.GetBytes(m.Value));
            words[w] = words.GetValueOrDefault(w) + 1;
        }
        var split = words.Select(kv => (Symbols: kv.Key.Select(c => c.ToString()).ToList(), Count: kv.Value)).ToList();
        var pairCounts = new Dictionary<(string, string), int>();
        while (vocab.Count < vocabSize)
        {
            pairCounts.Clear();
            foreach (var (symbols, count) in split)
                for (int i = 0; i + 1 < symbols.Count; i++)
                    pairCounts[(symbols[i], symbols[i + 1])] = pairCounts.GetValueOrDefault((symbols[i], symbols[i + 1])) + count;
            (string A, string B)? best = null;
            int bestCount = 0;
            foreach (var (pair, count) in pairCounts)
            {
                if (known.Contains(pair.Item1 + pair.Item2)) continue;
                if (count > bestCount || count == bestCount && best is { } b && Compare(pair, b) < 0)
                {
                    best = pair;
                    bestCount = count;
                }
            }
            if (best is not { } p) break;
            string merged = p.A + p.B;
            merges.Add(p.A + " " + p.B);
            vocab.Add(merged);
            known.Add(merged);
            foreach (var (symbols, _) in split)
                for (int i = 0; i + 1 < symbols.Count; i++)
                    if (symbols[i] == p.A && symbols[i + 1] == p.B)
                    {
                        symbols[i] = merged;
                        symbols.RemoveAt(i + 1);
                    }
        }
        // Unreachable placeholders fill the rest (no merge produces them, so encoding never emits them).
        for (int i = 0; vocab.Count < vocabSize; i++) vocab.Add($"<extra_{i}>");

        return new Dictionary<string, byte[]>
        {
            [VocabFileName] = VocabJson(vocab.Select((t, id) => (t, id))),
            [MergesFileName] = MergesText(merges),
        };
    }

    private static int Compare((string, string) x, (string, string) y)
    {
        int c = string.CompareOrdinal(x.Item1, y.Item1);
        return c != 0 ? c : string.CompareOrdinal(x.Item2, y.Item2);
    }

    /// <summary>Training text for <see cref="CreateSynthetic"/> (our own sentences).</summary>
    private const string SyntheticText =
        "The quick brown fox jumps over the lazy dog. A small model reads its weights from flash " +
        "and keeps only the hot neurons in memory. Once upon a time there was a little girl who liked " +
        "to read books about the sea, the stars and the mountains. She walked to the library every " +
        "morning and came home in the evening with a bag full of stories. The weather was cold, but " +
        "the sun was shining and the birds were singing in the trees. Numbers like 1, 2, 3, 10 and 2024 " +
        "appear in text too, as do questions: what time is it? Where are you going? How many apples " +
        "did you buy? The answer is that there were seven apples, three pears and one orange on the table. " +
        "Language models predict the next token from the previous tokens, one token at a time, and the " +
        "predictor guesses which neurons of the feed forward network will be active for this token.";
}
