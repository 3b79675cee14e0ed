using System.Text;
using System.Text.Json;
using Microsoft.ML.Tokenizers;

namespace FlashLm.Formats.HuggingFace;

/// <summary>
/// Llama's SentencePiece BPE tokenizer (tokenizer.model, a SentencePiece ModelProto), encoded by
/// Microsoft.ML.Tokenizers' LlamaTokenizer. Decoding is llama2.c's: U+2581 prints as a space, the leading
/// space after BOS is dropped, byte pieces "&lt;0xAB&gt;" print as the byte.
/// </summary>
public sealed class HfSpmTokenizer : ITextTokenizer
{
    public const string ModelFile = "tokenizer.model";

    private readonly LlamaTokenizer _spm;
    private readonly byte[] _model;
    private readonly string[] _text;  // id -> piece
    private readonly byte[][] _bytes; // id -> printed bytes (U+2581 as space), before the BOS rule

    public int VocabSize => _text.Length;
    public int BosId { get; }
    public int EosId { get; }
    public string Kind => "spm";

    private HfSpmTokenizer(string source, byte[] model, int bosId, int eosId)
    {
        var path = System.IO.Path.Combine(source, ModelFile);
        _model = model;
        try
        {
            using var ms = new MemoryStream(model, writable: false);
            _spm = LlamaTokenizer.Create(ms, addBeginOfSentence: false, addEndOfSentence: false);
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            throw new ModelFormatException(path, $"not a SentencePiece BPE model: {e.Message}", ModelFile, inner: e);
        }
        int max = -1;
        foreach (var (_, id) in _spm.Vocabulary) max = Math.Max(max, id);
        if (max < 0) throw new ModelFormatException(path, "the SentencePiece model has no pieces", ModelFile);
        _text = new string[max + 1];
        Array.Fill(_text, "");
        foreach (var (piece, id) in _spm.Vocabulary) if (id >= 0) _text[id] = piece;
        _bytes = new byte[_text.Length][];
        for (int i = 0; i < _text.Length; i++)
        {
            var utf8 = Encoding.UTF8.GetBytes(_text[i].Replace('\u2581', ' '));
            _bytes[i] = PieceText.TryParseByteToken(utf8, out var b) && _text[i].Length == 6 ? [b]
                : i == bosId || i == eosId ? []
                : utf8;
        }
        if (bosId < 0 || bosId >= _text.Length) throw new ModelFormatException(path, $"bos id {bosId} is outside the vocabulary", "bos_token_id");
        if (eosId < 0 || eosId >= _text.Length) throw new ModelFormatException(path, $"eos id {eosId} is outside the vocabulary", "eos_token_id");
        BosId = bosId;
        EosId = eosId;
    }

    public static HfSpmTokenizer FromBytes(string source, byte[] model, int bosId = 1, int eosId = 2) => new(source, model, bosId, eosId);

    /// <summary>
    /// Loads tokenizer.model from <paramref name="folder"/>; BOS/EOS from hf_tokenizer.json when present,
    /// else the arguments (config.json's ids).
    /// </summary>
    public static HfSpmTokenizer Load(string folder, int vocabSize, int bosId = 1, int eosId = 2)
    {
        var path = System.IO.Path.Combine(folder, ModelFile);
        if (!File.Exists(path)) throw new ModelFormatException(folder, $"tokenizer file {ModelFile} is missing", ModelFile);
        var metaPath = System.IO.Path.Combine(folder, HfBpeTokenizer.MetaFile);
        if (File.Exists(metaPath))
        {
            using var meta = JsonFile.Open(metaPath, HfBpeTokenizer.MetaFile);
            bosId = meta.Int("bos_token_id", bosId);
            eosId = meta.Int("eos_token_id", eosId);
        }
        var t = new HfSpmTokenizer(folder, File.ReadAllBytes(path), bosId, eosId);
        if (t.VocabSize > vocabSize)
            throw new ModelFormatException(path, $"the tokenizer has {t.VocabSize} ids but the model only {vocabSize}", "vocab_size");
        return t;
    }

    public int[] Encode(string text, bool addBos)
    {
        var ids = _spm.EncodeToIds(text, addBos, false);
        if (addBos && (ids.Count == 0 || ids[0] != BosId))
        {
            // The model's own bos_id differs from config.json's: trust config.json.
            var r = new int[ids.Count];
            r[0] = BosId;
            for (int i = 1; i < ids.Count; i++) r[i] = ids[i];
            return ids.Count == 0 ? [BosId] : r;
        }
        return ids.ToArray();
    }

    public byte[] Piece(int previous, int token)
    {
        var b = _bytes[token];
        return previous == BosId && b.Length > 0 && b[0] == (byte)' ' && _text[token].Length > 0 && _text[token][0] == '\u2581' ? b[1..] : b;
    }

    public string TokenText(int token) => _text[token];

    public IReadOnlyDictionary<string, byte[]> Export() => new Dictionary<string, byte[]>
    {
        [ModelFile] = _model,
        [HfBpeTokenizer.MetaFile] = JsonSerializer.SerializeToUtf8Bytes(new Dictionary<string, int> { ["bos_token_id"] = BosId, ["eos_token_id"] = EosId }),
    };
}

/// <summary>
/// Writes a minimal SentencePiece BPE ModelProto (tokenizer.model): pieces with scores and types, a trainer
/// spec (BPE, byte fallback, unk/bos/eos ids) and an identity normalizer with a dummy prefix and whitespace
/// escaping. Used to give synthetic Llama models a real tokenizer and to export llama2.c vocabularies.
/// Field numbers are those of sentencepiece_model.proto.
/// </summary>
public static class SpmModelWriter
{
    public enum PieceType { Normal = 1, Unknown = 2, Control = 3, UserDefined = 4, Unused = 5, Byte = 6 }

    public static byte[] Build(IReadOnlyList<(string Piece, float Score, PieceType Type)> pieces, int unkId = 0, int bosId = 1, int eosId = 2)
    {
        var model = new MemoryStream();
        foreach (var (piece, score, type) in pieces)
        {
            var p = new MemoryStream();
            WriteBytes(p, 1, Encoding.UTF8.GetBytes(piece));
            WriteTag(p, 2, 5);
            p.Write(BitConverter.GetBytes(score)); // little-endian fixed32
            WriteVarintField(p, 3, (ulong)type);
            WriteBytes(model, 1, p.ToArray());
        }
        var trainer = new MemoryStream();
        WriteVarintField(trainer, 3, 2); // model_type = BPE
        WriteVarintField(trainer, 4, (ulong)pieces.Count);
        WriteVarintField(trainer, 35, 1); // byte_fallback
        WriteVarintField(trainer, 40, (ulong)unkId);
        WriteVarintField(trainer, 41, (ulong)bosId);
        WriteVarintField(trainer, 42, (ulong)eosId);
        WriteVarintField(trainer, 43, unchecked((ulong)-1L)); // pad_id = -1 (int32 negative: 10-byte varint)
        WriteBytes(model, 2, trainer.ToArray());
        var norm = new MemoryStream();
        WriteBytes(norm, 1, "identity"u8.ToArray());
        WriteVarintField(norm, 3, 1); // add_dummy_prefix
        WriteVarintField(norm, 4, 0); // remove_extra_whitespaces
        WriteVarintField(norm, 5, 1); // escape_whitespaces
        WriteBytes(model, 3, norm.ToArray());
        return model.ToArray();
    }

    /// <summary>
    /// A Llama-style vocabulary: &lt;unk&gt;, &lt;s&gt;, &lt;/s&gt;, the 256 byte pieces, then
    /// <paramref name="pieces"/> as normal pieces scored by rank (earlier = merged first).
    /// </summary>
    public static byte[] BuildLlamaStyle(IEnumerable<string> pieces)
    {
        var list = new List<(string, float, PieceType)>
        {
            ("<unk>", 0, PieceType.Unknown), ("<s>", 0, PieceType.Control), ("</s>", 0, PieceType.Control),
        };
        for (int b = 0; b < 256; b++) list.Add(($"<0x{b:X2}>", 0, PieceType.Byte));
        int rank = 0;
        foreach (var p in pieces) list.Add((p, -rank++, PieceType.Normal));
        return Build(list);
    }

    private static void WriteTag(Stream s, int field, int wire) => WriteVarint(s, (ulong)(field << 3 | wire));

    private static void WriteVarintField(Stream s, int field, ulong v)
    {
        WriteTag(s, field, 0);
        WriteVarint(s, v);
    }

    private static void WriteBytes(Stream s, int field, byte[] b)
    {
        WriteTag(s, field, 2);
        WriteVarint(s, (ulong)b.Length);
        s.Write(b);
    }

    private static void WriteVarint(Stream s, ulong v)
    {
        while (v >= 0x80)
        {
            s.WriteByte((byte)(v | 0x80));
            v >>= 7;
        }
        s.WriteByte((byte)v);
    }
}
