using FlashLm.Formats;

namespace FlashLm.Cli.Commands;

/// <summary>Opens the model named on the command line, or the built-in default when none is given.</summary>
public static class DefaultModel
{
    public static ModelSource Open(string? model, string? tokenizer)
    {
        if (model is null) throw new ArgumentException("--model is required (the built-in default model is not available yet)");
        return ModelLoader.Open(model, tokenizer);
    }
}
