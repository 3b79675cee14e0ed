using System.Buffers.Binary;
using System.Text;

namespace FlashLm.Formats.Llama2c;

/// <summary>
/// llama2.c's tokenizer (.bin: int32 max_token_length, then per token float32 score, int32 len, bytes),
/// encoding and decoding exactly as run.c does: BOS, a dummy-prefix space, UTF-8 code points looked up
/// (byte fallback at id byte + 3), then greedy merges of the best-scoring adjacent pair.
/// </summary>
public sealed class Llama2cTokenizer : ITextTokenizer
{
    private readonly byte[][] _vocab;
    private readonly float[] _scores;
    private readonly Dictionary<string, int> _lookup; // latin1 view of the bytes -> id (first id wins, as run.c's bsearch over a sorted copy finds one)

    public int VocabSize => _vocab.Length;
    public int BosId => 1;
    public int EosId => 2;
    public int MaxTokenLength { get; }

    public Llama2cTokenizer(byte[][] vocab, float[] scores, int maxTokenLength)
    {
        _vocab = vocab;
        _scores = scores;
        MaxTokenLength = maxTokenLength;
        _lookup = new Dictionary<string, int>(vocab.Length, StringComparer.Ordinal);
        for (int i = 0; i < vocab.Length; i++) _lookup.TryAdd(Encoding.Latin1.GetString(vocab[i]), i);
    }

    public static Llama2cTokenizer Load(string path, int vocabSize)
    {
        if (!File.Exists(path)) throw new ModelFormatException(path, "tokenizer file not found (llama2.c models need --tokenizer, e.g. tok512.bin)");
        var bytes = File.ReadAllBytes(path);
        int at = 0;
        int ReadI32(string what)
        {
            if (at + 4 > bytes.Length)
                throw new ModelFormatException(path, $"tokenizer is truncated while reading {what}", what, at);
            int v = BinaryPrimitives.ReadInt32LittleEndian(bytes.AsSpan(at));
            at += 4;
            return v;
        }
        int maxLen = ReadI32("max_token_length");
        if (maxLen <= 0 || maxLen > 1 << 16)
            throw new ModelFormatException(path, $"max_token_length {maxLen} is not plausible", "max_token_length", 0);
        var vocab = new byte[vocabSize][];
        var scores = new float[vocabSize];
        for (int i = 0; i < vocabSize; i++)
        {
            scores[i] = BitConverter.Int32BitsToSingle(ReadI32($"token {i} score"));
            int len = ReadI32($"token {i} length");
            if (len < 0 || len > maxLen)
                throw new ModelFormatException(path, $"token {i} has length {len}, outside 0..{maxLen}", $"token {i}", at - 4);
            if (at + len > bytes.Length)
                throw new ModelFormatException(path, $"tokenizer is truncated in token {i} (the model has {vocabSize} tokens)", $"token {i}", at);
            vocab[i] = bytes.AsSpan(at, len).ToArray();
            at += len;
        }
        return new Llama2cTokenizer(vocab, scores, maxLen);
    }

    private int Lookup(ReadOnlySpan<byte> piece) =>
        _lookup.TryGetValue(Encoding.Latin1.GetString(piece), out var id) ? id : -1;

    public int[] Encode(string text, bool addBos)
    {
        var tokens = new List<int>();
        if (addBos) tokens.Add(BosId);
        var utf8 = Encoding.UTF8.GetBytes(text);
        if (utf8.Length > 0)
        {
            int dummy = Lookup(" "u8);
            if (dummy >= 0) tokens.Add(dummy);
        }
        // Look up each UTF-8 code point (at most 4 bytes); unknown ones fall back to byte tokens.
        Span<byte> buf = stackalloc byte[8];
        int len = 0;
        for (int i = 0; i < utf8.Length; i++)
        {
            if ((utf8[i] & 0xC0) != 0x80) len = 0;
            buf[len++] = utf8[i];
            bool continues = i + 1 < utf8.Length && (utf8[i + 1] & 0xC0) == 0x80;
            if (continues && len < 4) continue;
            int id = Lookup(buf[..len]);
            if (id != -1) tokens.Add(id);
            else for (int j = 0; j < len; j++) tokens.Add(buf[j] + 3);
            len = 0;
        }
        // Merge the best-scoring adjacent pair until none merges (first pair wins ties).
        var pair = new byte[2 * MaxTokenLength + 2];
        while (true)
        {
            float bestScore = -1e10f;
            int bestId = -1, bestIdx = -1;
            for (int i = 0; i < tokens.Count - 1; i++)
            {
                var a = _vocab[tokens[i]];
                var b = _vocab[tokens[i + 1]];
                if (a.Length + b.Length > pair.Length) continue;
                a.CopyTo(pair, 0);
                b.CopyTo(pair, a.Length);
                int id = Lookup(pair.AsSpan(0, a.Length + b.Length));
                if (id != -1 && _scores[id] > bestScore)
                {
                    bestScore = _scores[id];
                    bestId = id;
                    bestIdx = i;
                }
            }
            if (bestIdx == -1) break;
            tokens[bestIdx] = bestId;
            tokens.RemoveAt(bestIdx + 1);
        }
        return tokens.ToArray();
    }

    public byte[] Piece(int previous, int token)
    {
        ReadOnlySpan<byte> piece = _vocab[token];
        if (previous == BosId && piece.Length > 0 && piece[0] == (byte)' ') piece = piece[1..];
        if (PieceText.TryParseByteToken(piece, out var b)) return [b];
        // run.c prints with %s: stop at an embedded NUL.
        int nul = piece.IndexOf((byte)0);
        return (nul >= 0 ? piece[..nul] : piece).ToArray();
    }

    public string TokenText(int token) => Encoding.UTF8.GetString(_vocab[token]);

    public string Kind => "llama2c";

    public const string FileName = "tokenizer.bin";

    public IReadOnlyDictionary<string, byte[]> Export()
    {
        using var ms = new MemoryStream();
        using (var w = new BinaryWriter(ms))
        {
            w.Write(MaxTokenLength);
            for (int i = 0; i < _vocab.Length; i++)
            {
                w.Write(_scores[i]);
                w.Write(_vocab[i].Length);
                w.Write(_vocab[i]);
            }
        }
        return new Dictionary<string, byte[]> { [FileName] = ms.ToArray() };
    }
}
