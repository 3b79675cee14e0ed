using System.Runtime.InteropServices;
using System.Text;
using System.Numerics.Tensors;

namespace FlashLm.Formats.Gguf;

/// <summary>
/// Streams a GGUF v3 llama model: the metadata llama.cpp needs, tensor infos, then tensor data
/// (F32, F16, BF16 or Q8_0, each tensor aligned to 32 bytes) produced chunk by chunk by a
/// <see cref="TensorFiller"/>, so neither a tensor nor the model is ever whole in memory.
/// </summary>
public static class GgufWriter
{
    public const int Alignment = 32;
    /// <summary>Elements per fill call (a multiple of the Q8_0 block of 32).</summary>
    public const int ChunkElements = 1 << 20;

    /// <summary>Writes <paramref name="path"/>; <paramref name="progress"/> gets the bytes written so far.</summary>
    public static void Write(string path, ModelConfig config, SpmVocab vocab, IReadOnlyList<TensorSpec> tensors,
        TensorFiller fill, IProgress<long>? progress = null, string name = "flashlm")
    {
        if (config.Architecture != Architecture.Llama)
            throw new ArgumentException($"GGUF writing supports the llama architecture only, not {config.Architecture}");
        config.Validate(path);
        vocab.Validate(path);
        if (vocab.Tokens.Length != config.VocabSize)
            throw new ArgumentException($"vocabulary has {vocab.Tokens.Length} tokens, config says {config.VocabSize}");
        foreach (var t in tensors)
            if (t.DType == DType.Q8_0 && t.Shape[^1] % 32 != 0)
                throw new ArgumentException($"tensor '{t.Name}': Q8_0 needs an inner dimension that is a multiple of 32, got {t.Shape[^1]}");

        using var fs = new FileStream(path, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 20);
        using var w = new BinaryWriter(fs, Encoding.UTF8, leaveOpen: true);
        w.Write(GgufFile.Magic);
        w.Write(3u);
        w.Write((ulong)tensors.Count);
        var kvs = Metadata(config, vocab, tensors, name);
        w.Write((ulong)kvs.Count);
        foreach (var (key, write) in kvs)
        {
            Str(w, key);
            write(w);
        }

        long offset = 0;
        foreach (var t in tensors)
        {
            Str(w, t.Name);
            w.Write((uint)t.Shape.Length);
            for (int d = t.Shape.Length - 1; d >= 0; d--) w.Write((ulong)t.Shape[d]); // ggml ne: innermost first
            w.Write((uint)GgmlTypeOf(t.DType));
            w.Write((ulong)offset);
            offset = Align(offset + t.ByteLength);
        }
        w.Flush();
        Pad(fs);
        progress?.Report(fs.Position);

        var values = new float[(int)Math.Min(ChunkElements, tensors.Count == 0 ? 1 : tensors.Max(t => t.Elements))];
        var bytes = new byte[DTypeInfo.ByteCount(DType.F32, values.Length)];
        foreach (var t in tensors)
        {
            long n = t.Elements;
            for (long first = 0; first < n; first += values.Length)
            {
                int count = (int)Math.Min(values.Length, n - first);
                var chunk = values.AsSpan(0, count);
                fill(t, first, chunk);
                int len = Encode(t.DType, chunk, bytes);
                fs.Write(bytes, 0, len);
                progress?.Report(fs.Position);
            }
            Pad(fs);
        }
        progress?.Report(fs.Position);
    }

    /// <summary>
    /// Copies <paramref name="source"/> (any format, llama architecture) to GGUF, one tensor in memory at a
    /// time. <paramref name="dtype"/> overrides the stored type of the matrices (norms stay F32, as llama.cpp
    /// keeps 1-D tensors in F32); null keeps each tensor's type (Q8_0/BF16 sources become F32).
    /// </summary>
    public static void Copy(ModelSource source, string path, DType? dtype = null, IProgress<long>? progress = null)
    {
        var specs = new List<TensorSpec>();
        foreach (var (n, shape) in TensorNames.Expected(source.Config))
        {
            var stored = source.Info(n).DType;
            var dt = shape.Length == 1 ? DType.F32
                : dtype ?? (stored is DType.F16 ? DType.F16 : DType.F32);
            if (dt == DType.Q8_0 && shape[^1] % 32 != 0) dt = DType.F16;
            specs.Add(new TensorSpec(n, dt, shape));
        }
        string? current = null;
        float[] data = [];
        Write(path, source.Config, VocabOf(source), specs, (spec, first, chunk) =>
        {
            if (spec.Name != current)
            {
                data = [];
                data = source.ReadF32(spec.Name);
                current = spec.Name;
            }
            data.AsSpan((int)first, chunk.Length).CopyTo(chunk);
        }, progress, System.IO.Path.GetFileNameWithoutExtension(source.Path));
    }

    /// <summary>The SentencePiece vocabulary of a model's tokenizer (SPM, or llama2.c converted the way llama.cpp's converter does).</summary>
    public static SpmVocab VocabOf(ModelSource source) => source.Tokenizer switch
    {
        SpmTokenizer s => s.Vocab,
        Llama2c.Llama2cTokenizer l => FromLlama2c(l),
        var t => throw new NotSupportedException($"cannot write a '{t.Kind}' tokenizer to GGUF (only SentencePiece vocabularies)"),
    };

    /// <summary>
    /// llama2.c vocabularies to GGUF's SPM form: ids 0, 1, 2 become &lt;unk&gt;, &lt;s&gt;, &lt;/s&gt;,
    /// "&lt;0xAB&gt;" pieces are byte tokens, spaces become U+2581.
    /// </summary>
    public static SpmVocab FromLlama2c(Llama2c.Llama2cTokenizer tok)
    {
        // The exported tokenizer.bin is the only public view of the pieces and scores.
        var bin = tok.Export()[Llama2c.Llama2cTokenizer.FileName];
        int n = tok.VocabSize, at = 4;
        var tokens = new string[n];
        var scores = new float[n];
        var types = new int[n];
        for (int i = 0; i < n; i++)
        {
            scores[i] = BitConverter.ToSingle(bin, at);
            int len = BitConverter.ToInt32(bin, at + 4);
            var piece = bin.AsSpan(at + 8, len);
            at += 8 + len;
            var text = Encoding.UTF8.GetString(piece);
            (tokens[i], types[i]) = i switch
            {
                0 => ("<unk>", SpmVocab.TypeUnknown),
                1 => ("<s>", SpmVocab.TypeControl),
                2 => ("</s>", SpmVocab.TypeControl),
                _ when piece.Length == 6 && PieceText.TryParseByteToken(piece, out _) => (text, SpmVocab.TypeByte),
                _ => (text.Replace(' ', SpmVocab.Space), SpmVocab.TypeNormal),
            };
        }
        return new SpmVocab(tokens, scores, types, tok.BosId, tok.EosId, 0);
    }

    private static List<(string Key, Action<BinaryWriter> Write)> Metadata(ModelConfig c, SpmVocab v, IReadOnlyList<TensorSpec> tensors, string name)
    {
        Action<BinaryWriter> U32(long x) => w => { w.Write((uint)GgufValueType.UInt32); w.Write(checked((uint)x)); };
        Action<BinaryWriter> F32(float x) => w => { w.Write((uint)GgufValueType.Float32); w.Write(x); };
        Action<BinaryWriter> S(string x) => w => { w.Write((uint)GgufValueType.String); Str(w, x); };
        // general.file_type (llama_ftype): the type of most matrices.
        var matrices = tensors.Where(t => t.Shape.Length > 1).Select(t => t.DType).ToList();
        var main = matrices.Count == 0 ? DType.F32 : matrices.GroupBy(d => d).OrderByDescending(g => g.Count()).First().Key;
        uint ftype = main switch { DType.F32 => 0u, DType.F16 => 1u, DType.Q8_0 => 7u, DType.BF16 => 32u, _ => 0u };
        return
        [
            ("general.architecture", S("llama")),
            ("general.name", S(name)),
            ("general.alignment", U32(Alignment)),
            ("general.file_type", U32(ftype)),
            ("llama.context_length", U32(c.ContextLength)),
            ("llama.embedding_length", U32(c.Dim)),
            ("llama.block_count", U32(c.Layers)),
            ("llama.feed_forward_length", U32(c.HiddenDim)),
            ("llama.rope.dimension_count", U32(c.HeadSize)),
            ("llama.attention.head_count", U32(c.Heads)),
            ("llama.attention.head_count_kv", U32(c.KvHeads)),
            ("llama.attention.layer_norm_rms_epsilon", F32(c.NormEps)),
            ("llama.rope.freq_base", F32(c.RopeTheta)),
            ("tokenizer.ggml.model", S("llama")),
            ("tokenizer.ggml.tokens", w =>
            {
                w.Write((uint)GgufValueType.Array); w.Write((uint)GgufValueType.String); w.Write((ulong)v.Tokens.Length);
                foreach (var t in v.Tokens) Str(w, t);
            }),
            ("tokenizer.ggml.scores", w =>
            {
                w.Write((uint)GgufValueType.Array); w.Write((uint)GgufValueType.Float32); w.Write((ulong)v.Scores.Length);
                foreach (var s in v.Scores) w.Write(s);
            }),
            ("tokenizer.ggml.token_type", w =>
            {
                w.Write((uint)GgufValueType.Array); w.Write((uint)GgufValueType.Int32); w.Write((ulong)v.Types.Length);
                foreach (var t in v.Types) w.Write(t);
            }),
            ("tokenizer.ggml.bos_token_id", U32(v.Bos)),
            ("tokenizer.ggml.eos_token_id", U32(v.Eos)),
            ("tokenizer.ggml.unknown_token_id", U32(v.Unk)),
            ("tokenizer.ggml.add_bos_token", w => { w.Write((uint)GgufValueType.Bool); w.Write(v.AddBos); }),
        ];
    }

    private static GgmlType GgmlTypeOf(DType d) => d switch
    {
        DType.F32 => GgmlType.F32,
        DType.F16 => GgmlType.F16,
        DType.BF16 => GgmlType.BF16,
        DType.Q8_0 => GgmlType.Q8_0,
        _ => throw new ArgumentOutOfRangeException(nameof(d)),
    };

    /// <summary>Encodes <paramref name="src"/> as <paramref name="type"/> into <paramref name="dst"/>; returns the byte count.</summary>
    private static int Encode(DType type, ReadOnlySpan<float> src, Span<byte> dst)
    {
        int len = (int)DTypeInfo.ByteCount(type, src.Length);
        var d = dst[..len];
        switch (type)
        {
            case DType.F32: MemoryMarshal.AsBytes(src).CopyTo(d); break;
            case DType.F16: TensorPrimitives.ConvertToHalf(src, MemoryMarshal.Cast<byte, Half>(d)); break;
            case DType.BF16:
            {
                var u = MemoryMarshal.Cast<byte, ushort>(d);
                for (int i = 0; i < src.Length; i++) u[i] = Dequant.F32ToBf16(src[i]);
                break;
            }
            case DType.Q8_0: Dequant.F32ToQ8_0(src, d); break;
            default: throw new ArgumentOutOfRangeException(nameof(type));
        }
        return len;
    }

    private static void Str(BinaryWriter w, string s)
    {
        var b = Encoding.UTF8.GetBytes(s);
        w.Write((ulong)b.Length);
        w.Write(b);
    }

    private static long Align(long x) => (x + Alignment - 1) / Alignment * Alignment;

    private static void Pad(Stream s)
    {
        long pad = Align(s.Position) - s.Position;
        for (long i = 0; i < pad; i++) s.WriteByte(0);
    }
}
