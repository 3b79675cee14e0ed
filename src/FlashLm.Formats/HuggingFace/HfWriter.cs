using System.Buffers;
using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Text.Json;

namespace FlashLm.Formats.HuggingFace;

/// <summary>
/// Writes a Hugging Face model folder (config.json, model.safetensors or shards plus
/// model.safetensors.index.json, tokenizer files) that <see cref="HfModel"/> and transformers can read.
/// Tensors arrive under canonical names in the canonical layout and are streamed through
/// <see cref="TensorFiller"/> in chunks of about <see cref="ChunkElements"/> elements, so models larger than
/// DRAM can be written. Llama q/k rows are reordered into HF's rotate-half layout (see <see cref="RopePermutation"/>).
/// </summary>
public static class HfWriter
{
    /// <summary>Elements per filler call (4 MiB of F32).</summary>
    public const int ChunkElements = 1 << 20;

    /// <param name="maxShardBytes">Tensor data per file; a larger model is split into model-0000i-of-0000n.safetensors.</param>
    /// <param name="progress">Receives the total tensor bytes written so far.</param>
    public static void Write(string folder, ModelConfig config, IReadOnlyList<TensorSpec> tensors, TensorFiller fill,
        IReadOnlyDictionary<string, byte[]> tokenizerFiles, int bosId, int eosId, IProgress<long>? progress = null, long maxShardBytes = 4L << 30)
    {
        config.Validate(folder);
        if (config.Architecture == Architecture.Opt && config.PositionOffset != 2)
            throw new ArgumentException($"OPT models have position offset 2, got {config.PositionOffset}", nameof(config));
        if (maxShardBytes <= 0) throw new ArgumentOutOfRangeException(nameof(maxShardBytes));
        // What goes into the files: one entry per tensor, a MoE model's experts tensors one per expert (as transformers stores
        // them), each entry the filler's elements from Base on (an expert is its slab of the canonical tensor).
        var items = new List<(TensorSpec Spec, string HfName, long Base)>();
        foreach (var t in tensors)
        {
            if (t.DType is not (DType.F32 or DType.F16 or DType.BF16))
                throw new ArgumentException($"tensor {t.Name}: safetensors output supports F32, F16 and BF16, not {t.DType}");
            if (config.MoE && HfNames.IsExperts(t.Name))
            {
                int layer = int.Parse(t.Name.AsSpan(4, t.Name.IndexOf('.', 4) - 4), System.Globalization.CultureInfo.InvariantCulture);
                string part = t.Name[(t.Name.IndexOf('.', 4) + 1)..];
                var slab = t with { Shape = t.Shape[1..] };
                for (int e = 0; e < config.Experts; e++) items.Add((slab, HfNames.Expert(config, layer, part, e), e * slab.Elements));
                continue;
            }
            string hf = HfNames.ToHf(config, t.Name)
                ?? throw new ArgumentException($"tensor {t.Name} has no Hugging Face name in a {config.Architecture} model");
            if (HfNames.IsRopePermuted(config, t.Name) && (t.Shape.Length != 2 || t.Shape[0] % config.HeadSize != 0))
                throw new ArgumentException($"tensor {t.Name}: shape {TensorNames.ShapeText(t.Shape)} is not whole heads of {config.HeadSize} rows");
            items.Add((t, hf, 0));
        }
        Directory.CreateDirectory(folder);

        // Plan shards: consecutive entries, a new shard when the next would overflow a non-empty one.
        var shards = new List<List<int>> { new() };
        long shardBytes = 0, total = 0;
        for (int i = 0; i < items.Count; i++)
        {
            long b = items[i].Spec.ByteLength;
            if (shards[^1].Count > 0 && shardBytes + b > maxShardBytes)
            {
                shards.Add(new());
                shardBytes = 0;
            }
            shards[^1].Add(i);
            shardBytes += b;
            total += b;
        }
        string ShardName(int s) => shards.Count == 1 ? HfNames.SingleFile : $"model-{s + 1:D5}-of-{shards.Count:D5}.safetensors";

        long written = 0;
        var weightMap = new SortedDictionary<string, string>(StringComparer.Ordinal);
        for (int s = 0; s < shards.Count; s++)
        {
            var path = Path.Combine(folder, ShardName(s));
            WriteShard(path, config, shards[s].Select(i => items[i]).ToList(), fill, ref written, progress);
            foreach (var i in shards[s]) weightMap[items[i].HfName] = ShardName(s);
        }
        var indexPath = Path.Combine(folder, HfNames.IndexFile);
        if (shards.Count > 1)
        {
            File.WriteAllBytes(indexPath, Json(w =>
            {
                w.WriteStartObject("metadata");
                w.WriteNumber("total_size", total);
                w.WriteEndObject();
                w.WriteStartObject("weight_map");
                foreach (var (k, v) in weightMap) w.WriteString(k, v);
                w.WriteEndObject();
            }));
        }
        else if (File.Exists(indexPath))
        {
            File.Delete(indexPath); // a stale index would shadow model.safetensors
        }

        File.WriteAllBytes(Path.Combine(folder, HfNames.ConfigFile), ConfigJson(config, bosId, eosId, tensors));
        foreach (var (name, bytes) in tokenizerFiles)
        {
            if (name != Path.GetFileName(name)) throw new ArgumentException($"tokenizer file name '{name}' is not a plain file name");
            File.WriteAllBytes(Path.Combine(folder, name), bytes);
        }
    }

    /// <summary>config.json as transformers writes it for LlamaForCausalLM / OPTForCausalLM.</summary>
    public static byte[] ConfigJson(ModelConfig c, int bosId, int eosId, IReadOnlyList<TensorSpec>? tensors = null)
    {
        string dtype = tensors is { Count: > 0 }
            ? tensors[0].DType switch { DType.F16 => "float16", DType.BF16 => "bfloat16", _ => "float32" }
            : "float32";
        return Json(w =>
        {
            if (c.Architecture == Architecture.Llama)
            {
                bool qwen = c.Variant == LlamaVariant.Qwen3;
                var (cls, type) = (qwen, c.MoE) switch
                {
                    (false, false) => ("LlamaForCausalLM", "llama"),
                    (false, true) => ("MixtralForCausalLM", "mixtral"),
                    (true, false) => ("Qwen3ForCausalLM", "qwen3"),
                    (true, true) => ("Qwen3MoeForCausalLM", "qwen3_moe"),
                };
                w.WriteStartArray("architectures");
                w.WriteStringValue(cls);
                w.WriteEndArray();
                w.WriteString("model_type", type);
                w.WriteNumber("hidden_size", c.Dim);
                w.WriteNumber(qwen && c.MoE ? "moe_intermediate_size" : "intermediate_size", c.HiddenDim);
                if (qwen) w.WriteNumber("head_dim", c.HeadSize);
                if (c.MoE)
                {
                    w.WriteNumber(qwen ? "num_experts" : "num_local_experts", c.Experts);
                    w.WriteNumber("num_experts_per_tok", c.ExpertsUsed);
                    if (qwen) w.WriteBoolean("norm_topk_prob", true);
                }
                w.WriteNumber("num_hidden_layers", c.Layers);
                w.WriteNumber("num_attention_heads", c.Heads);
                w.WriteNumber("num_key_value_heads", c.KvHeads);
                w.WriteNumber("vocab_size", c.VocabSize);
                w.WriteNumber("max_position_embeddings", c.ContextLength);
                w.WriteNumber("rms_norm_eps", c.NormEps);
                w.WriteNumber("rope_theta", c.RopeTheta);
                w.WriteBoolean("tie_word_embeddings", c.TiedEmbeddings);
                w.WriteString("hidden_act", FfnActivations.Name(c.Activation));
                if (c.Activation == FfnActivation.FatRelu) w.WriteNumber("hidden_act_param", c.ActivationThreshold);
            }
            else
            {
                w.WriteStartArray("architectures");
                w.WriteStringValue("OPTForCausalLM");
                w.WriteEndArray();
                w.WriteString("model_type", "opt");
                w.WriteNumber("hidden_size", c.Dim);
                w.WriteNumber("word_embed_proj_dim", c.Dim);
                w.WriteNumber("ffn_dim", c.HiddenDim);
                w.WriteNumber("num_hidden_layers", c.Layers);
                w.WriteNumber("num_attention_heads", c.Heads);
                w.WriteNumber("vocab_size", c.VocabSize);
                w.WriteNumber("max_position_embeddings", c.ContextLength);
                w.WriteBoolean("do_layer_norm_before", true);
                w.WriteString("activation_function", "relu");
                w.WriteBoolean("enable_bias", true);
                w.WriteBoolean("layer_norm_elementwise_affine", true);
                w.WriteBoolean("tie_word_embeddings", c.TiedEmbeddings);
                w.WriteNumber("pad_token_id", 1);
            }
            w.WriteNumber("bos_token_id", bosId);
            w.WriteNumber("eos_token_id", eosId);
            w.WriteString("torch_dtype", dtype);
        });
    }

    private static byte[] Json(Action<Utf8JsonWriter> body, bool indented = true)
    {
        var ms = new MemoryStream();
        using (var w = new Utf8JsonWriter(ms, new JsonWriterOptions { Indented = indented }))
        {
            w.WriteStartObject();
            body(w);
            w.WriteEndObject();
        }
        return ms.ToArray();
    }

    private static string SafetensorsDType(DType t) => t switch { DType.F32 => "F32", DType.F16 => "F16", _ => "BF16" };

    private static void WriteShard(string path, ModelConfig config, List<(TensorSpec Spec, string HfName, long Base)> items, TensorFiller fill,
        ref long written, IProgress<long>? progress)
    {
        // Header: {"__metadata__": {"format": "pt"}, name: {dtype, shape, data_offsets}}, padded with spaces to 8 bytes.
        long offset = 0;
        var header = Json(w =>
        {
            w.WriteStartObject("__metadata__");
            w.WriteString("format", "pt");
            w.WriteEndObject();
            foreach (var (spec, hf, _) in items)
            {
                w.WriteStartObject(hf);
                w.WriteString("dtype", SafetensorsDType(spec.DType));
                w.WriteStartArray("shape");
                foreach (var d in spec.Shape) w.WriteNumberValue(d);
                w.WriteEndArray();
                w.WriteStartArray("data_offsets");
                w.WriteNumberValue(offset);
                w.WriteNumberValue(offset + spec.ByteLength);
                w.WriteEndArray();
                w.WriteEndObject();
                offset += spec.ByteLength;
            }
        }, indented: false);
        int padded = (header.Length + 7) / 8 * 8;
        using var file = new FileStream(path, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 20);
        Span<byte> len = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(len, (ulong)padded);
        file.Write(len);
        file.Write(header);
        for (int i = header.Length; i < padded; i++) file.WriteByte((byte)' ');

        var values = ArrayPool<float>.Shared.Rent(ChunkElements);
        var bytes = ArrayPool<byte>.Shared.Rent(ChunkElements * 4);
        try
        {
            foreach (var (spec, _, baseElement) in items)
            {
                bool permute = HfNames.IsRopePermuted(config, spec.Name);
                long n = spec.Elements;
                long cols = spec.Shape.Length == 0 ? 1 : spec.Shape[^1];
                if (permute && cols > ChunkElements) throw new ArgumentException($"tensor {spec.Name}: rows of {cols} elements exceed the chunk size");
                // Permuted tensors go in whole rows so that each HF row can be fetched from its canonical row.
                long step = permute ? ChunkElements / cols * cols : ChunkElements;
                for (long at = 0; at < n; at += step)
                {
                    int count = (int)Math.Min(step, n - at);
                    var chunk = values.AsSpan(0, count);
                    if (permute)
                    {
                        for (int r = 0; r < count / cols; r++)
                        {
                            long hfRow = at / cols + r;
                            long src = RopePermutation.CanonicalRowOfHfRow(hfRow, config.HeadSize);
                            fill(spec, src * cols, chunk.Slice((int)(r * cols), (int)cols));
                        }
                    }
                    else
                    {
                        fill(spec, baseElement + at, chunk);
                    }
                    int nbytes = Encode(spec.DType, chunk, bytes);
                    file.Write(bytes, 0, nbytes);
                    written += nbytes;
                    progress?.Report(written);
                }
            }
        }
        finally
        {
            ArrayPool<float>.Shared.Return(values);
            ArrayPool<byte>.Shared.Return(bytes);
        }
    }

    /// <summary>Stores <paramref name="src"/> as <paramref name="type"/> (little-endian) into <paramref name="dst"/>; returns the byte count.</summary>
    private static int Encode(DType type, ReadOnlySpan<float> src, byte[] dst)
    {
        switch (type)
        {
            case DType.F32:
                MemoryMarshal.AsBytes(src).CopyTo(dst);
                return src.Length * 4;
            case DType.F16:
            {
                var h = MemoryMarshal.Cast<byte, Half>(dst.AsSpan(0, src.Length * 2));
                System.Numerics.Tensors.TensorPrimitives.ConvertToHalf(src, h);
                return src.Length * 2;
            }
            default:
            {
                var u = MemoryMarshal.Cast<byte, ushort>(dst.AsSpan(0, src.Length * 2));
                for (int i = 0; i < src.Length; i++) u[i] = Dequant.F32ToBf16(src[i]);
                return src.Length * 2;
            }
        }
    }
}
