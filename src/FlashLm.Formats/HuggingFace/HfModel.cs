using System.Text.Json;

namespace FlashLm.Formats.HuggingFace;

/// <summary>
/// A Hugging Face model folder: config.json, model.safetensors (or shards listed in
/// model.safetensors.index.json) and the tokenizer files. Supports LlamaForCausalLM and OPTForCausalLM.
/// Tensors are exposed under their canonical names; the Llama q/k projections are stored by HF in the
/// rotate-half RoPE row order, so <see cref="Read"/> reorders their rows into the canonical interleaved
/// order (see <see cref="RopePermutation"/>). Their <see cref="TensorInfo"/> still describes the stored bytes.
/// </summary>
public sealed class HfModel : ModelSource
{
    public override string Format => "huggingface";

    /// <summary>bos_token_id / eos_token_id from config.json (defaults: Llama 1/2, OPT 2/2).</summary>
    public int BosId { get; }
    public int EosId { get; }

    public HfModel(string folder) : base(folder)
    {
        if (!Directory.Exists(folder)) throw new ModelFormatException(folder, "model folder not found");
        var configPath = System.IO.Path.Combine(folder, HfNames.ConfigFile);
        var entries = LoadTensorIndex(folder);
        using (var json = JsonFile.Open(configPath, "config.json"))
        {
            var kind = ParseArchitecture(json);
            (Config, BosId, EosId) = kind == "opt" ? ParseOpt(json, entries) : ParseLlama(json, kind);
        }
        Config.Validate(configPath);

        var tensors = new Dictionary<string, TensorInfo>(StringComparer.Ordinal);
        foreach (var (name, shape) in TensorNames.Expected(Config))
        {
            if (HfNames.IsExperts(name))
            {
                // One tensor per expert in the checkpoint: the experts tensor is assembled from them (Read, ReadSlab).
                int layer = int.Parse(name.AsSpan(4, name.IndexOf('.', 4) - 4), System.Globalization.CultureInfo.InvariantCulture);
                var parts = new TensorInfo[Config.Experts];
                for (int x = 0; x < parts.Length; x++)
                {
                    string hfe = HfNames.Expert(Config, layer, name[(name.IndexOf('.', 4) + 1)..], x);
                    var pe = Find(entries, hfe)
                        ?? throw new ModelFormatException(folder, $"tensor is missing (expert {x} of canonical {name}; looked in {SourceFiles(entries)})", hfe);
                    if (!pe.Shape.AsSpan().SequenceEqual(shape.AsSpan(1)))
                        throw new ModelFormatException(pe.FilePath, $"wrong shape {TensorNames.ShapeText(pe.Shape)}, expected {TensorNames.ShapeText(shape[1..])}", hfe, pe.Offset);
                    if (x > 0 && pe.DType != parts[0].DType)
                        throw new ModelFormatException(pe.FilePath, $"is {pe.DType} while expert 0 is {parts[0].DType}", hfe, pe.Offset);
                    parts[x] = new TensorInfo(hfe, pe.DType, pe.Shape, pe.FilePath, pe.Offset);
                }
                _experts[name] = parts;
                tensors[name] = new TensorInfo(name, parts[0].DType, shape, parts[0].FilePath, parts[0].Offset);
                continue;
            }
            string hf = HfNames.ToHf(Config, name)
                ?? throw new InvalidOperationException($"no Hugging Face name for canonical tensor {name}");
            var e = Find(entries, hf)
                ?? throw new ModelFormatException(folder, $"tensor is missing (canonical {name}; looked in {SourceFiles(entries)})", hf);
            tensors[name] = new TensorInfo(name, e.DType, e.Shape, e.FilePath, e.Offset);
        }
        Tensors = tensors;
        ValidateTensors();
        ChatTemplate = ReadChatTemplate(folder);

        // config.json's special ids win over what the tokenizer files say. Qwen's folders carry byte-level BPE (vocab.json,
        // merges.txt) with Qwen2's pre-tokenizer, as llama.cpp's converter names it for them.
        bool spm = File.Exists(System.IO.Path.Combine(folder, SpmTokenizer.ModelFileName));
        Tokenizer = Config.Architecture == Architecture.Opt
            ? TokenizerStore.FitsModel(Gpt2BpeTokenizer.Load(folder, BosId, EosId, Config.VocabSize), folder, Config.VocabSize)
            : spm || Config.Variant != LlamaVariant.Qwen3
                ? TokenizerStore.FitsModel(SpmTokenizer.LoadModel(folder, BosId, EosId), folder, Config.VocabSize)
                : TokenizerStore.FitsModel(Gpt2BpeTokenizer.Load(folder, BosId, EosId, Config.VocabSize, "qwen2"), folder, Config.VocabSize);
    }

    /// <summary>
    /// tokenizer_config.json's chat_template: a string, or a list of {name, template} (the one named "default", else the first);
    /// chat_template.jinja beside it wins (newer folders keep it there). Null when neither has one.
    /// </summary>
    private static string? ReadChatTemplate(string folder)
    {
        if (ReadChatTemplateFile(folder) is { } kept) return kept;
        var path = System.IO.Path.Combine(folder, Gpt2BpeTokenizer.HfTokenizerConfigFileName);
        if (!File.Exists(path)) return null;
        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllBytes(path));
            if (doc.RootElement.ValueKind != JsonValueKind.Object || !doc.RootElement.TryGetProperty("chat_template", out var t)) return null;
            string? text = t.ValueKind switch
            {
                JsonValueKind.String => t.GetString(),
                JsonValueKind.Array => t.EnumerateArray().Where(x => x.ValueKind == JsonValueKind.Object && x.TryGetProperty("template", out var v) && v.ValueKind == JsonValueKind.String)
                    .OrderBy(x => x.TryGetProperty("name", out var n) && n.ValueKind == JsonValueKind.String && n.GetString() == "default" ? 0 : 1)
                    .Select(x => x.GetProperty("template").GetString()).FirstOrDefault(),
                JsonValueKind.Null => null,
                _ => throw new ModelFormatException(path, "chat_template is neither a string nor a list of {name, template}", "chat_template"),
            };
            if (text is { Length: > MaxChatTemplateBytes }) throw new ModelFormatException(path, $"chat template larger than {MaxChatTemplateBytes} characters", "chat_template");
            return text;
        }
        catch (JsonException e)
        {
            throw new ModelFormatException(path, $"not valid JSON: {e.Message}", null, null, e);
        }
    }

    /// <summary>A MoE model's experts tensors: each expert's stored tensor, in expert order.</summary>
    private readonly Dictionary<string, TensorInfo[]> _experts = new(StringComparer.Ordinal);

    protected override bool StoredWhole(TensorInfo t) => !_experts.ContainsKey(t.Name);

    /// <inheritdoc/>
    public override TensorData ReadSlab(string name, int index)
    {
        if (!_experts.TryGetValue(name, out var parts)) return base.ReadSlab(name, index);
        if (index < 0 || index >= parts.Length) throw new ModelFormatException(Path, $"expert {index} of {parts.Length}", name);
        return Read(parts[index]);
    }

    /// <summary>Reads a tensor; Llama attn_q/attn_k rows are reordered from HF's layout to the canonical one; a MoE model's experts
    /// tensor is its experts' tensors one after another.</summary>
    public override TensorData Read(string name)
    {
        if (_experts.TryGetValue(name, out var parts))
        {
            var slabs = parts.Select(Read).ToArray();
            var shape = Info(name).Shape;
            if (slabs[0].F32 is not null) return new TensorData(shape, slabs.SelectMany(x => x.F32!).ToArray());
            return new TensorData(shape, slabs.SelectMany(x => x.F16!).ToArray());
        }
        var data = base.Read(name);
        if (!HfNames.IsRopePermuted(Config, name)) return data;
        int hs = Config.HeadSize, cols = data.Cols;
        if (data.F32 is not null) RopePermutation.HfToCanonical(data.F32.AsSpan(), cols, hs);
        else RopePermutation.HfToCanonical(data.F16!.AsSpan(), cols, hs);
        return data;
    }

    private static SafetensorsEntry? Find(Dictionary<string, SafetensorsEntry> entries, string hf)
    {
        if (entries.TryGetValue(hf, out var e)) return e;
        // Some OPT checkpoints (the original facebook/opt-* uploads) name tensors without "model.".
        if (hf.StartsWith("model.", StringComparison.Ordinal) && entries.TryGetValue(hf["model.".Length..], out e)) return e;
        return null;
    }

    private static string SourceFiles(Dictionary<string, SafetensorsEntry> entries) =>
        string.Join(", ", entries.Values.Select(e => System.IO.Path.GetFileName(e.FilePath)).Distinct().Order());

    /// <summary>All tensors of the folder's safetensors file(s), by HF name.</summary>
    private static Dictionary<string, SafetensorsEntry> LoadTensorIndex(string folder)
    {
        var entries = new Dictionary<string, SafetensorsEntry>(StringComparer.Ordinal);
        var indexPath = System.IO.Path.Combine(folder, HfNames.IndexFile);
        var singlePath = System.IO.Path.Combine(folder, HfNames.SingleFile);
        if (File.Exists(indexPath))
        {
            var shards = new Dictionary<string, SafetensorsFile>(StringComparer.Ordinal);
            using var index = JsonFile.Open(indexPath, "safetensors index");
            if (!index.Root.TryGetProperty("weight_map", out var map) || map.ValueKind != JsonValueKind.Object)
                throw new ModelFormatException(indexPath, "required object is missing", "weight_map");
            foreach (var p in map.EnumerateObject())
            {
                if (p.Value.ValueKind != JsonValueKind.String)
                    throw new ModelFormatException(indexPath, $"weight_map value {JsonFile.Raw(p.Value)} is not a file name", p.Name);
                string file = index.Text(p.Value, "weight_map");
                if (file.Length == 0 || file != System.IO.Path.GetFileName(file) || file == "..")
                    throw new ModelFormatException(indexPath, $"weight_map names '{ModelFormatException.Printable(file)}', which is not a plain file name in the folder", p.Name);
                if (!shards.TryGetValue(file, out var shard))
                {
                    var shardPath = System.IO.Path.Combine(folder, file);
                    if (!File.Exists(shardPath))
                        throw new ModelFormatException(indexPath, $"weight_map names shard '{file}', which does not exist", p.Name);
                    shards[file] = shard = SafetensorsFile.Open(shardPath);
                }
                if (!shard.Tensors.TryGetValue(p.Name, out var e))
                    throw new ModelFormatException(shard.FilePath, $"tensor is missing (model.safetensors.index.json places it in this shard)", p.Name);
                entries[p.Name] = e;
            }
        }
        else if (File.Exists(singlePath))
        {
            foreach (var (name, e) in SafetensorsFile.Open(singlePath).Tensors) entries[name] = e;
        }
        else
        {
            throw new ModelFormatException(folder, $"no {HfNames.SingleFile} or {HfNames.IndexFile} in the model folder", HfNames.SingleFile);
        }
        return entries;
    }

    /// <summary>The checkpoint's family: llama, mixtral, qwen3, qwen3moe or opt.</summary>
    private static string ParseArchitecture(JsonFile json)
    {
        if (!json.Root.TryGetProperty("architectures", out var a) || a.ValueKind != JsonValueKind.Array || a.GetArrayLength() == 0
            || a[0].ValueKind != JsonValueKind.String)
            throw new ModelFormatException(json.Path, "required key is missing or not a list of names (expected [\"LlamaForCausalLM\"] or [\"OPTForCausalLM\"])", "architectures");
        return json.Text(a[0], "architectures") switch
        {
            // ProSparse's Llama models name their own class (remote code), a Llama with a FATReLU FFN (PowerInfer issue #201).
            "LlamaForCausalLM" or "SparseLlamaForCausalLM" => "llama",
            "MixtralForCausalLM" => "mixtral",
            "Qwen3ForCausalLM" => "qwen3",
            "Qwen3MoeForCausalLM" => "qwen3moe",
            "OPTForCausalLM" => "opt",
            var other => throw new ModelFormatException(json.Path,
                $"unsupported architecture '{ModelFormatException.Printable(other)}' (expected LlamaForCausalLM, MixtralForCausalLM, Qwen3ForCausalLM, Qwen3MoeForCausalLM or OPTForCausalLM)", "architectures"),
        };
    }

    private static void Unsupported(JsonFile json, string key, string what) => throw new ModelFormatException(json.Path, $"unsupported: {what}", key);

    private static (ModelConfig, int, int) ParseLlama(JsonFile json, string kind)
    {
        bool qwen = kind is "qwen3" or "qwen3moe";
        int dim = json.Int("hidden_size"), heads = json.Int("num_attention_heads");
        if (json.Has("rope_scaling")) Unsupported(json, "rope_scaling", "RoPE scaling is not implemented");
        // hidden_act: Llama's silu, or the ReLU-fied models' relu / fatrelu; FATReLU's threshold is hidden_act_param (the key
        // ProSparse's and MiniCPM-S's configs use, as vLLM's MiniCPM reads it; 0 when absent, as there).
        string act = json.String("hidden_act") ?? "silu";
        var activation = FfnActivations.Parse(act) ?? throw new ModelFormatException(json.Path,
            $"unsupported: activation '{ModelFormatException.Printable(act)}' (FlashLm runs {FfnActivations.Known})", "hidden_act");
        float actThreshold = activation == FfnActivation.FatRelu ? json.Float("hidden_act_param", 0f) : 0f;
        if (!float.IsFinite(actThreshold)) Unsupported(json, "hidden_act_param", $"FATReLU threshold {actThreshold} is not finite");
        if (!qwen && json.Has("head_dim") && heads > 0 && json.Int("head_dim") * heads != dim)
            Unsupported(json, "head_dim", $"head_dim {json.Int("head_dim")} x {heads} heads differs from hidden_size {dim}");
        if (json.Has("sliding_window") && (kind == "mixtral" || json.Bool("use_sliding_window", false)))
            Unsupported(json, "sliding_window", "sliding-window attention");
        int experts = 0, used = 0, hidden = 0;
        if (kind == "mixtral")
        {
            experts = json.Int("num_local_experts");
            used = json.Int("num_experts_per_tok");
            hidden = json.Int("intermediate_size");
        }
        else if (kind == "qwen3moe")
        {
            experts = json.Int("num_experts");
            used = json.Int("num_experts_per_tok");
            hidden = json.Int("moe_intermediate_size");
            // FlashLm's router renormalises the top k (Qwen3-30B-A3B's norm_topk_prob: true; transformers defaults to false).
            if (!json.Bool("norm_topk_prob", false)) Unsupported(json, "norm_topk_prob", "a Qwen3-MoE router whose top-k weights are not renormalised");
            if (json.Int("decoder_sparse_step", 1) != 1) Unsupported(json, "decoder_sparse_step", "dense layers between the MoE layers");
            if (json.Root.TryGetProperty("mlp_only_layers", out var mlpOnly) && mlpOnly.ValueKind == JsonValueKind.Array && mlpOnly.GetArrayLength() > 0)
                Unsupported(json, "mlp_only_layers", "dense layers between the MoE layers");
        }
        if (json.Bool("attention_bias", false)) Unsupported(json, "attention_bias", "attention biases in a Llama model");
        if (json.Bool("mlp_bias", false)) Unsupported(json, "mlp_bias", "MLP biases in a Llama model");
        var c = new ModelConfig
        {
            Architecture = Architecture.Llama,
            Dim = dim,
            HiddenDim = experts > 0 ? hidden : json.Int("intermediate_size"),
            Variant = qwen ? LlamaVariant.Qwen3 : LlamaVariant.Llama,
            HeadDim = qwen && json.Has("head_dim") ? json.Int("head_dim") : 0,
            Experts = experts,
            ExpertsUsed = used,
            Layers = json.Int("num_hidden_layers"),
            Heads = heads,
            KvHeads = json.Int("num_key_value_heads", heads),
            VocabSize = json.Int("vocab_size"),
            ContextLength = json.Int("max_position_embeddings"),
            NormEps = json.Float("rms_norm_eps", 1e-6f), // transformers' LlamaConfig default
            RopeTheta = json.Float("rope_theta", 10000f),
            TiedEmbeddings = json.Bool("tie_word_embeddings", false),
            Activation = activation,
            ActivationThreshold = actThreshold,
        };
        return (c, json.Int("bos_token_id", 1), json.Int("eos_token_id", 2));
    }

    private static (ModelConfig, int, int) ParseOpt(JsonFile json, Dictionary<string, SafetensorsEntry> entries)
    {
        int dim = json.Int("hidden_size");
        if (!json.Bool("do_layer_norm_before", true)) Unsupported(json, "do_layer_norm_before", "post-norm OPT (opt-350m style) is not implemented");
        if (json.Has("word_embed_proj_dim") && json.Int("word_embed_proj_dim") != dim)
            Unsupported(json, "word_embed_proj_dim", $"word_embed_proj_dim {json.Int("word_embed_proj_dim")} differs from hidden_size {dim} (projected embeddings)");
        if ((json.String("activation_function") ?? "relu") != "relu")
            Unsupported(json, "activation_function", $"activation '{json.String("activation_function")}' (only relu)");
        if (!json.Bool("enable_bias", true)) Unsupported(json, "enable_bias", "OPT without biases");
        if (!json.Bool("layer_norm_elementwise_affine", true)) Unsupported(json, "layer_norm_elementwise_affine", "LayerNorm without weights");
        int heads = json.Int("num_attention_heads");
        // The LM head is tied unless a distinct lm_head.weight is stored.
        var embed = Find(entries, "model.decoder.embed_tokens.weight");
        bool tied = !entries.TryGetValue("lm_head.weight", out var head)
            || embed is not null && head.FilePath == embed.FilePath && head.Offset == embed.Offset;
        var c = new ModelConfig
        {
            Architecture = Architecture.Opt,
            Dim = dim,
            HiddenDim = json.Int("ffn_dim"),
            Layers = json.Int("num_hidden_layers"),
            Heads = heads,
            KvHeads = heads,
            VocabSize = json.Int("vocab_size"),
            ContextLength = json.Int("max_position_embeddings"),
            NormEps = 1e-5f, // torch.nn.LayerNorm's default, which OPT uses
            TiedEmbeddings = tied,
            PositionOffset = 2,
        };
        return (c, json.Int("bos_token_id", 2), json.Int("eos_token_id", 2));
    }
}
