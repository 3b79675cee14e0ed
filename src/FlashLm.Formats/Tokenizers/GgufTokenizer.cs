using FlashLm.Formats.Gguf;

namespace FlashLm.Formats;

/// <summary>
/// Reads the tokenizer a GGUF file describes (tokenizer.ggml.*): "llama" is SentencePiece (<see cref="SpmTokenizer"/>),
/// "gpt2" is byte-level BPE (<see cref="Gpt2BpeTokenizer"/>) with the pre-tokenizer tokenizer.ggml.pre names. Works on
/// vocabulary-only files (no tensors, any architecture), as llama.cpp's tokenizer tests use them.
/// </summary>
public static class GgufTokenizer
{
    /// <summary>Reads the tokenizer of <paramref name="g"/>.</summary>
    /// <param name="allowUnknownPre">
    /// An unknown tokenizer.ggml.pre is refused, naming it, unless this is set: then the "default" pre-tokenizer is
    /// used and <paramref name="warn"/> is told (the ids may differ from the model's own tokenizer).
    /// </param>
    /// <param name="warn">Receives warnings (default: standard error).</param>
    public static ITextTokenizer Read(GgufFile g, bool allowUnknownPre = false, Action<string>? warn = null)
    {
        var vocab = ReadSpmVocab(g);
        return vocab is not null ? new SpmTokenizer(vocab, g.Path) : ReadBpe(g, allowUnknownPre, warn);
    }

    /// <summary>Opens <paramref name="path"/> and reads its tokenizer (see <see cref="Read(GgufFile, bool, Action{string}?)"/>).</summary>
    public static ITextTokenizer Read(string path, bool allowUnknownPre = false, Action<string>? warn = null) =>
        Read(new GgufFile(path), allowUnknownPre, warn);

    /// <summary>The SentencePiece vocabulary, or null when the tokenizer is "gpt2" (byte-level BPE); other models are refused.</summary>
    internal static SpmVocab? ReadSpmVocab(GgufFile g)
    {
        string model = g.GetString("tokenizer.ggml.model");
        if (model == "gpt2") return null;
        if (model != "llama")
            throw new ModelFormatException(g.Path, $"unsupported tokenizer model '{ModelFormatException.Printable(model)}' (expected llama or gpt2)", "tokenizer.ggml.model",
                g.Get("tokenizer.ggml.model").Offset);
        var tokens = g.GetArray<string>("tokenizer.ggml.tokens");
        var scores = g.Has("tokenizer.ggml.scores") ? g.GetArray<float>("tokenizer.ggml.scores") : new float[tokens.Length];
        var types = Types(g, tokens.Length);
        var v = new SpmVocab(tokens, scores, types,
            TokenId(g, "tokenizer.ggml.bos_token_id", 1, tokens.Length),
            TokenId(g, "tokenizer.ggml.eos_token_id", 2, tokens.Length),
            TokenId(g, "tokenizer.ggml.unknown_token_id", 0, tokens.Length))
        {
            AddBos = g.GetBool("tokenizer.ggml.add_bos_token", true),
            AddEos = g.GetBool("tokenizer.ggml.add_eos_token", false),
            AddSpacePrefix = g.GetBool("tokenizer.ggml.add_space_prefix", true),
        };
        v.Validate(g.Path);
        return v;
    }

    internal static Gpt2BpeTokenizer ReadBpe(GgufFile g, bool allowUnknownPre, Action<string>? warn)
    {
        warn ??= Console.Error.WriteLine;
        var tokens = g.GetArray<string>("tokenizer.ggml.tokens");
        var merges = g.GetArray<string>("tokenizer.ggml.merges");
        string? name = g.GetStringOrNull("tokenizer.ggml.pre");
        PreTokenizer? pre;
        if (name is null)
        {
            // Files converted before llama.cpp wrote the key; llama.cpp uses its default pre-tokenizer for them too.
            warn($"{g.Path}: no tokenizer.ggml.pre; using the 'default' pre-tokenizer (re-convert the model for exact tokens)");
            pre = PreTokenizer.ForName("default");
        }
        else
        {
            pre = PreTokenizer.ForName(name);
            if (pre is null)
            {
                var what = $"unknown pre-tokenizer '{ModelFormatException.Printable(name)}' (FlashLm knows {string.Join(", ", PreTokenizer.KnownNames)})";
                if (!allowUnknownPre)
                    throw new ModelFormatException(g.Path, what + "; allow it explicitly to fall back to 'default'", "tokenizer.ggml.pre", g.Get("tokenizer.ggml.pre").Offset);
                warn($"{g.Path}: {what}; falling back to 'default': tokens may differ from the model's own tokenizer");
                pre = PreTokenizer.ForName("default");
            }
        }
        int[]? types = g.Has("tokenizer.ggml.token_type") ? Types(g, tokens.Length) : null;
        return new Gpt2BpeTokenizer(tokens, merges,
            TokenId(g, "tokenizer.ggml.bos_token_id", 0, tokens.Length),
            TokenId(g, "tokenizer.ggml.eos_token_id", 0, tokens.Length),
            g.Path, types, pre,
            g.GetBool("tokenizer.ggml.add_bos_token", pre!.AddBosByDefault),
            g.GetBool("tokenizer.ggml.add_eos_token", false));
    }

    private static int[] Types(GgufFile g, int count)
    {
        if (!g.Has("tokenizer.ggml.token_type")) return Enumerable.Repeat(SpmVocab.TypeNormal, count).ToArray();
        var types = g.GetIntArray("tokenizer.ggml.token_type");
        if (types.Length != count)
            throw new ModelFormatException(g.Path, $"{types.Length} token types for {count} tokens", "tokenizer.ggml.token_type", g.Get("tokenizer.ggml.token_type").Offset);
        return types;
    }

    private static int TokenId(GgufFile g, string key, int fallback, int vocabSize)
    {
        long v = g.GetInteger(key, fallback);
        if (v < 0 || v >= vocabSize)
            throw new ModelFormatException(g.Path, $"token id {v} is outside the vocabulary of {vocabSize}", key, g.Get(key).Offset);
        return (int)v;
    }
}
