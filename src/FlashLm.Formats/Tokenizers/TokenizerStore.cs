namespace FlashLm.Formats;

/// <summary>Recreates a tokenizer from the files its <see cref="ITextTokenizer.Export"/> wrote.</summary>
public static class TokenizerStore
{
    /// <param name="kind">The exporting tokenizer's <see cref="ITextTokenizer.Kind"/>.</param>
    /// <param name="folder">The folder holding the exported files.</param>
    /// <param name="vocabSize">The model's vocabulary size (checked against the tokenizer).</param>
    public static ITextTokenizer Open(string kind, string folder, int vocabSize) => kind switch
    {
        "llama2c" => Llama2c.Llama2cTokenizer.Load(System.IO.Path.Combine(folder, Llama2c.Llama2cTokenizer.FileName), vocabSize),
        "spm" => SpmTokenizer.Load(folder, vocabSize),
        "gpt2" => CheckSize(Gpt2BpeTokenizer.Load(folder), folder, vocabSize),
        _ => throw new ModelFormatException(folder, $"unknown tokenizer kind '{kind}' (expected llama2c, spm or gpt2)", "tokenizer.kind"),
    };

    private static ITextTokenizer CheckSize(ITextTokenizer t, string folder, int vocabSize) =>
        // Hugging Face models often pad the embedding past the tokenizer's vocabulary, never the reverse.
        t.VocabSize <= vocabSize ? t
            : throw new ModelFormatException(folder, $"the tokenizer has {t.VocabSize} tokens, more than the model's vocabulary of {vocabSize}", "vocab_size");
}
