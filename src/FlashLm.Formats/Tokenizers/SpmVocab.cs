namespace FlashLm.Formats;

/// <summary>
/// A SentencePiece vocabulary as GGUF stores it (tokenizer.ggml.*) and tokenizer.model holds it: piece texts
/// with U+2581 for spaces, scores, token types (1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused,
/// 6 byte; the same numbers as SentencePiece's ModelProto.SentencePiece.Type) and the special ids.
/// </summary>
public sealed record SpmVocab(string[] Tokens, float[] Scores, int[] Types, int Bos, int Eos, int Unk)
{
    /// <summary>tokenizer.ggml.add_bos_token: whether prompts start with BOS by default.</summary>
    public bool AddBos { get; init; } = true;

    /// <summary>tokenizer.ggml.add_eos_token: whether prompts end with EOS by default.</summary>
    public bool AddEos { get; init; }

    /// <summary>tokenizer.ggml.add_space_prefix: SentencePiece's dummy prefix, a space before the text (and after each special token).</summary>
    public bool AddSpacePrefix { get; init; } = true;

    public const int TypeNormal = 1, TypeUnknown = 2, TypeControl = 3, TypeUserDefined = 4, TypeUnused = 5, TypeByte = 6;

    /// <summary>SentencePiece's word-boundary mark, which stands for a space in piece texts.</summary>
    public const char Space = '\u2581';

    /// <summary>Ids of &lt;unk&gt;, &lt;s&gt; and &lt;/s&gt; in <see cref="LlamaStyle"/> vocabularies; the byte pieces follow them.</summary>
    public const int LlamaUnk = 0, LlamaBos = 1, LlamaEos = 2, LlamaFirstByte = 3;

    /// <summary>
    /// A Llama-layout vocabulary: &lt;unk&gt;, &lt;s&gt;, &lt;/s&gt;, the 256 byte pieces "&lt;0x00&gt;".."&lt;0xFF&gt;",
    /// then <paramref name="pieces"/> as normal pieces (a higher score merges first).
    /// </summary>
    public static SpmVocab LlamaStyle(IEnumerable<(string Piece, float Score)> pieces)
    {
        var tokens = new List<string> { "<unk>", "<s>", "</s>" };
        var types = new List<int> { TypeUnknown, TypeControl, TypeControl };
        for (int b = 0; b < 256; b++)
        {
            tokens.Add($"<0x{b:X2}>");
            types.Add(TypeByte);
        }
        var scores = new List<float>(new float[tokens.Count]);
        foreach (var (piece, score) in pieces)
        {
            tokens.Add(piece);
            types.Add(TypeNormal);
            scores.Add(score);
        }
        return new SpmVocab(tokens.ToArray(), scores.ToArray(), types.ToArray(), LlamaBos, LlamaEos, LlamaUnk);
    }

    /// <summary>Checks lengths and ids; throws naming <paramref name="file"/>.</summary>
    public void Validate(string file)
    {
        if (Tokens.Length == 0) throw new ModelFormatException(file, "the vocabulary is empty", "tokenizer.ggml.tokens");
        if (Scores.Length != Tokens.Length)
            throw new ModelFormatException(file, $"{Scores.Length} scores for {Tokens.Length} tokens", "tokenizer.ggml.scores");
        if (Types.Length != Tokens.Length)
            throw new ModelFormatException(file, $"{Types.Length} token types for {Tokens.Length} tokens", "tokenizer.ggml.token_type");
        foreach (var (id, key) in new[] { (Bos, "tokenizer.ggml.bos_token_id"), (Eos, "tokenizer.ggml.eos_token_id"), (Unk, "tokenizer.ggml.unknown_token_id") })
            if (id < 0 || id >= Tokens.Length)
                throw new ModelFormatException(file, $"token id {id} is outside the vocabulary of {Tokens.Length}", key);
    }
}
