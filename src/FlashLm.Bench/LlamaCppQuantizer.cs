using LLama;
using LLama.Native;

namespace FlashLm.Bench;

/// <summary>
/// llama.cpp's own quantizer (llama_model_quantize through LLamaSharp's <see cref="LLamaQuantizer"/>), run the way
/// `llama-quantize IN OUT TYPE` runs it: the preset's tensor mix, output.weight quantized too. FlashLm is then checked
/// against files it did not write.
/// </summary>
internal static class LlamaCppQuantizer
{
    /// <summary>
    /// The presets FlashLm targets, by llama-quantize's names: every Q2_K..Q8_0 preset that needs no importance matrix
    /// (Q2_K_S and the IQ presets do; the TQ ones write types FlashLm does not read).
    /// </summary>
    public static IReadOnlyDictionary<string, LLamaFtype> Types { get; } = new Dictionary<string, LLamaFtype>(StringComparer.OrdinalIgnoreCase)
    {
        ["Q4_0"] = LLamaFtype.MOSTLY_Q4_0,
        ["Q4_1"] = LLamaFtype.MOSTLY_Q4_1,
        ["Q5_0"] = LLamaFtype.MOSTLY_Q5_0,
        ["Q5_1"] = LLamaFtype.MOSTLY_Q5_1,
        ["Q8_0"] = LLamaFtype.MOSTLY_Q8_0,
        ["Q2_K"] = LLamaFtype.MOSTLY_Q2_K,
        ["Q3_K_S"] = LLamaFtype.MOSTLY_Q3_K_S,
        ["Q3_K_M"] = LLamaFtype.MOSTLY_Q3_K_M,
        ["Q3_K_L"] = LLamaFtype.MOSTLY_Q3_K_L,
        ["Q4_K_S"] = LLamaFtype.MOSTLY_Q4_K_S,
        ["Q4_K_M"] = LLamaFtype.MOSTLY_Q4_K_M,
        ["Q5_K_S"] = LLamaFtype.MOSTLY_Q5_K_S,
        ["Q5_K_M"] = LLamaFtype.MOSTLY_Q5_K_M,
        ["Q6_K"] = LLamaFtype.MOSTLY_Q6_K,
    };

    /// <summary>The canonical name of a preset (as llama-quantize spells it); an unknown name fails listing the known ones.</summary>
    public static string Canonical(string type) =>
        Types.Keys.FirstOrDefault(k => string.Equals(k, type?.Trim(), StringComparison.OrdinalIgnoreCase))
        ?? throw new ArgumentException($"unknown quantization type '{type}' (known: {string.Join(", ", Types.Keys)})");

    /// <summary>
    /// Quantizes <paramref name="input"/> (an F32/F16/BF16 GGUF) to <paramref name="output"/> with the preset
    /// <paramref name="type"/>. The file is written under a temporary name and renamed when complete, so a file at
    /// <paramref name="output"/> is always whole.
    /// </summary>
    /// <param name="threads">Quantizer threads; 0 = all cores.</param>
    public static void Quantize(string input, string output, string type, int threads = 0)
    {
        var ftype = Types[Canonical(type)];
        if (!File.Exists(input)) throw new ArgumentException($"{input}: no such file");
        var folder = Path.GetDirectoryName(Path.GetFullPath(output))!;
        if (!Directory.Exists(folder)) throw new ArgumentException($"{output}: folder {folder} does not exist");
        if (Path.GetFullPath(output) == Path.GetFullPath(input)) throw new ArgumentException($"{output}: the output would overwrite the input");
        // LLamaSharp's quantizer calls into llama.cpp before anything has loaded the native library (its resolver is set up by
        // NativeApi's first use): load it first.
        NativeApi.llama_empty_call();
        // llama.cpp reports why it failed only through its log: keep the errors (and the last lines) for the message.
        var errors = new List<string>();
        NativeLogConfig.llama_log_set((level, message) =>
        {
            lock (errors)
            {
                if (level == LLamaLogLevel.Error && message.Trim().Trim('=').Length > 0) errors.Add(message.Trim());
            }
        });
        string temp = output + ".part";
        try
        {
            // quantizeOutputTensor: llama-quantize's default (output.weight gets the preset's head type, e.g. Q6_K);
            // LLamaSharp's own default leaves it unquantized.
            bool ok = LLamaQuantizer.Quantize(input, temp, ftype, threads <= 0 ? Environment.ProcessorCount : threads,
                allowRequantize: false, quantizeOutputTensor: true);
            if (!ok || !File.Exists(temp))
            {
                string why;
                lock (errors) why = string.Join("; ", errors.TakeLast(3));
                throw new InvalidOperationException($"llama.cpp could not quantize {input} to {Canonical(type)}" + (why.Length > 0 ? $": {why}" : ""));
            }
            File.Move(temp, output, overwrite: true);
        }
        finally
        {
            NativeLogConfig.llama_log_set((level, message) => { });
            if (File.Exists(temp)) File.Delete(temp);
        }
    }

    /// <summary>
    /// The quantized sibling of <paramref name="gguf"/> (X.gguf -> X.TYPE.gguf beside it), made by llama.cpp on first use
    /// and reused after.
    /// </summary>
    public static string QuantizedBeside(string gguf, string type, int threads = 0)
    {
        var name = Canonical(type);
        var path = Path.Combine(Path.GetDirectoryName(Path.GetFullPath(gguf))!, Path.GetFileNameWithoutExtension(gguf) + "." + name + ".gguf");
        if (!File.Exists(path)) Quantize(gguf, path, name, threads);
        return path;
    }
}
