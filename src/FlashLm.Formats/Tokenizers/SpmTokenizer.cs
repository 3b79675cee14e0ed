using System.Text;
using System.Text.Json;

namespace FlashLm.Formats;

/// <summary>
/// SentencePiece BPE tokenizer (GGUF tokenizer.ggml.model = "llama"), identical to SentencePiece: user-defined (and,
/// when parsing special tokens, control) pieces are matched in the raw text first; each remaining fragment gets the
/// dummy-prefix space (at the start and after a special token; tokenizer.ggml.add_space_prefix), spaces become
/// U+2581, and adjacent symbols (starting from single characters) merge while their concatenation is a piece, the
/// highest score first and the leftmost among equal scores; characters left without a piece fall back to the
/// "&lt;0xAB&gt;" byte pieces. Decoding follows run.c: U+2581 prints as a space, the leading space after BOS is dropped,
/// byte pieces print as their byte; control tokens (BOS, EOS) print nothing.
/// Llama checkpoints' tokenizer.model files are read by <see cref="SentencePieceModelProto.Read"/>.
/// </summary>
/// <remarks>
/// Microsoft.ML.Tokenizers' LlamaTokenizer (used before) breaks score ties in runs of one character the other way
/// ("!!!!!!" gave 1738 21004 6824 where SentencePiece gives 1738 6824 21004), so the merge loop here is FlashLm's own.
/// </remarks>
public sealed class SpmTokenizer : ITextTokenizer
{
    public const string ModelFileName = "tokenizer.model";
    public const string SettingsFileName = "spm.json";

    private readonly SpmVocab _vocab;
    private readonly byte[] _model;
    private readonly Dictionary<string, int> _ids;
    private readonly Dictionary<string, int>.AlternateLookup<ReadOnlySpan<char>> _lookup;
    private readonly int[] _byteIds = new int[256];  // byte -> id of its "<0xAB>" piece, else -1
    private readonly string _source;
    private readonly byte[][] _pieces;  // run.c's printed bytes, with U+2581 already turned into ' '
    private readonly SpecialTokenSplitter _special;

    public SpmVocab Vocab => _vocab;
    public int VocabSize => _vocab.Tokens.Length;
    public int BosId => _vocab.Bos;
    public int EosId => _vocab.Eos;
    public string Kind => "spm";

    public SpmTokenizer(SpmVocab vocab, string source = "tokenizer")
    {
        vocab.Validate(source);
        _vocab = vocab;
        _source = source;
        _model = SentencePieceModelProto.Write(vocab);
        _ids = new Dictionary<string, int>(vocab.Tokens.Length, StringComparer.Ordinal);
        for (int i = 0; i < vocab.Tokens.Length; i++) _ids.TryAdd(vocab.Tokens[i], i);
        _lookup = _ids.GetAlternateLookup<ReadOnlySpan<char>>();
        for (int b = 0; b < 256; b++) _byteIds[b] = _ids.TryGetValue($"<0x{b:X2}>", out int id) ? id : -1;
        _special = new SpecialTokenSplitter(vocab.Tokens, vocab.Types);
        _pieces = new byte[vocab.Tokens.Length][];
        for (int i = 0; i < _pieces.Length; i++)
        {
            var text = vocab.Tokens[i];
            var utf8 = Encoding.UTF8.GetBytes(text);
            _pieces[i] = vocab.Types[i] == SpmVocab.TypeByte && PieceText.TryParseByteToken(utf8, out var b) ? [b]
                : vocab.Types[i] == SpmVocab.TypeControl || i == vocab.Bos || i == vocab.Eos ? []
                : Encoding.UTF8.GetBytes(text.Replace(SpmVocab.Space, ' '));
        }
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
        if (addBos && _vocab.AddBos) ids.Add(BosId);
        bool afterSpecial = true;  // the dummy prefix goes before the first fragment and after each special token
        foreach (var f in _special.Split(text, parseSpecial))
        {
            if (f.IsToken) { ids.Add(f.Token); afterSpecial = true; continue; }
            var escaped = new StringBuilder(f.Length + 1);
            if (_vocab.AddSpacePrefix && afterSpecial) escaped.Append(SpmVocab.Space);
            escaped.Append(text, f.Start, f.Length).Replace(' ', SpmVocab.Space);
            Merge(escaped.ToString(), ids);
            afterSpecial = false;
        }
        if (addBos && _vocab.AddEos) ids.Add(EosId);
        return ids.ToArray();
    }

    /// <summary>Orders merge candidates: the higher score first, then the leftmost.</summary>
    private sealed class Priority : IComparer<(float Score, int Left)>
    {
        public static readonly Priority Instance = new();
        public int Compare((float Score, int Left) x, (float Score, int Left) y) =>
            x.Score != y.Score ? y.Score.CompareTo(x.Score) : x.Left.CompareTo(y.Left);
    }

    /// <summary>SentencePiece BPE over one escaped fragment; O(n log n) in its length.</summary>
    private void Merge(string s, List<int> ids)
    {
        // Symbols are spans of s: start[i], len[i] (0 once merged into its left neighbour), linked by next/prev.
        int n = 0;
        var start = new int[s.Length];
        var len = new int[s.Length];
        for (int i = 0; i < s.Length; n++)
        {
            int w = char.IsHighSurrogate(s[i]) && i + 1 < s.Length && char.IsLowSurrogate(s[i + 1]) ? 2 : 1;
            start[n] = i;
            len[n] = w;
            i += w;
        }
        var next = new int[n];
        var prev = new int[n];
        for (int i = 0; i < n; i++) { next[i] = i + 1 < n ? i + 1 : -1; prev[i] = i - 1; }
        var queue = new PriorityQueue<(int Left, int Right, int Size), (float, int)>(Priority.Instance);
        void Offer(int left, int right)
        {
            if (left < 0 || right < 0) return;
            int size = len[left] + len[right];
            if (_lookup.TryGetValue(s.AsSpan(start[left], size), out int id))
                queue.Enqueue((left, right, size), (_vocab.Scores[id], left));
        }
        for (int i = 0; i + 1 < n; i++) Offer(i, i + 1);
        while (queue.TryDequeue(out var c, out _))
        {
            if (len[c.Left] == 0 || len[c.Right] == 0 || len[c.Left] + len[c.Right] != c.Size || next[c.Left] != c.Right) continue;  // stale
            len[c.Left] = c.Size;
            len[c.Right] = 0;
            next[c.Left] = next[c.Right];
            if (next[c.Right] >= 0) prev[next[c.Right]] = c.Left;
            Offer(prev[c.Left], c.Left);
            Offer(c.Left, next[c.Left]);
        }
        Span<byte> utf8 = stackalloc byte[4];
        for (int i = n > 0 ? 0 : -1; i >= 0; i = next[i])
        {
            var piece = s.AsSpan(start[i], len[i]);
            if (_lookup.TryGetValue(piece, out int id)) { ids.Add(id); continue; }
            // No piece for this character: its UTF-8 bytes as byte pieces.
            int k = Encoding.UTF8.GetBytes(piece, utf8);
            for (int j = 0; j < k; j++)
                ids.Add(_byteIds[utf8[j]] >= 0 ? _byteIds[utf8[j]]
                    : throw new ModelFormatException(_source, $"'{ModelFormatException.Printable(piece.ToString())}' has no piece and its byte 0x{utf8[j]:X2} has no <0x{utf8[j]:X2}> piece to fall back to, outside its vocabulary of {VocabSize} (are the 256 byte pieces <0x00>..<0xFF> missing?)", "tokenizer"));
        }
    }

    public byte[] Piece(int previous, int token)
    {
        var p = _pieces[token];
        if (previous == BosId && p.Length > 0 && p[0] == (byte)' ' && _vocab.Types[token] != SpmVocab.TypeByte) return p[1..];
        return p;
    }

    public string TokenText(int token) => _vocab.Tokens[token];

    public IReadOnlyDictionary<string, byte[]> Export() => new Dictionary<string, byte[]>
    {
        [ModelFileName] = _model,
        [SettingsFileName] = JsonSerializer.SerializeToUtf8Bytes(new Settings(_vocab.Bos, _vocab.Eos, _vocab.Unk, _vocab.AddBos, _vocab.AddEos, _vocab.AddSpacePrefix)),
    };

    /// <summary>
    /// Recreates the tokenizer from the files <see cref="Export"/> wrote into <paramref name="folder"/>;
    /// it must have exactly <paramref name="vocabSize"/> pieces.
    /// </summary>
    public static SpmTokenizer Load(string folder, int vocabSize)
    {
        var t = LoadModel(folder);
        if (t.VocabSize != vocabSize)
            throw new ModelFormatException(System.IO.Path.Combine(folder, ModelFileName),
                $"the tokenizer has {t.VocabSize} pieces, the model's vocabulary is {vocabSize}", "vocab_size");
        return t;
    }

    /// <summary>
    /// Loads tokenizer.model from <paramref name="folder"/> (a Llama checkpoint folder or one written by
    /// <see cref="Export"/>). The special ids come from the arguments (e.g. config.json's), else from spm.json,
    /// else from the model's trainer spec.
    /// </summary>
    public static SpmTokenizer LoadModel(string folder, int? bos = null, int? eos = null)
    {
        var modelPath = System.IO.Path.Combine(folder, ModelFileName);
        var settingsPath = System.IO.Path.Combine(folder, SettingsFileName);
        if (!File.Exists(modelPath)) throw new ModelFormatException(folder, $"tokenizer file {ModelFileName} is missing", ModelFileName);
        Settings? s = null;
        if (File.Exists(settingsPath))
        {
            try { s = JsonSerializer.Deserialize<Settings>(File.ReadAllBytes(settingsPath)); }
            catch (JsonException e) { throw new ModelFormatException(settingsPath, $"malformed settings: {e.Message}", null, null, e); }
        }
        var v = SentencePieceModelProto.Read(File.ReadAllBytes(modelPath), modelPath, s?.AddBos ?? true);
        if (s is not null) v = v with { Bos = s.Bos, Eos = s.Eos, Unk = s.Unk, AddEos = s.AddEos ?? false, AddSpacePrefix = s.AddSpacePrefix ?? true };
        v = v with { Bos = bos ?? v.Bos, Eos = eos ?? v.Eos };
        return new SpmTokenizer(v, modelPath);
    }

    private sealed record Settings(int Bos, int Eos, int Unk, bool AddBos, bool? AddEos = null, bool? AddSpacePrefix = null);
}
