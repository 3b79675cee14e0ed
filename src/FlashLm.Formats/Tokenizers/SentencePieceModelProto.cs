using System.Buffers.Binary;
using System.Text;

namespace FlashLm.Formats;

/// <summary>
/// Writes and reads the subset of SentencePiece's ModelProto (sentencepiece_model.proto, proto2) that a
/// BPE tokenizer needs, by hand: ModelProto { 1: repeated SentencePiece pieces {1 piece, 2 score, 3 type};
/// 2: TrainerSpec {3 model_type, 4 vocab_size, 35 byte_fallback, 40 unk_id, 41 bos_id, 42 eos_id, 43 pad_id};
/// 3: NormalizerSpec {1 name, 2 precompiled_charsmap, 3 add_dummy_prefix, 4 remove_extra_whitespaces, 5 escape_whitespaces} }.
/// Field numbers are those of sentencepiece_model.proto; the same files are what Llama checkpoints ship as tokenizer.model.
/// </summary>
public static class SentencePieceModelProto
{
    private const int ModelTypeBpe = 2;

    /// <summary>The ModelProto bytes of a BPE model with byte fallback and no whitespace collapsing (llama2.c's behaviour).</summary>
    public static byte[] Write(SpmVocab v)
    {
        var model = new ProtoWriter();
        var piece = new ProtoWriter();
        for (int i = 0; i < v.Tokens.Length; i++)
        {
            piece.Clear();
            piece.String(1, v.Tokens[i]);
            piece.Float(2, v.Scores[i]);
            piece.Varint(3, (ulong)(v.Types[i] is >= 1 and <= 6 ? v.Types[i] : SpmVocab.TypeNormal));
            model.Message(1, piece);
        }
        var trainer = new ProtoWriter();
        trainer.Varint(3, ModelTypeBpe);
        trainer.Varint(4, (ulong)v.Tokens.Length);
        trainer.Varint(35, 1);                         // byte_fallback
        trainer.Varint(40, (ulong)(long)v.Unk);
        trainer.Varint(41, (ulong)(long)v.Bos);
        trainer.Varint(42, (ulong)(long)v.Eos);
        trainer.Varint(43, unchecked((ulong)-1L));     // pad_id: none (int32 -1 is sign-extended to 10 bytes)
        model.Message(2, trainer);
        var norm = new ProtoWriter();
        norm.String(1, "identity");
        norm.Varint(3, 1);                             // add_dummy_prefix
        norm.Varint(4, 0);                             // remove_extra_whitespaces: run.c keeps runs of spaces
        norm.Varint(5, 1);                             // escape_whitespaces: ' ' -> U+2581
        model.Message(3, norm);
        return model.ToArray();
    }

    /// <summary>
    /// Reads a tokenizer.model: the pieces (text, score, type) and the trainer's unk/bos/eos ids (as stored:
    /// -1 where the model has none; <see cref="SpmTokenizer"/> validates them). Settings that
    /// <see cref="Write"/> cannot express, and which would therefore tokenize differently once the vocabulary is
    /// rebuilt, are refused: a model type other than BPE, no byte fallback, a normalizer other than identity
    /// with dummy prefix, kept whitespace runs and escaped spaces. Unknown fields are skipped.
    /// </summary>
    public static SpmVocab Read(byte[] data, string file, bool addBos = true)
    {
        var tokens = new List<string>();
        var scores = new List<float>();
        var types = new List<int>();
        int bos = 1, eos = 2, unk = 0;
        int at = 0;  // where the current top-level field starts
        bool hasTrainer = false, hasNormalizer = false;
        try
        {
            var r = new ProtoReader(data, 0, data.Length);
            while (r.Next(out int field, out int wire))
            {
                if (field == 1 && wire == 2)
                {
                    var p = r.Sub();
                    string text = ""; float score = 0; int type = SpmVocab.TypeNormal;
                    while (p.Next(out int f, out int w))
                    {
                        if (f == 1 && w == 2) text = Utf8Text.Decode(p.Bytes());
                        else if (f == 2 && w == 5) score = p.Fixed32Float();
                        else if (f == 3 && w == 0) type = (int)p.Varint();
                        else p.Skip(w);
                    }
                    tokens.Add(text); scores.Add(score); types.Add(type);
                }
                else if (field == 2 && wire == 2)
                {
                    // proto2 defaults: model_type UNIGRAM (1), byte_fallback false.
                    hasTrainer = true;
                    var t = r.Sub();
                    long modelType = 1, byteFallback = 0;
                    while (t.Next(out int f, out int w))
                    {
                        if (w != 0) { t.Skip(w); continue; }
                        long v = (long)t.Varint();
                        switch (f)
                        {
                            case 3: modelType = v; break;
                            case 35: byteFallback = v; break;
                            case 40: unk = (int)v; break;
                            case 41: bos = (int)v; break;
                            case 42: eos = (int)v; break;
                        }
                    }
                    if (modelType != ModelTypeBpe)
                        throw Unsupported(file, "trainer_spec.model_type", at, $"model type {modelType} (only BPE, 2, is supported)");
                    if (byteFallback == 0)
                        throw Unsupported(file, "trainer_spec.byte_fallback", at, "a model without byte fallback");
                }
                else if (field == 3 && wire == 2)
                {
                    // proto2 defaults: add_dummy_prefix, remove_extra_whitespaces and escape_whitespaces all true.
                    hasNormalizer = true;
                    var n = r.Sub();
                    string name = "";
                    bool charsMap = false;
                    long dummyPrefix = 1, removeExtra = 1, escape = 1;
                    while (n.Next(out int f, out int w))
                    {
                        if (f == 1 && w == 2) name = Utf8Text.Decode(n.Bytes());
                        else if (f == 2 && w == 2) charsMap = n.Bytes().Length > 0;
                        else if (f is 3 or 4 or 5 && w == 0)
                        {
                            long v = (long)n.Varint();
                            if (f == 3) dummyPrefix = v; else if (f == 4) removeExtra = v; else escape = v;
                        }
                        else n.Skip(w);
                    }
                    if (charsMap || name is not ("identity" or ""))
                        throw Unsupported(file, "normalizer_spec.name", at, $"normalization '{name}' (only identity)");
                    if (dummyPrefix == 0 || removeExtra != 0 || escape == 0)
                        throw Unsupported(file, "normalizer_spec", at,
                            $"add_dummy_prefix {dummyPrefix}, remove_extra_whitespaces {removeExtra}, escape_whitespaces {escape} (expected 1, 0, 1)");
                }
                else r.Skip(wire);
                at = r.Position;
            }
        }
        catch (Exception e) when (e is IndexOutOfRangeException or ArgumentOutOfRangeException or InvalidDataException)
        {
            throw new ModelFormatException(file, $"malformed SentencePiece model: {e.Message}", "ModelProto", at, e);
        }
        // Both specs follow the pieces in every model file; missing ones mean defaults we refuse, or a cut-off file.
        if (!hasTrainer) throw Unsupported(file, "trainer_spec", at, "no trainer spec (the default model type is unigram; is the file truncated?)");
        if (!hasNormalizer) throw Unsupported(file, "normalizer_spec", at, "no normalizer spec (the default normalizer is nmt_nfkc; is the file truncated?)");
        return new SpmVocab(tokens.ToArray(), scores.ToArray(), types.ToArray(), bos, eos, unk) { AddBos = addBos };
    }

    private static ModelFormatException Unsupported(string file, string key, int offset, string what) =>
        new(file, $"unsupported SentencePiece setting: {what}", key, offset);

    private sealed class ProtoWriter
    {
        private readonly MemoryStream _ms = new();

        public void Clear() => _ms.SetLength(0);
        public byte[] ToArray() => _ms.ToArray();

        private void RawVarint(ulong v)
        {
            while (v >= 0x80) { _ms.WriteByte((byte)(v | 0x80)); v >>= 7; }
            _ms.WriteByte((byte)v);
        }

        private void Tag(int field, int wire) => RawVarint((ulong)(field << 3 | wire));

        public void Varint(int field, ulong v) { Tag(field, 0); RawVarint(v); }

        public void Float(int field, float f)
        {
            Tag(field, 5);
            Span<byte> b = stackalloc byte[4];
            BinaryPrimitives.WriteSingleLittleEndian(b, f);
            _ms.Write(b);
        }

        public void String(int field, string s)
        {
            var b = Encoding.UTF8.GetBytes(s);
            Tag(field, 2); RawVarint((ulong)b.Length); _ms.Write(b);
        }

        public void Message(int field, ProtoWriter inner)
        {
            Tag(field, 2);
            RawVarint((ulong)inner._ms.Length);
            inner._ms.Position = 0;
            inner._ms.CopyTo(_ms);
        }
    }

    private sealed class ProtoReader(byte[] b, int pos, int end)
    {
        private int _pos = pos;

        public int Position => _pos;

        public bool Next(out int field, out int wire)
        {
            field = wire = 0;
            if (_pos >= end) return false;
            ulong tag = Varint();
            field = (int)(tag >> 3);
            wire = (int)(tag & 7);
            return true;
        }

        public ulong Varint()
        {
            ulong v = 0;
            for (int shift = 0; shift < 64; shift += 7)
            {
                if (_pos >= end) throw new InvalidDataException("truncated varint");
                byte x = b[_pos++];
                v |= (ulong)(x & 0x7F) << shift;
                if (x < 0x80) return v;
            }
            throw new InvalidDataException("varint longer than 10 bytes");
        }

        private int Length()
        {
            ulong n = Varint();
            if (n > (ulong)(end - _pos)) throw new InvalidDataException($"length {n} runs past the end of the message");
            return (int)n;
        }

        public ReadOnlySpan<byte> Bytes()
        {
            int n = Length();
            var s = b.AsSpan(_pos, n);
            _pos += n;
            return s;
        }

        public ProtoReader Sub()
        {
            int n = Length();
            var r = new ProtoReader(b, _pos, _pos + n);
            _pos += n;
            return r;
        }

        public float Fixed32Float()
        {
            if (_pos + 4 > end) throw new InvalidDataException("truncated fixed32");
            float f = BinaryPrimitives.ReadSingleLittleEndian(b.AsSpan(_pos));
            _pos += 4;
            return f;
        }

        public void Skip(int wire)
        {
            switch (wire)
            {
                case 0: Varint(); break;
                case 1: _pos += 8; break;
                case 2: { int n = Length(); _pos += n; break; }
                case 5: _pos += 4; break;
                default: throw new InvalidDataException($"unsupported wire type {wire}");
            }
            if (_pos > end) throw new InvalidDataException("field runs past the end of the message");
        }
    }
}
