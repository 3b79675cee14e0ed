namespace FlashLm.Formats;

/// <summary>Recreates a tokenizer from the files its <see cref="ITextTokenizer.Export"/> wrote.</summary>
public static class TokenizerStore
{
    /// <param name="kind">The exporting tokenizer's <see cref="ITextTokenizer.Kind"/>.</param>
    /// <param name="folder">The folder holding the exported files.</param>
    /// <param name="vocabSize">The model's vocabulary size (checked against the tokenizer).</param>
    public static ITextTokenizer Open(string kind, string folder, int vocabSize) => kind switch
    {
        "llama2c" => vocabSize >= Llama2c.Llama2cModel.MinVocab
            ? Llama2c.Llama2cTokenizer.Load(System.IO.Path.Combine(folder, Llama2c.Llama2cTokenizer.FileName), vocabSize)
            : throw new ModelFormatException(folder, $"a llama2.c tokenizer needs at least {Llama2c.Llama2cModel.MinVocab} tokens (unk, bos, eos and 256 byte tokens), the model has {vocabSize}", "vocab_size"),
        "spm" => SpmTokenizer.Load(folder, vocabSize),
        "gpt2" => FitsModel(Gpt2BpeTokenizer.Load(folder, maxVocab: vocabSize), folder, vocabSize),
        _ => throw new ModelFormatException(folder, $"unknown tokenizer kind '{kind}' (expected llama2c, spm or gpt2)", "tokenizer.kind"),
    };

    /// <summary>
    /// Returns <paramref name="t"/> if the model's vocabulary of <paramref name="vocabSize"/> covers its ids:
    /// Hugging Face models often pad the embedding past the tokenizer's vocabulary, never the reverse.
    /// </summary>
    public static T FitsModel<T>(T t, string source, int vocabSize) where T : ITextTokenizer =>
        t.VocabSize <= vocabSize ? t
            : throw new ModelFormatException(source, $"the tokenizer has {t.VocabSize} tokens, more than the model's vocabulary of {vocabSize}", "vocab_size");
}
