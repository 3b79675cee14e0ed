using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using Microsoft.ML.Tokenizers;

namespace FlashLm.Formats.HuggingFace;

/// <summary>
/// GPT-2 style byte-level BPE (OPT's tokenizer): vocab.json (token -> id) and merges.txt (one "a b" pair per
/// line, best first). Tokens are written in GPT-2's byte-to-character alphabet (space is 'Ġ'); encoding is
/// done by Microsoft.ML.Tokenizers with the RoBERTa pre-tokenizer, decoding maps each character back to its byte.
/// </summary>
public sealed class HfBpeTokenizer : ITextTokenizer
{
    public const string VocabFile = "vocab.json";
    public const string MergesFile = "merges.txt";
    /// <summary>FlashLm's own small metadata file (bos/eos ids), written by <see cref="Export"/>.</summary>
    public const string MetaFile = "hf_tokenizer.json";

    private readonly BpeTokenizer _bpe;
    private readonly byte[] _vocabJson, _mergesTxt;
    private readonly string[] _text;   // id -> stored token text ("" for unused ids)
    private readonly byte[][] _bytes;  // id -> printed bytes (empty for special tokens)

    public int VocabSize => _text.Length;
    public int BosId { get; }
    public int EosId { get; }
    /// <summary>OPT's tokenizer puts BOS ("&lt;/s&gt;", id 2) in front of every prompt.</summary>
    public bool AddsBos => true;
    public string Kind => "gpt2";

    private HfBpeTokenizer(string source, byte[] vocabJson, byte[] mergesTxt, int bosId, int eosId, int minVocab)
    {
        _vocabJson = vocabJson;
        _mergesTxt = mergesTxt;
        var vocabPath = System.IO.Path.Combine(source, VocabFile);
        var mergesPath = System.IO.Path.Combine(source, MergesFile);
        Dictionary<string, int> vocab;
        try
        {
            vocab = JsonSerializer.Deserialize<Dictionary<string, int>>(vocabJson)
                ?? throw new ModelFormatException(vocabPath, "vocabulary is null");
        }
        catch (JsonException e)
        {
            throw new ModelFormatException(vocabPath, $"not a JSON object of token -> id: {e.Message}", offset: e.LineNumber == 0 ? e.BytePositionInLine : null, inner: e);
        }
        int max = -1;
        foreach (var (tok, id) in vocab)
        {
            if (id < 0 || id >= 1 << 24) throw new ModelFormatException(vocabPath, $"token id {id} is out of range", tok);
            max = Math.Max(max, id);
        }
        if (max < 0) throw new ModelFormatException(vocabPath, "vocabulary is empty");
        _text = new string[Math.Max(max + 1, minVocab)];
        Array.Fill(_text, "");
        foreach (var (tok, id) in vocab) _text[id] = tok;
        if (bosId < 0 || bosId >= _text.Length) throw new ModelFormatException(vocabPath, $"bos id {bosId} is outside the vocabulary", "bos_token_id");
        if (eosId < 0 || eosId >= _text.Length) throw new ModelFormatException(vocabPath, $"eos id {eosId} is outside the vocabulary", "eos_token_id");
        BosId = bosId;
        EosId = eosId;
        _bytes = new byte[_text.Length][];
        for (int i = 0; i < _text.Length; i++)
            _bytes[i] = IsSpecial(_text[i]) || i == bosId || i == eosId ? [] : ByteLevel.ToBytes(_text[i]);

        var merges = new List<string>();
        var lines = Encoding.UTF8.GetString(mergesTxt).Split('\n');
        for (int i = 0; i < lines.Length; i++)
        {
            var line = lines[i].TrimEnd('\r');
            if (line.Length == 0 || (i == 0 && line.StartsWith("#version", StringComparison.Ordinal))) continue;
            int sp = line.IndexOf(' ');
            if (sp <= 0 || sp == line.Length - 1 || line.IndexOf(' ', sp + 1) >= 0)
                throw new ModelFormatException(mergesPath, $"line {i + 1} is not a pair 'a b': '{line}'", $"line {i + 1}");
            merges.Add(line);
        }
        try
        {
            _bpe = BpeTokenizer.Create(new BpeOptions(vocab)
            {
                Merges = merges,
                ByteLevel = true,
                PreTokenizer = RobertaPreTokenizer.Instance,
            });
        }
        catch (Exception e) when (e is ArgumentException or InvalidOperationException or FormatException or KeyNotFoundException)
        {
            throw new ModelFormatException(mergesPath, $"vocabulary and merges do not form a BPE tokenizer: {e.Message}", inner: e);
        }
    }

    private static bool IsSpecial(string t) => t is "<s>" or "</s>" or "<pad>" or "<unk>";

    /// <summary>Builds the tokenizer from file contents; <paramref name="source"/> names the folder in errors.</summary>
    public static HfBpeTokenizer FromFiles(string source, byte[] vocabJson, byte[] mergesTxt, int bosId = 2, int eosId = 2, int minVocab = 0) =>
        new(source, vocabJson, mergesTxt, bosId, eosId, minVocab);

    /// <summary>
    /// Loads vocab.json + merges.txt from <paramref name="folder"/> (an HF model folder or a folder written by
    /// <see cref="Export"/>). BOS/EOS come from hf_tokenizer.json when present, else from the arguments.
    /// The tokenizer may have fewer ids than the model (<paramref name="vocabSize"/>; OPT pads its embedding
    /// table), but not more.
    /// </summary>
    public static HfBpeTokenizer Load(string folder, int vocabSize, int bosId = 2, int eosId = 2)
    {
        var vocabPath = System.IO.Path.Combine(folder, VocabFile);
        var mergesPath = System.IO.Path.Combine(folder, MergesFile);
        if (!File.Exists(vocabPath)) throw new ModelFormatException(folder, $"tokenizer file {VocabFile} is missing", VocabFile);
        if (!File.Exists(mergesPath)) throw new ModelFormatException(folder, $"tokenizer file {MergesFile} is missing", MergesFile);
        var metaPath = System.IO.Path.Combine(folder, MetaFile);
        if (File.Exists(metaPath))
        {
            using var meta = JsonFile.Open(metaPath, MetaFile);
            bosId = meta.Int("bos_token_id", bosId);
            eosId = meta.Int("eos_token_id", eosId);
        }
        var t = new HfBpeTokenizer(folder, File.ReadAllBytes(vocabPath), File.ReadAllBytes(mergesPath), bosId, eosId, 0);
        if (t.VocabSize > vocabSize)
            throw new ModelFormatException(vocabPath, $"the tokenizer has {t.VocabSize} ids but the model only {vocabSize}", "vocab_size");
        return t;
    }

    public int[] Encode(string text, bool addBos)
    {
        var ids = _bpe.EncodeToIds(text);
        var result = new int[ids.Count + (addBos ? 1 : 0)];
        int at = 0;
        if (addBos) result[at++] = BosId;
        foreach (var id in ids) result[at++] = id;
        return result;
    }

    /// <summary>The raw bytes of <paramref name="token"/> (byte-level BPE needs no context; special tokens print nothing).</summary>
    public byte[] Piece(int previous, int token) => _bytes[token];

    public string TokenText(int token) => _text[token];

    public IReadOnlyDictionary<string, byte[]> Export() => new Dictionary<string, byte[]>
    {
        [VocabFile] = _vocabJson,
        [MergesFile] = _mergesTxt,
        [MetaFile] = JsonSerializer.SerializeToUtf8Bytes(new Dictionary<string, int> { ["bos_token_id"] = BosId, ["eos_token_id"] = EosId }),
    };

    /// <summary>
    /// A small but real GPT-2 style vocabulary of exactly <paramref name="vocabSize"/> tokens for synthetic OPT
    /// models: ids 0..3 are &lt;s&gt;, &lt;pad&gt;, &lt;/s&gt;, &lt;unk&gt; (as in OPT), then the 256 byte-level
    /// symbols, then merges learned greedily (most frequent adjacent pair, ties by ordinal order) from a short
    /// embedded English text, then placeholder tokens once the text has no pairs left.
    /// Returns the files vocab.json and merges.txt.
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

        var ms = new MemoryStream();
        using (var w = new Utf8JsonWriter(ms))
        {
            w.WriteStartObject();
            for (int i = 0; i < vocab.Count; i++) w.WriteNumber(vocab[i], i);
            w.WriteEndObject();
        }
        var mergesText = new StringBuilder("#version: 0.2\n");
        foreach (var m in merges) mergesText.Append(m).Append('\n');
        return new Dictionary<string, byte[]>
        {
            [VocabFile] = ms.ToArray(),
            [MergesFile] = Encoding.UTF8.GetBytes(mergesText.ToString()),
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

/// <summary>GPT-2's reversible byte-to-character alphabet used by byte-level BPE vocabularies.</summary>
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
        foreach (var ch in token)
        {
            if (CharToByte.TryGetValue(ch, out var b)) result.Add(b);
            else result.AddRange(Encoding.UTF8.GetBytes(ch.ToString()));
        }
        return result.ToArray();
    }
}
