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
        _ => throw new ModelFormatException(folder, $"unknown tokenizer kind '{kind}' (expected llama2c, spm or gpt2)", "tokenizer.kind"),
    };
}
