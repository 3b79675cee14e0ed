using System.Runtime.InteropServices;
using System.Text;
using System.Numerics.Tensors;

namespace FlashLm.Formats.Gguf;

/// <summary>
/// Produces a quantized tensor's stored bytes chunk by chunk: fill <paramref name="chunk"/> with bytes
/// [firstByte, firstByte + chunk.Length) of the row-major blocks of <paramref name="spec"/> (chunks hold whole blocks).
/// </summary>
public delegate void TensorBlockFiller(TensorSpec spec, long firstByte, Span<byte> chunk);

/// <summary>
/// Streams a GGUF v3 model of the llama family (llama, Mixtral-style llama with experts, qwen3, qwen3moe): the metadata llama.cpp needs, tensor infos, then tensor data (each tensor
/// aligned to 32 bytes) produced chunk by chunk, so neither a tensor nor the model is ever whole in memory.
/// F32, F16 and BF16 tensors come from a <see cref="TensorFiller"/>; a quantized tensor either from the same
/// values quantized here (the types <see cref="Dequant.Quantize"/> writes: Q8_0, Q4_K, Q5_K, Q6_K) or, when a
/// <see cref="TensorBlockFiller"/> is given, as ready-made blocks (any quantized type, copied as they come).
/// </summary>
public static class GgufWriter
{
    public const int Alignment = 32;
    /// <summary>Elements per fill call (a multiple of every block size, 32 and 256).</summary>
    public const int ChunkElements = 1 << 20;

    /// <summary>Quantized types this writer can produce from F32 values.</summary>
    public static bool CanQuantize(DType type) => type is DType.Q8_0 or DType.Q4_K or DType.Q5_K or DType.Q6_K;

    /// <summary>Writes <paramref name="path"/>; <paramref name="progress"/> gets the bytes written so far.</summary>
    /// <param name="blocks">When set, the stored blocks of every quantized tensor (then <paramref name="fill"/> serves the others).</param>
    public static void Write(string path, ModelConfig config, SpmVocab vocab, IReadOnlyList<TensorSpec> tensors,
        TensorFiller fill, IProgress<long>? progress = null, string name = "flashlm", TensorBlockFiller? blocks = null, string? chatTemplate = null)
    {
        if (config.Architecture != Architecture.Llama)
            throw new ArgumentException($"GGUF writing supports the llama architecture only, not {config.Architecture}");
        config.Validate(path);
        vocab.Validate(path);
        if (vocab.Tokens.Length != config.VocabSize)
            throw new ArgumentException($"vocabulary has {vocab.Tokens.Length} tokens, config says {config.VocabSize}");
        foreach (var t in tensors)
        {
            int block = DTypeInfo.BlockElements(t.DType);
            if (t.Shape.Length > 0 && t.Shape[^1] % block != 0)
                throw new ArgumentException($"tensor '{t.Name}': {DTypeInfo.Name(t.DType)} needs an inner dimension that is a multiple of {block}, got {t.Shape[^1]}");
            if (t.DType is DType.Q8_1 or DType.Q8_K)
                throw new ArgumentException($"tensor '{t.Name}': {DTypeInfo.Name(t.DType)} is an activation type, not stored in model files");
            if (DTypeInfo.IsQuantized(t.DType) && blocks is null && !CanQuantize(t.DType))
                throw new ArgumentException($"tensor '{t.Name}': no quantizer for {DTypeInfo.Name(t.DType)} here (Q8_0, Q4_K, Q5_K and Q6_K are written from values); pass its blocks");
        }

        try
        {
            WriteFile(path, config, vocab, tensors, fill, progress, name, blocks, chatTemplate);
        }
        catch
        {
            File.Delete(path); // no half-written model left behind to be mistaken for a whole one
            throw;
        }
    }

    private static void WriteFile(string path, ModelConfig config, SpmVocab vocab, IReadOnlyList<TensorSpec> tensors,
        TensorFiller fill, IProgress<long>? progress, string name, TensorBlockFiller? blocks, string? chatTemplate)
    {
        using var fs = new FileStream(path, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 20);
        using var w = new BinaryWriter(fs, Encoding.UTF8, leaveOpen: true);
        w.Write(GgufFile.Magic);
        w.Write(3u);
        w.Write((ulong)tensors.Count);
        var kvs = Metadata(config, vocab, tensors, name);
        if (chatTemplate is not null)
            kvs.Add(("tokenizer.chat_template", w => { w.Write((uint)GgufValueType.String); Str(w, chatTemplate); }));
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
            w.Write((uint)GgmlTypes.FromDType(t.DType));
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
            if (blocks is not null && DTypeInfo.IsQuantized(t.DType))
            {
                // Whole blocks per chunk: at most as many bytes as ChunkElements take in this type.
                long total = t.ByteLength, step = DTypeInfo.ByteCount(t.DType, ChunkElements);
                for (long first = 0; first < total; first += step)
                {
                    var chunk = bytes.AsSpan(0, (int)Math.Min(step, total - first));
                    blocks(t, first, chunk);
                    fs.Write(chunk);
                    progress?.Report(fs.Position);
                }
            }
            else
            {
                for (long first = 0; first < n; first += values.Length)
                {
                    int count = (int)Math.Min(values.Length, n - first);
                    var chunk = values.AsSpan(0, count);
                    fill(t, first, chunk);
                    int len = Encode(t.DType, chunk, bytes);
                    fs.Write(bytes, 0, len);
                    progress?.Report(fs.Position);
                }
            }
            Pad(fs);
        }
        progress?.Report(fs.Position);
    }

    /// <summary>
    /// Copies <paramref name="source"/> (any format, llama architecture) to GGUF, one tensor in memory at a
    /// time. <paramref name="dtype"/> overrides the stored type of the matrices (norms stay F32, as llama.cpp
    /// keeps 1-D tensors in F32; a matrix whose rows are not whole blocks of a quantized type is written F16);
    /// null keeps each tensor's type: F16 and F32 as they are, quantized tensors as their very blocks, BF16 as F32.
    /// </summary>
    public static void Copy(ModelSource source, string path, DType? dtype = null, IProgress<long>? progress = null)
    {
        var specs = new List<TensorSpec>();
        foreach (var (n, shape) in TensorNames.Expected(source.Config))
        {
            var stored = source.Info(n).DType;
            var dt = shape.Length == 1 ? DType.F32
                : dtype ?? (stored is DType.F16 || DTypeInfo.IsQuantized(stored) ? stored : DType.F32);
            if (shape[^1] % DTypeInfo.BlockElements(dt) != 0) dt = DType.F16;
            if (DTypeInfo.IsQuantized(dt) && dt != stored && !CanQuantize(dt))
                throw new ArgumentException($"tensor '{n}': cannot quantize {DTypeInfo.Name(stored)} to {DTypeInfo.Name(dt)} here (Q8_0, Q4_K, Q5_K and Q6_K can be written; use llama-quantize for the others)");
            specs.Add(new TensorSpec(n, dt, shape));
        }
        // One source tensor in memory at a time, widened to F32 only when a type change needs the values.
        string? current = null;
        TensorData data = null!;
        float[]? widened = null;
        TensorData Tensor(TensorSpec spec)
        {
            if (spec.Name != current)
            {
                data = null!;
                widened = null;
                data = source.Read(spec.Name);
                current = spec.Name;
            }
            return data;
        }
        float[] Values(TensorSpec spec)
        {
            var t = Tensor(spec); // first: a new tensor drops the previous one's values
            return widened ??= t.ToF32();
        }
        Write(path, source.Config, VocabOf(source), specs,
            (spec, first, chunk) => Values(spec).AsSpan((int)first, chunk.Length).CopyTo(chunk),
            progress, System.IO.Path.GetFileNameWithoutExtension(source.Path),
            (spec, first, chunk) =>
            {
                if (Tensor(spec) is { Blocks: { } b } t && t.DType == spec.DType)
                {
                    b.AsSpan((int)first, chunk.Length).CopyTo(chunk); // the source's own blocks, bit for bit
                    return;
                }
                int per = DTypeInfo.BlockElements(spec.DType), bytes = DTypeInfo.BlockBytes(spec.DType);
                var values = Values(spec).AsSpan(checked((int)(first / bytes * per)), chunk.Length / bytes * per);
                Dequant.Quantize(spec.DType, values, chunk);
            }, source.ChatTemplate);
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
        uint ftype = main switch
        {
            DType.F32 => 0u, DType.F16 => 1u, DType.Q4_0 => 2u, DType.Q4_1 => 3u, DType.Q8_0 => 7u, DType.Q5_0 => 8u,
            DType.Q5_1 => 9u, DType.Q2_K => 10u, DType.Q3_K => 11u, DType.Q4_K => 14u, DType.Q5_K => 16u, DType.Q6_K => 18u,
            DType.BF16 => 32u, _ => 0u,
        };
        // llama.cpp's llama architecture has no activation key (it always computes SiLU). A ReLU-fied model says its activation
        // under FlashLm's own keys, which llama.cpp ignores; a SiLU model writes none, so its file is as before.
        var activation = new List<(string Key, Action<BinaryWriter> Write)>();
        if (c.Activation != FfnActivation.Silu) activation.Add((GgufKeys.FfnActivation, S(FfnActivations.Name(c.Activation))));
        if (c.Activation == FfnActivation.FatRelu) activation.Add((GgufKeys.FfnActivationThreshold, F32(c.ActivationThreshold)));
        // The architecture's own keys (llama, qwen3, qwen3moe); experts and a head width set apart where the model has them.
        string a = c.GgufArchitecture;
        var shape = new List<(string Key, Action<BinaryWriter> Write)>
        {
            ($"{a}.context_length", U32(c.ContextLength)),
            ($"{a}.embedding_length", U32(c.Dim)),
            ($"{a}.block_count", U32(c.Layers)),
            ($"{a}.feed_forward_length", U32(c.HiddenDim)),
            ($"{a}.rope.dimension_count", U32(c.HeadSize)),
            ($"{a}.attention.head_count", U32(c.Heads)),
            ($"{a}.attention.head_count_kv", U32(c.KvHeads)),
            ($"{a}.attention.layer_norm_rms_epsilon", F32(c.NormEps)),
            ($"{a}.rope.freq_base", F32(c.RopeTheta)),
        };
        if (c.HeadDim > 0 || c.Variant == LlamaVariant.Qwen3)
        {
            shape.Add(($"{a}.attention.key_length", U32(c.HeadSize)));
            shape.Add(($"{a}.attention.value_length", U32(c.HeadSize)));
        }
        if (c.MoE)
        {
            shape.Add(($"{a}.expert_count", U32(c.Experts)));
            shape.Add(($"{a}.expert_used_count", U32(c.ExpertsUsed)));
            if (a == "qwen3moe") shape.Add(($"{a}.expert_feed_forward_length", U32(c.HiddenDim)));
        }
        return
        [
            ("general.architecture", S(a)),
            ("general.name", S(name)),
            ("general.alignment", U32(Alignment)),
            ("general.file_type", U32(ftype)),
            .. shape,
            .. activation,
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
            default: Dequant.Quantize(type, src, d); break; // the types CanQuantize accepts (checked up front)
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
