using System.CommandLine;
using System.Diagnostics;
using FlashLm.Cli.Commands;
using FlashLm.Formats.Gguf;

namespace FlashLm.Bench;

/// <summary>
/// `flashlm-bench quantize --in F16.gguf --type Q4_K_M --out X.gguf`: llama.cpp's quantizer (llama-quantize's presets),
/// in process; prints the tensor types llama.cpp wrote.
/// </summary>
internal static class QuantizeCommand
{
    public static Command Build()
    {
        var input = new Option<string>("--in") { Description = "the GGUF to quantize (F32, F16 or BF16)", Required = true };
        var type = new Option<string>("--type") { Description = "llama-quantize preset: " + string.Join(", ", LlamaCppQuantizer.Types.Keys), Required = true };
        var output = new Option<string>("--out") { Description = "the quantized GGUF to write", Required = true };
        var threads = new Option<int>("--threads") { Description = "quantizer threads (0 = all cores)", DefaultValueFactory = _ => 0 };
        var cmd = new Command("quantize", "Quantize a GGUF with llama.cpp's own quantizer (LLamaSharp's LLamaQuantizer) and print the tensor types it wrote.")
        {
            input, type, output, threads,
        };
        cmd.SetAction(r => CliErrors.Guard(() =>
        {
            string inPath = r.GetValue(input)!, outPath = r.GetValue(output)!, name = LlamaCppQuantizer.Canonical(r.GetValue(type)!);
            var watch = Stopwatch.StartNew();
            LlamaCppQuantizer.Quantize(inPath, outPath, name, r.GetValue(threads));
            Console.WriteLine($"{outPath}: {name}, {new FileInfo(outPath).Length} bytes in {watch.Elapsed.TotalSeconds:F1} s; tensors: {TypeMix(outPath)}");
            if (Fallbacks(outPath, name) is { Count: > 0 } fell)
                Console.Error.WriteLine($"quantize: llama.cpp fell back to legacy types for {fell.Count} tensor(s) whose rows are not a multiple of 256 " +
                                        $"(K-quant super-blocks), e.g. {fell[0]}; a shape with such rows (tiny-k) gets the preset's own types");
            return 0;
        }));
        return cmd;
    }

    /// <summary>Tensor count per ggml type in a GGUF, most frequent first ("q4_K 17, q6_K 5, f32 9"): the mix a preset wrote.</summary>
    public static string TypeMix(string gguf) =>
        string.Join(", ", TypeCounts(gguf).Select(kv => $"{kv.Key} {kv.Value}"));

    /// <summary>Tensor count per ggml type (ggml's lower-case names), most frequent first.</summary>
    public static IReadOnlyList<KeyValuePair<string, int>> TypeCounts(string gguf) =>
        new GgufFile(gguf).TensorInfos.GroupBy(t => GgmlName(t.Type))
            .OrderByDescending(g => g.Count()).ThenBy(g => g.Key, StringComparer.Ordinal)
            .Select(g => KeyValuePair.Create(g.Key, g.Count())).ToList();

    /// <summary>
    /// For a K preset (Q2_K..Q6_K, _S/_M/_L): the matrices llama.cpp stored in a legacy 32-element type instead
    /// ("name (type)"), which it does when a row is not a whole number of 256-element super-blocks.
    /// </summary>
    public static IReadOnlyList<string> Fallbacks(string gguf, string preset)
    {
        if (!preset.Contains("_K", StringComparison.OrdinalIgnoreCase)) return [];
        return new GgufFile(gguf).TensorInfos
            .Where(t => t.Ne.Length > 1 && t.Type is GgmlType.Q4_0 or GgmlType.Q4_1 or GgmlType.Q5_0 or GgmlType.Q5_1 or GgmlType.Q8_0)
            .Select(t => $"{t.Name} ({GgmlName(t.Type)})").ToList();
    }

    /// <summary>ggml's spelling of a type name (f32, q8_0, q4_K).</summary>
    public static string GgmlName(GgmlType t)
    {
        var s = t.ToString().ToLowerInvariant();
        return s.EndsWith("_k", StringComparison.Ordinal) ? s[..^2] + "_K" : s;
    }
}
