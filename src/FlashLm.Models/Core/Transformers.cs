using FlashLm.Formats;

namespace FlashLm.Models;

/// <summary>Builds the dense model for an opened source, by architecture.</summary>
public static class Transformers
{
    /// <param name="attention">Where the blocks' attention matrices (q, k, v, output) come from; default: loaded into DRAM.</param>
    public static ITransformer Create(ModelSource source, IFeedForward? ffn = null, MatrixLoader? attention = null) => source.Config.Architecture switch
    {
        Architecture.Llama => new Llama.LlamaModel(source, ffn, attention),
        Architecture.Opt => new Opt.OptModel(source, ffn, attention),
        _ => throw new NotSupportedException($"{source.Path}: architecture {source.Config.Architecture} is not supported"),
    };
}
