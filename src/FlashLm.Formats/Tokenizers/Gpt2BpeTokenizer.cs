using System.Collections.Concurrent;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;

namespace FlashLm.Formats;

/// <summary>
/// Byte-level BPE (GGUF tokenizer.ggml.model = "gpt2"; OPT's vocab.json + merges.txt), identical to the Hugging Face
/// tokenizer the vocabulary came from: user-defined tokens (and, when parsing special tokens, control tokens) are
/// matched in the raw text first; the rest is split by the pre-tokenizer that tokenizer.ggml.pre names
/// (<see cref="PreTokenizer"/>); each piece's UTF-8 bytes are merged by rank, lowest rank first and leftmost among
/// equal ranks. Vocabulary strings use GPT-2's byte-to-unicode mapping (<see cref="ByteLevel"/>), which
/// <see cref="Piece"/> undoes; user-defined tokens print their text, control tokens (BOS, EOS, &lt;s&gt;, &lt;/s&gt;,
/// &lt;pad&gt;, &lt;unk&gt;) print nothing.
/// </summary>
/// <remarks>
/// Microsoft.ML.Tokenizers' BpeTokenizer (used before) gives the same ids for GPT-2's own pre-tokenizer, but it has no
/// pre-tokenizer sequences with isolated gaps (Falcon, DeepSeek), no added-token matching before pre-tokenization (MPT's
/// space runs), no ignore_merges (Llama 3); the merge loop here is FlashLm's own, O(n log n) in the piece length.
/// </remarks>
public sealed class Gpt2BpeTokenizer : ITextTokenizer
{
    public const string VocabFileName = "vocab.json";
    public const string MergesFileName = "merges.txt";

    /// <summary>FlashLm's own small file with the BOS/EOS ids and the GGUF settings, written by <see cref="Export"/>.</summary>
    public const string SettingsFileName = "gpt2.json";

    // Ids above this in a vocab.json are treated as corruption (the id -> text table is sized by the largest id).
    private const int MaxId = (1 << 24) - 1;
    // Words remembered with their ids; cleared when full (typical text repeats a few thousand words).
    private const int CacheLimit = 1 << 16;

    private readonly Dictionary<string, int> _vocab;
    private readonly string[] _tokens;  // id -> stored text ("" for ids a sparse vocabulary leaves unused)
    private readonly int[] _types;      // id -> SpmVocab.Type* (normal, control, user-defined, ...)
    private readonly string[] _merges;  // "a b", highest priority first
    private readonly Dictionary<long, (int Rank, int Id)> _mergeOf;  // (left id, right id) -> rank and merged id
    private readonly int[] _byteIds = new int[256];  // byte -> id of its byte-level character, -1 when missing
    private readonly byte[][] _pieces;  // id -> printed bytes (empty for control tokens)
    private readonly PreTokenizer _pre;
    private readonly SpecialTokenSplitter _special;
    private readonly ConcurrentDictionary<string, int[]> _cache = new(StringComparer.Ordinal);

    public int VocabSize => _tokens.Length;
    public int BosId { get; }
    public int EosId { get; }
    public string Kind => "gpt2";
    public IReadOnlyList<string> Merges => _merges;

    /// <summary>tokenizer.ggml.add_bos_token: whether <see cref="Encode(string, bool)"/> with addBos puts BOS first.</summary>
    public bool AddBos { get; }

    /// <summary>tokenizer.ggml.add_eos_token: whether <see cref="Encode(string, bool)"/> with addBos puts EOS last.</summary>
    public bool AddEos { get; }

    /// <summary>The pre-tokenizer's name (tokenizer.ggml.pre).</summary>
    public string PreTokenizerName => _pre.Name;

    /// <param name="tokens">Token strings by id (byte-level characters).</param>
    /// <param name="merges">Merge rules "a b", highest priority first ("#version" lines and empty lines are skipped).</param>
    public Gpt2BpeTokenizer(IReadOnlyList<string> tokens, IReadOnlyList<string> merges, int bos, int eos, string source = "tokenizer")
        : this(ById(tokens), merges, bos, eos, source, null, null, true, false)
    {
    }

    /// <summary>Builds from a vocabulary dictionary (token string to id; ids may leave gaps, which become empty tokens).</summary>
    public Gpt2BpeTokenizer(IReadOnlyDictionary<string, int> vocab, IReadOnlyList<string> merges, int bos, int eos, string source = "tokenizer")
        : this(ByText(vocab, source), merges, bos, eos, source, null, null, true, false)
    {
    }

    /// <summary>A GGUF vocabulary: token types (tokenizer.ggml.token_type), pre-tokenizer and BOS/EOS settings.</summary>
    internal Gpt2BpeTokenizer(IReadOnlyList<string> tokens, IReadOnlyList<string> merges, int bos, int eos, string source,
        int[]? types, PreTokenizer? pre, bool addBos, bool addEos)
        : this(ById(tokens), merges, bos, eos, source, types, pre, addBos, addEos)
    {
    }

    private Gpt2BpeTokenizer((string[] Tokens, Dictionary<string, int> Vocab) v, IReadOnlyList<string> merges, int bos, int eos, string source,
        int[]? types, PreTokenizer? pre, bool addBos, bool addEos)
    {
        (_tokens, _vocab) = v;
        if (_tokens.Length == 0) throw new ModelFormatException(source, "the vocabulary is empty", "tokens");
        if (bos < 0 || bos >= _tokens.Length) throw new ModelFormatException(source, $"BOS id {bos} is outside the vocabulary of {_tokens.Length}", "bos_token_id");
        if (eos < 0 || eos >= _tokens.Length) throw new ModelFormatException(source, $"EOS id {eos} is outside the vocabulary of {_tokens.Length}", "eos_token_id");
        if (types is not null && types.Length != _tokens.Length)
            throw new ModelFormatException(source, $"{types.Length} token types for {_tokens.Length} tokens", "tokenizer.ggml.token_type");
        BosId = bos;
        EosId = eos;
        AddBos = addBos;
        AddEos = addEos;
        _pre = pre ?? PreTokenizer.Gpt2Default;
        _types = types ?? Array.ConvertAll(_tokens, t => IsSpecial(t) ? SpmVocab.TypeControl : SpmVocab.TypeNormal);
        var kept = new List<string>(merges.Count);
        _mergeOf = new Dictionary<long, (int, int)>(merges.Count, MixedLong.Instance);
        for (int i = 0; i < merges.Count; i++)
        {
            var m = merges[i];
            if (m.Length == 0 || m.StartsWith("#version", StringComparison.Ordinal)) continue;
            int sp = CheckMerge(m, source, $"merges[{i}]");
            if (_vocab.TryGetValue(m[..sp], out int a) && _vocab.TryGetValue(m[(sp + 1)..], out int b)
                && _vocab.TryGetValue(string.Concat(m.AsSpan(0, sp), m.AsSpan(sp + 1)), out int merged))
                _mergeOf.TryAdd(Pair(a, b), (kept.Count, merged));  // a rule whose parts or result are not tokens can never apply
            kept.Add(m);
        }
        _merges = kept.ToArray();
        for (int b = 0; b < 256; b++) _byteIds[b] = _vocab.TryGetValue(ByteLevel.CharOf((byte)b).ToString(), out int id) ? id : -1;
        _special = new SpecialTokenSplitter(_tokens, _types);
        _pieces = new byte[_tokens.Length][];
        for (int i = 0; i < _tokens.Length; i++)
            _pieces[i] = _types[i] switch
            {
                SpmVocab.TypeUserDefined => Encoding.UTF8.GetBytes(_tokens[i]),
                SpmVocab.TypeControl or SpmVocab.TypeUnknown or SpmVocab.TypeUnused => [],
                _ => i == bos || i == eos ? [] : ByteLevel.ToBytes(_tokens[i]),
            };
    }

    private static long Pair(int a, int b) => (long)a << 32 | (uint)b;

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

    /// <summary>A merge rule is two non-empty symbols separated by one space; returns the space's index.</summary>
    private static int CheckMerge(string m, string file, string key)
    {
        int sp = m.IndexOf(' ');
        if (sp <= 0 || sp == m.Length - 1 || m.IndexOf(' ', sp + 1) >= 0)
            throw new ModelFormatException(file, $"merge rule '{m}' is not a pair 'a b'", key);
        return sp;
    }

    /// <summary>
    /// Encodes <paramref name="text"/>, parsing control tokens written in it; with <paramref name="addBos"/> (the start
    /// of a sequence) BOS and EOS are added as the vocabulary's add_bos_token / add_eos_token say.
    /// </summary>
    public int[] Encode(string text, bool addBos) => Encode(text, addBos, parseSpecial: true);

    /// <inheritdoc cref="ITextTokenizer.Encode(string, bool, bool)"/>
    public int[] Encode(string text, bool addBos, bool parseSpecial)
    {
        var ids = new List<int>(text.Length / 3 + 2);
        if (addBos && AddBos) ids.Add(BosId);
        var pieces = new List<(int Start, int Length)>();
        foreach (var f in _special.Split(text, parseSpecial))
        {
            if (f.IsToken) { ids.Add(f.Token); continue; }
            pieces.Clear();
            _pre.Split(text, f.Start, f.Length, pieces);
            foreach (var (start, length) in pieces) EncodeWord(text.Substring(start, length), ids);
        }
        if (addBos && AddEos) ids.Add(EosId);
        return ids.ToArray();
    }

    private void EncodeWord(string word, List<int> ids)
    {
        if (_cache.TryGetValue(word, out var cached)) { ids.AddRange(cached); return; }
        var result = Merge(word);
        if (word.Length > 64) { ids.AddRange(result); return; }  // long pieces rarely repeat
        if (_cache.Count >= CacheLimit) _cache.Clear();
        _cache.TryAdd(word, result);
        ids.AddRange(result);
    }

    /// <summary>Byte-level BPE of one pre-tokenized piece.</summary>
    private int[] Merge(string word)
    {
        var bytes = Encoding.UTF8.GetBytes(word);
        if (_pre.IgnoreMerges && _vocab.TryGetValue(ByteLevel.ToChars(bytes), out int whole)) return [whole];
        int n = bytes.Length;
        var sym = new int[n];
        for (int i = 0; i < n; i++) sym[i] = _byteIds[bytes[i]];
        if (n == 1) return sym[0] >= 0 ? sym : [];
        var next = new int[n];
        var prev = new int[n];
        for (int i = 0; i < n; i++) { next[i] = i + 1 < n ? i + 1 : -1; prev[i] = i - 1; }
        // Candidate merges keyed rank << 32 | left position: the lowest rank first, the leftmost among equal ranks.
        // Every adjacent pair is offered when it forms, so a popped key is current exactly when the pair now at that
        // position still has that rank; anything else is stale and skipped.
        var heap = new LongHeap(n);
        void Offer(int left)
        {
            int right = left >= 0 ? next[left] : -1;
            if (right < 0 || sym[left] < 0 || sym[right] < 0) return;
            if (_mergeOf.TryGetValue(Pair(sym[left], sym[right]), out var m)) heap.Push((long)m.Rank << 32 | (uint)left);
        }
        for (int i = 0; i + 1 < n; i++) Offer(i);
        while (heap.TryPop(out long key))
        {
            int left = (int)(key & 0xFFFFFFFF), right = next[left];
            if (right < 0 || sym[left] < 0 || sym[right] < 0
                || !_mergeOf.TryGetValue(Pair(sym[left], sym[right]), out var m) || m.Rank != (int)(key >> 32)) continue;
            sym[left] = m.Id;
            sym[right] = int.MinValue;  // removed
            next[left] = next[right];
            if (next[right] >= 0) prev[next[right]] = left;
            Offer(prev[left]);
            Offer(left);
        }
        var result = new List<int>();
        for (int i = 0; i >= 0; i = next[i])
            if (sym[i] >= 0) result.Add(sym[i]);  // a byte missing from the vocabulary is dropped
        return result.ToArray();
    }

    public byte[] Piece(int previous, int token) => _pieces[token];

    public string TokenText(int token) => _tokens[token];

    public IReadOnlyDictionary<string, byte[]> Export() => new Dictionary<string, byte[]>
    {
        [VocabFileName] = VocabJson(_tokens.Select((t, id) => (t, id)).Where(e => _vocab.TryGetValue(e.t, out var v) && v == e.id)),
        [MergesFileName] = MergesText(_merges),
        [SettingsFileName] = JsonSerializer.SerializeToUtf8Bytes(new Settings(BosId, EosId, _pre.Name, AddBos, AddEos,
            Enumerable.Range(0, _types.Length).Where(i => _types[i] != SpmVocab.TypeNormal).ToDictionary(i => i, i => _types[i]))),
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
    /// <param name="pre">The pre-tokenizer's name (llama.cpp's tokenizer.ggml.pre names) when the folder does not name one: a Hugging
    /// Face folder of a family whose pre-tokenizer is known from its architecture, e.g. Qwen's "qwen2"; null: gpt2.json's, else GPT-2's.</param>
    public static Gpt2BpeTokenizer Load(string folder, int? bos = null, int? eos = null, int? maxVocab = null, string? pre = null)
    {
        var files = new Dictionary<string, byte[]>();
        foreach (var name in new[] { VocabFileName, MergesFileName, SettingsFileName })
        {
            var path = System.IO.Path.Combine(folder, name);
            if (File.Exists(path)) files[name] = File.ReadAllBytes(path);
            else if (name != SettingsFileName) throw new ModelFormatException(folder, $"tokenizer file {name} is missing", name);
        }
        return FromFiles(files, folder, bos, eos, maxVocab, pre is null ? null
            : PreTokenizer.ForName(pre) ?? throw new ArgumentException($"unknown pre-tokenizer '{pre}'", nameof(pre)), AddedTokens(folder));
    }

    /// <summary>tokenizer.json, where a Hugging Face folder lists its added tokens.</summary>
    public const string HfTokenizerFileName = "tokenizer.json";

    /// <summary>tokenizer_config.json, whose added_tokens_decoder lists them too (when tokenizer.json is absent).</summary>
    public const string HfTokenizerConfigFileName = "tokenizer_config.json";

    /// <summary>
    /// A Hugging Face folder's added tokens (Qwen's &lt;|im_start|&gt;, &lt;|endoftext|&gt;, &lt;think&gt;...), which vocab.json
    /// leaves out: tokenizer.json's added_tokens, else tokenizer_config.json's added_tokens_decoder; special ones become control
    /// tokens (matched in text when special tokens are parsed, decoded to nothing), the others user-defined (always matched,
    /// decoded as written), as llama.cpp's converter types them, with the file they came from (named by errors about them).
    /// Null when neither file exists.
    /// </summary>
    internal static (string File, List<(int Id, string Text, bool Special)> Tokens)? AddedTokens(string folder)
    {
        var json = System.IO.Path.Combine(folder, HfTokenizerFileName);
        var config = System.IO.Path.Combine(folder, HfTokenizerConfigFileName);
        string? path = File.Exists(json) ? json : File.Exists(config) ? config : null;
        if (path is null) return null;
        var added = new List<(int, string, bool)>();
        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllBytes(path), new JsonDocumentOptions { MaxDepth = 256 });
            if (path == json)
            {
                if (doc.RootElement.ValueKind != JsonValueKind.Object || !doc.RootElement.TryGetProperty("added_tokens", out var list) || list.ValueKind != JsonValueKind.Array)
                    return (path, added);
                int i = 0;
                foreach (var t in list.EnumerateArray())
                {
                    if (t.ValueKind != JsonValueKind.Object || !t.TryGetProperty("id", out var id) || id.ValueKind != JsonValueKind.Number || !id.TryGetInt32(out int value)
                        || !t.TryGetProperty("content", out var content) || content.ValueKind != JsonValueKind.String)
                        throw new ModelFormatException(path, "an added token needs an integer id and a string content", $"added_tokens[{i}]");
                    added.Add((value, content.GetString()!, t.TryGetProperty("special", out var sp) && sp.ValueKind == JsonValueKind.True));
                    i++;
                }
            }
            else
            {
                if (doc.RootElement.ValueKind != JsonValueKind.Object || !doc.RootElement.TryGetProperty("added_tokens_decoder", out var map) || map.ValueKind != JsonValueKind.Object)
                    return (path, added);
                foreach (var p in map.EnumerateObject())
                {
                    if (!int.TryParse(p.Name, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int value)
                        || p.Value.ValueKind != JsonValueKind.Object || !p.Value.TryGetProperty("content", out var content) || content.ValueKind != JsonValueKind.String)
                        throw new ModelFormatException(path, "an added token needs a numeric id and a string content", $"added_tokens_decoder.{ModelFormatException.Printable(p.Name, 40)}");
                    added.Add((value, content.GetString()!, p.Value.TryGetProperty("special", out var sp) && sp.ValueKind == JsonValueKind.True));
                }
            }
        }
        catch (JsonException e)
        {
            throw new ModelFormatException(path, $"not valid JSON: {e.Message}", null, null, e);
        }
        return (path, added);
    }

    /// <summary>
    /// Builds the tokenizer from file contents as <see cref="Export"/> or <see cref="CreateSynthetic"/> give them
    /// (vocab.json, merges.txt, optional gpt2.json); <paramref name="folder"/> names the files in errors.
    /// </summary>
    public static Gpt2BpeTokenizer FromFiles(IReadOnlyDictionary<string, byte[]> files, string folder, int? bos = null, int? eos = null, int? maxVocab = null) =>
        FromFiles(files, folder, bos, eos, maxVocab, null);

    internal static Gpt2BpeTokenizer FromFiles(IReadOnlyDictionary<string, byte[]> files, string folder, int? bos, int? eos, int? maxVocab,
        PreTokenizer? fallbackPre, (string File, List<(int Id, string Text, bool Special)> Tokens)? added = null)
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

        // Added tokens join the vocabulary (vocab.json leaves them out; where it has one, it must be at the same id).
        var addedTypes = new Dictionary<int, int>();
        if (added is var (addedPath, addedTokens))
        {
            foreach (var (id, text, special) in addedTokens)
            {
                if (id < 0 || id > MaxId || maxVocab is { } lim && id >= lim)
                    throw new ModelFormatException(addedPath, $"added token '{ModelFormatException.Printable(text)}' has id {id}, outside the model's vocabulary{(maxVocab is { } m ? $" of {m}" : "")}", "added_tokens");
                if (text.Length == 0) throw new ModelFormatException(addedPath, $"added token {id} is empty", "added_tokens");
                if (vocab.TryGetValue(text, out int have) && have != id)
                    throw new ModelFormatException(addedPath, $"added token '{ModelFormatException.Printable(text)}' has id {id}, but {VocabFileName} gives it {have}", "added_tokens");
                vocab[text] = id;
                addedTypes[id] = special ? SpmVocab.TypeControl : SpmVocab.TypeUserDefined;
            }
        }

        var merges = new List<string>();
        var lines = Utf8Text.Decode(mergesTxt).Split('\n');
        for (int i = 0; i < lines.Length; i++)
        {
            var line = lines[i].TrimEnd('\r');
            if (line.Length == 0 || (i == 0 && line.StartsWith("#version", StringComparison.Ordinal))) continue;
            CheckMerge(line, mergesPath, $"line {i + 1}");
            merges.Add(line);
        }

        Settings? s = null;
        var settingsPath = System.IO.Path.Combine(folder, SettingsFileName);
        if (files.TryGetValue(SettingsFileName, out var settings))
        {
            try { s = JsonSerializer.Deserialize<Settings>(settings); }
            catch (JsonException e) { throw new ModelFormatException(settingsPath, $"malformed settings: {e.Message}", null, null, e); }
        }
        bos ??= s?.Bos;
        eos ??= s?.Eos;
        var byText = ByText(vocab, vocabPath);
        int[]? types = null;
        if (s?.Types is { } listed)
        {
            types = Array.ConvertAll(byText.Item1, t => IsSpecial(t) ? SpmVocab.TypeControl : SpmVocab.TypeNormal);
            foreach (var (id, type) in listed)
            {
                if (id < 0 || id >= types.Length) throw new ModelFormatException(settingsPath, $"token id {id} is outside the vocabulary of {types.Length}", "Types");
                types[id] = type;
            }
        }
        if (addedTypes.Count > 0)
        {
            types ??= Array.ConvertAll(byText.Item1, t => IsSpecial(t) ? SpmVocab.TypeControl : SpmVocab.TypeNormal);
            foreach (var (id, type) in addedTypes) types[id] = type;
        }
        PreTokenizer? pre = fallbackPre;
        if (s?.Pre is { } name)
            pre = PreTokenizer.ForName(name) ?? throw new ModelFormatException(settingsPath, $"unknown pre-tokenizer '{ModelFormatException.Printable(name)}'", "Pre");
        return new Gpt2BpeTokenizer(byText, merges, bos ?? 0, eos ?? 0, vocabPath, types, pre, s?.AddBos ?? true, s?.AddEos ?? false);
    }

    /// <summary>gpt2.json: the special ids, and (since the GGUF pre-tokenizers) the pre-tokenizer, add_bos/add_eos and the non-normal token types by id.</summary>
    private sealed record Settings(int Bos, int Eos, string? Pre = null, bool? AddBos = null, bool? AddEos = null, Dictionary<int, int>? Types = null);

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

/// <summary>
/// Hashes a (left id, right id) pair key by multiplying it out: long's own hash (low ^ high word) sends every pair
/// of two equal ids to 0 and made merging a million spaces take seconds.
/// </summary>
internal sealed class MixedLong : IEqualityComparer<long>
{
    public static readonly MixedLong Instance = new();
    public bool Equals(long x, long y) => x == y;
    public int GetHashCode(long v) => (int)((ulong)(v * unchecked((long)0x9E3779B97F4A7C15)) >> 32);
}

/// <summary>A binary min-heap of longs (merge keys), cheaper than PriorityQueue of tuples on million-symbol pieces.</summary>
internal struct LongHeap(int capacity)
{
    private long[] _items = new long[Math.Max(capacity, 4)];
    private int _count;

    public void Push(long v)
    {
        if (_count == _items.Length) Array.Resize(ref _items, _count * 2);
        int i = _count++;
        while (i > 0)
        {
            int parent = (i - 1) >> 1;
            if (_items[parent] <= v) break;
            _items[i] = _items[parent];
            i = parent;
        }
        _items[i] = v;
    }

    public bool TryPop(out long v)
    {
        if (_count == 0) { v = 0; return false; }
        v = _items[0];
        long last = _items[--_count];
        int i = 0;
        while (true)
        {
            int child = 2 * i + 1;
            if (child >= _count) break;
            if (child + 1 < _count && _items[child + 1] < _items[child]) child++;
            if (_items[child] >= last) break;
            _items[i] = _items[child];
            i = child;
        }
        _items[i] = last;
        return true;
    }
}
