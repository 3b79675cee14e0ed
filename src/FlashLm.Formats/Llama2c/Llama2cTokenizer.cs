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
    private readonly Dictionary<string, int>.AlternateLookup<ReadOnlySpan<char>> _spanLookup; // the same map, probed without allocating a string

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
        _spanLookup = _lookup.GetAlternateLookup<ReadOnlySpan<char>>();
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

    private int Lookup(ReadOnlySpan<byte> piece)
    {
        // Latin1 maps each byte to the char of the same value, so this is the key the constructor stored.
        Span<char> chars = piece.Length <= 256 ? stackalloc char[piece.Length] : new char[piece.Length];
        for (int i = 0; i < piece.Length; i++) chars[i] = (char)piece[i];
        return _spanLookup.TryGetValue(chars, out var id) ? id : -1;
    }

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
        return Merge(tokens);
    }

    /// <summary>
    /// run.c's merge rule: repeatedly merge the adjacent pair whose merged piece has the highest vocab score
    /// (strictly above -1e10; the leftmost pair among equal scores) until no pair merges. run.c rescans every
    /// pair per merge (quadratic in the text); this keeps each candidate pair in a priority queue ordered by
    /// (score descending, position ascending) over a linked list of the tokens, so each merge costs O(log n).
    /// A node keeps its original index; merging keeps the left node and unlinks the right one, so original
    /// indices order the live nodes exactly as their current positions do, and "leftmost" is the smallest index.
    /// Queue entries go stale when either node changes: each entry records both nodes' versions and is skipped
    /// when they no longer match.
    /// </summary>
    private int[] Merge(List<int> input)
    {
        int n = input.Count;
        if (n < 2) return input.ToArray();
        var tok = input.ToArray();
        var next = new int[n]; // -1 = end of list
        var prev = new int[n]; // -1 = start of list
        var version = new int[n]; // bumped when a node's token or right neighbour changes; -1 once unlinked
        for (int i = 0; i < n; i++)
        {
            next[i] = i + 1 < n ? i + 1 : -1;
            prev[i] = i - 1;
        }
        var queue = new PriorityQueue<(int Left, int Right, int LeftVersion, int RightVersion, int Id), long>(n);
        void Offer(int left)
        {
            if (left < 0) return;
            int right = next[left];
            if (right < 0) return;
            int id = MergedId(tok[left], tok[right]);
            // run.c starts from best_score = -1e10 and takes a pair only when its score is strictly greater (NaN never is).
            if (id >= 0 && _scores[id] > -1e10f) queue.Enqueue((left, right, version[left], version[right], id), Priority(_scores[id], left));
        }
        for (int i = 0; i < n - 1; i++) Offer(i);
        while (queue.TryDequeue(out var e, out _))
        {
            if (version[e.Left] != e.LeftVersion || version[e.Right] != e.RightVersion || next[e.Left] != e.Right) continue;
            tok[e.Left] = e.Id;
            int after = next[e.Right];
            next[e.Left] = after;
            if (after >= 0) prev[after] = e.Left;
            version[e.Right] = -1;
            version[e.Left]++;
            Offer(prev[e.Left]);
            Offer(e.Left);
        }
        var result = new List<int>(n);
        for (int i = 0; i >= 0; i = next[i]) result.Add(tok[i]);
        return result.ToArray();
    }

    /// <summary>
    /// The queue's key, smallest first: the score negated in the high 32 bits (as an int that orders as the float
    /// does), the pair's left index in the low 32, so the highest score wins and the leftmost pair among equal
    /// scores. -0 becomes +0 first: the float comparison run.c makes calls them equal.
    /// </summary>
    private static long Priority(float score, int left)
    {
        int bits = BitConverter.SingleToInt32Bits(-(score + 0f));
        int ordered = bits ^ ((bits >> 31) & 0x7FFFFFFF); // negative floats: reverse the magnitude order
        return ((long)ordered << 32) | (uint)left;
    }

    /// <summary>The id of the piece a + b (concatenated bytes), or -1.</summary>
    private int MergedId(int a, int b)
    {
        var va = _vocab[a];
        var vb = _vocab[b];
        int len = va.Length + vb.Length;
        Span<byte> pair = len <= 512 ? stackalloc byte[len] : new byte[len];
        va.CopyTo(pair);
        vb.CopyTo(pair[va.Length..]);
        return Lookup(pair);
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
