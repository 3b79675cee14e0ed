using FlashLm.Formats;

namespace FlashLm.Models;

/// <summary>Builds the dense model for an opened source, by architecture.</summary>
public static class Transformers
{
    public static ITransformer Create(ModelSource source, IFeedForward? ffn = null) => source.Config.Architecture switch
    {
        Architecture.Llama => new Llama.LlamaModel(source, ffn),
        Architecture.Opt => new Opt.OptModel(source, ffn),
        _ => throw new NotSupportedException($"{source.Path}: architecture {source.Config.Architecture} is not supported"),
    };
}
