using System.Text.Json;
using FlashLm.Bench;
using FlashLm.Formats;
using FlashLm.Formats.Gguf;
using FlashLm.Formats.Synth;
using Xunit;

namespace FlashLm.Tests;

/// <summary>
/// flashlm-bench's llama.cpp parts: `quantize` (llama.cpp's quantizer), `fidelity` (FlashLm against llama.cpp on one file)
/// and the ladder's --quant (the synthetic model quantized by llama.cpp), driven as a user would, on the tiny-k shape.
/// </summary>
public sealed class QuantBenchTests
{
    private static CliRunner.Result Bench(params string[] args) => BenchTests.Bench(args);

    private static string Stdout(CliRunner.Result r) => System.Text.Encoding.UTF8.GetString(r.Stdout);

    private static string TinyK(TempDir dir)
    {
        var path = dir.File("tiny-k.F16.gguf");
        SyntheticModel.WriteGguf(path, SyntheticShapes.Get("tiny-k"), DType.F16, seed: 3);
        return path;
    }

    [Theory]
    [InlineData("unknown quantization type 'IQ2_XS'", "--type", "IQ2_XS")]
    [InlineData("missing.gguf: no such file", "--in", "missing.gguf")]
    public void Quantize_refuses_an_unknown_type_or_a_missing_input_in_one_line(string message, string option, string value)
    {
        using var dir = new TempDir();
        var args = new Dictionary<string, string> { ["--in"] = dir.File("in.gguf"), ["--type"] = "Q4_0", ["--out"] = dir.File("out.gguf") };
        File.WriteAllText(args["--in"], "not read");
        args[option] = option == "--in" ? dir.File(value) : value;
        var r = Bench(["quantize", .. args.SelectMany(kv => new[] { kv.Key, kv.Value })]);
        Assert.Equal(1, r.ExitCode);
        Assert.Contains(message, r.Stderr);
        if (option == "--type") Assert.Contains("Q4_K_M", r.Stderr); // the known types are listed
        Assert.DoesNotContain("   at ", r.Stderr);
        Assert.False(File.Exists(args["--out"]));
    }

    [Fact]
    public void Quantize_passes_on_llama_cpps_own_reason_when_it_cannot_read_the_input()
    {
        using var dir = new TempDir();
        File.WriteAllText(dir.File("in.gguf"), "not a gguf file");
        var r = Bench("quantize", "--in", dir.File("in.gguf"), "--type", "Q8_0", "--out", dir.File("out.gguf"));
        Assert.Equal(1, r.ExitCode);
        Assert.Contains("llama.cpp could not quantize", r.Stderr);
        Assert.Contains("magic", r.Stderr); // llama.cpp's own words: invalid magic characters
        Assert.False(File.Exists(dir.File("out.gguf")));
        Assert.False(File.Exists(dir.File("out.gguf.part")));
    }

    [Fact]
    public void Quantize_writes_a_Q4_K_M_file_of_Q4_K_and_Q6_K_and_prints_the_mix()
    {
        using var dir = new TempDir();
        var f16 = TinyK(dir);
        var q = dir.File("tiny-k.Q4_K_M.gguf");
        var r = Bench("quantize", "--in", f16, "--type", "q4_k_m", "--out", q, "--threads", "2");
        Assert.True(r.ExitCode == 0, r.Stderr);
        Assert.Contains("Q4_K_M", Stdout(r));
        Assert.Contains("q4_K 25, f32 9, q6_K 5", Stdout(r));
        var types = new GgufFile(q).TensorInfos.Select(t => t.Type).Distinct().Order().ToArray();
        Assert.Equal([GgmlType.F32, GgmlType.Q4_K, GgmlType.Q6_K], types);
        Assert.DoesNotContain("fell back", r.Stderr);
    }

    [Fact]
    public void Quantize_says_when_llama_cpp_fell_back_from_K_types_on_rows_that_are_not_multiples_of_256()
    {
        using var dir = new TempDir();
        var f16 = dir.File("tiny.F16.gguf");
        SyntheticModel.WriteGguf(f16, SyntheticShapes.Get("tiny"), DType.F16, seed: 3); // dim 128, hidden 352
        var r = Bench("quantize", "--in", f16, "--type", "Q4_K_M", "--out", dir.File("tiny.Q4_K_M.gguf"), "--threads", "2");
        Assert.True(r.ExitCode == 0, r.Stderr);
        Assert.Contains("q5_0 25, f32 9, q8_0 5", Stdout(r)); // llama.cpp's fallbacks for Q4_K and Q6_K
        Assert.Contains("fell back to legacy types for 30 tensor(s)", r.Stderr);
    }

    [Fact]
    public void Fidelity_prints_a_row_per_file_and_writes_the_json()
    {
        using var dir = new TempDir();
        var f16 = TinyK(dir);
        var json = dir.File("fidelity.json");
        var r = Bench("fidelity", "--model", f16, "-n", "16", "--threads", "2", "--json", json);
        Assert.True(r.ExitCode == 0, r.Stderr);
        Assert.Contains("| tiny-k.F16.gguf | f16 30, f32 9 | 16 |", Stdout(r));
        var report = JsonSerializer.Deserialize<FidelityReport>(File.ReadAllText(json), BenchJson.Options)!;
        var x = Assert.Single(report.Files);
        Assert.Equal(16, x.Positions);
        Assert.Equal(16, x.Tokens.Length);
        Assert.Equal(Fidelity.DefaultPrompt, report.Prompt);
        // F16 weights: llama.cpp rounds products' inputs to F16, FlashLm keeps them F32; nothing more differs.
        Assert.InRange(x.MaxAbsLogitDiff, 0, 0.05);
        Assert.Equal(x.Agreements, x.Positions - x.DisagreementMargins.Length);
    }

    [Theory]
    [InlineData("--tokens must be at least 1", "-n", "0")]
    [InlineData("no such file", "--model", "missing.gguf")]
    public void Fidelity_refuses_bad_arguments_in_one_line(string message, string option, string value)
    {
        using var dir = new TempDir();
        var r = option == "--model" ? Bench("fidelity", "--model", dir.File(value)) : Bench("fidelity", "--model", dir.File("x.gguf"), option, value);
        Assert.Equal(1, r.ExitCode);
        Assert.Contains(message, r.Stderr);
        Assert.DoesNotContain("   at ", r.Stderr);
    }

    [Theory]
    [InlineData("unknown quantization type 'IQ2_XS'", "--quant", "IQ2_XS")]
    [InlineData("--quant quantizes the synthetic model", "--quant", "Q4_K_M", "--model", "DIR")]
    [InlineData("use a Llama shape", "--quant", "Q4_K_M", "--shape", "opt-tiny")]
    public void Bench_quant_refuses_what_it_cannot_quantize(string message, params string[] args)
    {
        using var dir = new TempDir();
        var r = Bench(args.Select(a => a == "DIR" ? dir.Path : a).ToArray());
        Assert.Equal(1, r.ExitCode);
        Assert.Contains(message, r.Stderr);
        Assert.DoesNotContain("   at ", r.Stderr);
    }

    [Fact]
    public void Bench_quant_runs_the_ladder_and_llama_cpp_on_the_file_llama_cpp_quantized()
    {
        var r = Bench("--shape", "tiny-k", "--quant", "Q4_K_M", "-n", "2", "--reps", "1", "--rungs", "hybrid", "--dram-budget", "256MiB");
        Assert.True(r.ExitCode == 0, r.Stderr);
        Assert.Contains("bench-tiny-k-f16-seed42.Q4_K_M.gguf: q4_K 25, f32 9, q6_K 5", r.Stderr);
        Assert.Contains("| hybrid |", Stdout(r));
        Assert.Contains("llama.cpp (mmap, cap ", Stdout(r));
        Assert.Contains("  hybrid: ", Stdout(r));
    }
}
