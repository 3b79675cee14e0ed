using System.Text;
using System.Text.Json;
using Microsoft.ML.Tokenizers;

namespace FlashLm.Formats;

/// <summary>
/// SentencePiece BPE tokenizer (GGUF tokenizer.ggml.model = "llama"). Encoding goes through
/// Microsoft.ML.Tokenizers' LlamaTokenizer over a ModelProto built from the vocabulary (dummy prefix,
/// spaces escaped to U+2581, runs of spaces kept, byte fallback), which gives the same ids as run.c.
/// Decoding follows run.c: U+2581 prints as a space, the leading space after BOS is dropped,
/// "&lt;0xAB&gt;" byte tokens print as that byte; control tokens (BOS, EOS) print nothing.
/// Llama checkpoints' tokenizer.model files are read by <see cref="SentencePieceModelProto.Read"/>.
/// </summary>
public sealed class SpmTokenizer : ITextTokenizer
{
    public const string ModelFileName = "tokenizer.model";
    public const string SettingsFileName = "spm.json";

    private readonly SpmVocab _vocab;
    private readonly byte[] _model;
    private readonly LlamaTokenizer _inner;
    private readonly byte[][] _pieces;  // run.c's printed bytes, with U+2581 already turned into ' '
    private readonly string _source;

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
        try
        {
            using var ms = new MemoryStream(_model, writable: false);
            _inner = LlamaTokenizer.Create(ms, addBeginOfSentence: false, addEndOfSentence: false);
        }
        catch (Exception e) when (e is ArgumentException or InvalidOperationException or FormatException or NotSupportedException
                                   or Google.Protobuf.InvalidProtocolBufferException)
        {
            throw new ModelFormatException(source, $"the SentencePiece vocabulary is not usable: {e.Message}", "tokenizer.ggml.tokens", null, e);
        }
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

    public int[] Encode(string text, bool addBos)
    {
        if (text.Length == 0) return addBos ? [BosId] : [];
        var ids = _inner.EncodeToIds(text, addBeginningOfSentence: addBos, addEndOfSentence: false,
            considerPreTokenization: true, considerNormalization: true);
        var result = new int[ids.Count];
        for (int i = 0; i < result.Length; i++)
        {
            // The encoder's byte fallback assumes the 256 byte pieces follow the specials; a vocabulary that lacks
            // them yields ids past its end.
            if ((uint)ids[i] >= (uint)VocabSize)
                throw new ModelFormatException(_source, $"the tokenizer encoded a piece as id {ids[i]}, outside its vocabulary of {VocabSize} (are the 256 byte pieces <0x00>..<0xFF> missing?)", "tokenizer");
            result[i] = ids[i];
        }
        return result;
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
        [SettingsFileName] = JsonSerializer.SerializeToUtf8Bytes(new Settings(_vocab.Bos, _vocab.Eos, _vocab.Unk, _vocab.AddBos)),
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
        if (s is not null) v = v with { Bos = s.Bos, Eos = s.Eos, Unk = s.Unk };
        v = v with { Bos = bos ?? v.Bos, Eos = eos ?? v.Eos };
        return new SpmTokenizer(v, modelPath);
    }

    private sealed record Settings(int Bos, int Eos, int Unk, bool AddBos);
}
