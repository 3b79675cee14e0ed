using System.Text;
using System.Text.Json;
using Microsoft.ML.Tokenizers;

namespace FlashLm.Formats;

/// <summary>
/// GPT-2 style byte-level BPE (GGUF tokenizer.ggml.model = "gpt2"; OPT's vocab.json + merges.txt).
/// Encoding goes through Microsoft.ML.Tokenizers' BpeTokenizer with byte-level mode and the RoBERTa
/// (GPT-2) pre-tokenizer; BOS, when asked for, is prepended by id. Vocabulary strings use GPT-2's
/// byte-to-unicode mapping (e.g. 'Ġ' for a space byte), which <see cref="Piece"/> undoes.
/// </summary>
public sealed class Gpt2BpeTokenizer : ITextTokenizer
{
    public const string VocabFileName = "vocab.json";
    public const string MergesFileName = "merges.txt";
    public const string SettingsFileName = "gpt2.json";

    private readonly string[] _tokens;
    private readonly string[] _merges;
    private readonly byte[][] _pieces;
    private readonly BpeTokenizer _inner;

    public int VocabSize => _tokens.Length;
    public int BosId { get; }
    public int EosId { get; }
    public string Kind => "gpt2";
    public IReadOnlyList<string> Merges => _merges;

    /// <param name="tokens">Token strings by id (byte-level characters).</param>
    /// <param name="merges">Merge rules "a b", highest priority first.</param>
    public Gpt2BpeTokenizer(IReadOnlyList<string> tokens, IReadOnlyList<string> merges, int bos, int eos, string source = "tokenizer")
    {
        _tokens = tokens.ToArray();
        _merges = merges.ToArray();
        if (_tokens.Length == 0) throw new ModelFormatException(source, "the vocabulary is empty", "tokens");
        if (bos < 0 || bos >= _tokens.Length) throw new ModelFormatException(source, $"BOS id {bos} is outside the vocabulary of {_tokens.Length}", "bos");
        if (eos < 0 || eos >= _tokens.Length) throw new ModelFormatException(source, $"EOS id {eos} is outside the vocabulary of {_tokens.Length}", "eos");
        BosId = bos;
        EosId = eos;
        var vocab = new Dictionary<string, int>(_tokens.Length, StringComparer.Ordinal);
        for (int i = 0; i < _tokens.Length; i++) vocab.TryAdd(_tokens[i], i);
        try
        {
            _inner = BpeTokenizer.Create(new BpeOptions(vocab)
            {
                Merges = _merges.Where(m => m.Length > 0 && !m.StartsWith("#version", StringComparison.Ordinal)),
                ByteLevel = true,
                PreTokenizer = RobertaPreTokenizer.Instance,
            });
        }
        catch (Exception e) when (e is ArgumentException or InvalidOperationException or FormatException or KeyNotFoundException)
        {
            throw new ModelFormatException(source, $"the BPE vocabulary or merges are not usable: {e.Message}", "merges", null, e);
        }
        _pieces = new byte[_tokens.Length][];
        for (int i = 0; i < _tokens.Length; i++) _pieces[i] = ByteLevelToBytes(_tokens[i]);
    }

    /// <summary>Builds from a vocabulary dictionary (token string to id; ids must be 0..n-1).</summary>
    public Gpt2BpeTokenizer(IReadOnlyDictionary<string, int> vocab, IReadOnlyList<string> merges, int bos, int eos, string source = "tokenizer")
        : this(TokensById(vocab, source), merges, bos, eos, source)
    {
    }

    private static string[] TokensById(IReadOnlyDictionary<string, int> vocab, string source)
    {
        var tokens = new string?[vocab.Count];
        foreach (var (text, id) in vocab)
        {
            if (id < 0 || id >= tokens.Length)
                throw new ModelFormatException(source, $"token id {id} is outside 0..{tokens.Length - 1} (ids must be dense)", text);
            if (tokens[id] is not null)
                throw new ModelFormatException(source, $"id {id} is used by '{tokens[id]}' and '{text}'", text);
            tokens[id] = text;
        }
        return tokens!;
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

    /// <summary>The bytes of the token (GPT-2 byte-level decoding; no space handling, spaces are part of pieces).</summary>
    public byte[] Piece(int previous, int token) => _pieces[token];

    public string TokenText(int token) => _tokens[token];

    public IReadOnlyDictionary<string, byte[]> Export()
    {
        var vocab = new Dictionary<string, int>(_tokens.Length, StringComparer.Ordinal);
        for (int i = 0; i < _tokens.Length; i++) vocab.TryAdd(_tokens[i], i);
        var merges = new StringBuilder("#version: 0.2\n");
        foreach (var m in _merges)
            if (!m.StartsWith("#version", StringComparison.Ordinal)) merges.Append(m).Append('\n');
        return new Dictionary<string, byte[]>
        {
            [VocabFileName] = JsonSerializer.SerializeToUtf8Bytes(vocab),
            [MergesFileName] = Encoding.UTF8.GetBytes(merges.ToString()),
            [SettingsFileName] = JsonSerializer.SerializeToUtf8Bytes(new Settings(BosId, EosId)),
        };
    }

    /// <summary>
    /// Loads vocab.json + merges.txt from <paramref name="folder"/>. BOS/EOS come from the arguments,
    /// else from gpt2.json (written by <see cref="Export"/>), else both are 0.
    /// </summary>
    public static Gpt2BpeTokenizer Load(string folder, int? bos = null, int? eos = null)
    {
        var vocabPath = System.IO.Path.Combine(folder, VocabFileName);
        var mergesPath = System.IO.Path.Combine(folder, MergesFileName);
        var settingsPath = System.IO.Path.Combine(folder, SettingsFileName);
        if (!File.Exists(vocabPath)) throw new ModelFormatException(vocabPath, "vocabulary file not found");
        if (!File.Exists(mergesPath)) throw new ModelFormatException(mergesPath, "merges file not found");
        Dictionary<string, int> vocab;
        try
        {
            vocab = JsonSerializer.Deserialize<Dictionary<string, int>>(File.ReadAllBytes(vocabPath))
                    ?? throw new ModelFormatException(vocabPath, "vocabulary is null");
        }
        catch (JsonException e) { throw new ModelFormatException(vocabPath, $"malformed vocabulary: {e.Message}", null, null, e); }
        var merges = File.ReadAllLines(mergesPath, Encoding.UTF8)
            .Where(l => l.Length > 0 && !l.StartsWith("#version", StringComparison.Ordinal))
            .ToList();
        if ((bos is null || eos is null) && File.Exists(settingsPath))
        {
            try
            {
                var s = JsonSerializer.Deserialize<Settings>(File.ReadAllBytes(settingsPath));
                bos ??= s?.Bos;
                eos ??= s?.Eos;
            }
            catch (JsonException e) { throw new ModelFormatException(settingsPath, $"malformed settings: {e.Message}", null, null, e); }
        }
        return new Gpt2BpeTokenizer(vocab, merges, bos ?? 0, eos ?? 0, vocabPath);
    }

    private sealed record Settings(int Bos, int Eos);

    // GPT-2's byte <-> unicode table: printable bytes map to themselves, the other 68 bytes (0-32, 127-160, 173)
    // to U+0100 upwards in byte order, so that every byte has a visible character.
    private static readonly Dictionary<char, byte> CharToByte = BuildCharToByte();

    private static Dictionary<char, byte> BuildCharToByte()
    {
        var map = new Dictionary<char, byte>(256);
        int n = 0;
        for (int b = 0; b < 256; b++)
        {
            bool printable = b is >= '!' and <= '~' or >= 0xA1 and <= 0xAC or >= 0xAE and <= 0xFF;
            map[printable ? (char)b : (char)(256 + n++)] = (byte)b;
        }
        return map;
    }

    /// <summary>Maps a byte-level token string back to its bytes; characters outside the table are kept as UTF-8.</summary>
    public static byte[] ByteLevelToBytes(string token)
    {
        var bytes = new List<byte>(token.Length);
        foreach (var ch in token)
        {
            if (CharToByte.TryGetValue(ch, out var b)) bytes.Add(b);
            else bytes.AddRange(Encoding.UTF8.GetBytes(ch.ToString()));
        }
        return bytes.ToArray();
    }
}
