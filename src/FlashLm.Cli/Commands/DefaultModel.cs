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

    /// <summary>The flash-layout folder to run in flash mode (the model must already be converted).</summary>
    public static string LayoutFolder(string? model, string? tokenizer)
    {
        if (model is null) throw new ArgumentException("--model is required in flash mode (the built-in default model is not available yet)");
        if (!Formats.FlashLayout.FlashLayoutModel.IsLayoutFolder(model))
            throw new ArgumentException($"{model}: --mode flash needs a flash-layout folder; convert it first: flashlm convert {model}{(tokenizer is null ? "" : " --tokenizer " + tokenizer)} --out DIR");
        return model;
    }
}
