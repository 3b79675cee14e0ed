using FlashLm.Formats;
using Xunit;

namespace FlashLm.Tests;

/// <summary>`flashlm synth` and the built-in default model (generate / inspect with no --model).</summary>
public sealed class SynthCliTests
{
    private static Dictionary<string, string?> Cache(TempDir dir) => new() { ["FLASHLM_CACHE"] = dir.Sub("cache") };

    [Fact]
    public void Generate_without_a_model_synthesizes_the_default_once_and_is_deterministic()
    {
        using var dir = new TempDir();
        var env = Cache(dir);
        var first = CliRunner.Run(env, "generate", "-n", "20", "--temperature", "0", "--seed", "1");
        Assert.True(first.ExitCode == 0, first.Stderr);
        Assert.True(first.Stdout.Length > 1 && first.Stdout[^1] == (byte)'\n', "no generated text");
        Assert.Contains("writing the built-in synthetic model", first.Stderr);
        var cached = Directory.GetFiles(dir.Sub("cache"));
        Assert.Single(cached); // no temporary file left behind
        Assert.EndsWith(".gguf", cached[0]);
        var written = File.GetLastWriteTimeUtc(cached[0]);

        var second = CliRunner.Run(env, "generate", "-n", "20", "--temperature", "0", "--seed", "1");
        Assert.True(second.ExitCode == 0, second.Stderr);
        Assert.Equal(first.Stdout, second.Stdout);
        Assert.DoesNotContain("writing the built-in synthetic model", second.Stderr);
        Assert.Equal(written, File.GetLastWriteTimeUtc(cached[0]));
    }

    [Fact]
    public void A_truncated_cached_default_model_is_rewritten()
    {
        using var dir = new TempDir();
        var env = Cache(dir);
        var good = CliRunner.Run(env, "generate", "-n", "12", "--temperature", "0");
        Assert.True(good.ExitCode == 0, good.Stderr);
        var path = Assert.Single(Directory.GetFiles(dir.Sub("cache")));
        using (var f = new FileStream(path, FileMode.Open)) f.SetLength(f.Length / 2);

        var again = CliRunner.Run(env, "generate", "-n", "12", "--temperature", "0");
        Assert.True(again.ExitCode == 0, again.Stderr);
        Assert.Contains("writing the built-in synthetic model", again.Stderr);
        Assert.Equal(good.Stdout, again.Stdout);
    }

    [Fact]
    public void Inspect_without_a_model_shows_the_default_tiny_shape()
    {
        using var dir = new TempDir();
        var r = CliRunner.Run(Cache(dir), "inspect");
        Assert.True(r.ExitCode == 0, r.Stderr);
        var text = System.Text.Encoding.UTF8.GetString(r.Stdout);
        Assert.Contains("128 / 352", text);
        Assert.Contains("4 / 4 / 2 / 32", text);
    }

    [Fact]
    public void Synth_writes_an_opt_hf_folder_and_a_llama_gguf_that_generate_runs()
    {
        using var dir = new TempDir();
        var opt = dir.Sub("opt");
        var a = CliRunner.Run("synth", "--shape", "opt-tiny", "--format", "hf", "--dtype", "f16", "--out", opt);
        Assert.True(a.ExitCode == 0, a.Stderr);
        Assert.Contains("wrote", a.Stderr);
        foreach (var f in new[] { "config.json", "model.safetensors", "vocab.json", "merges.txt" }) Assert.True(File.Exists(Path.Combine(opt, f)), f);
        using (var m = ModelLoader.Open(opt))
        {
            Assert.Equal(Architecture.Opt, m.Config.Architecture);
            Assert.Equal(DType.F16, m.Info(TensorNames.Block(0, TensorNames.FfnUp)).DType);
        }
        var g = CliRunner.Run("generate", "--model", opt, "-n", "10", "--temperature", "0", "--prompt", "The quick");
        Assert.True(g.ExitCode == 0, g.Stderr);
        Assert.StartsWith("The quick", System.Text.Encoding.UTF8.GetString(g.Stdout));

        var gguf = dir.File("custom.gguf");
        var b = CliRunner.Run("synth", "--dim", "96", "--hidden", "200", "--layers", "2", "--heads", "6", "--kv-heads", "2",
            "--vocab", "400", "--context", "64", "--seed", "5", "--out", gguf);
        Assert.True(b.ExitCode == 0, b.Stderr);
        using (var m = ModelLoader.Open(gguf))
        {
            Assert.Equal(new ModelConfig
            {
                Architecture = Architecture.Llama, Dim = 96, HiddenDim = 200, Layers = 2, Heads = 6, KvHeads = 2,
                VocabSize = 400, ContextLength = 64,
            }, m.Config);
            Assert.Equal(400, m.Tokenizer.VocabSize);
        }
        var h = CliRunner.Run("generate", "--model", gguf, "-n", "10", "--temperature", "0");
        Assert.True(h.ExitCode == 0, h.Stderr);
    }

    [Theory]
    [InlineData("unknown shape 'llama-3b'", "synth", "--shape", "llama-3b", "--out", "OUT")]
    [InlineData("GGUF output supports the llama architecture only", "synth", "--shape", "opt-tiny", "--format", "gguf", "--out", "OUT")]
    [InlineData("GGUF output supports the llama architecture only", "synth", "--dim", "64", "--hidden", "128", "--layers", "1", "--heads", "4", "--arch", "opt", "--out", "OUT")]
    [InlineData("--out", "synth", "--shape", "tiny")]
    [InlineData("missing: --hidden, --layers, --heads", "synth", "--dim", "64", "--out", "OUT")]
    [InlineData("unsupported dtype 'q4'", "synth", "--shape", "tiny", "--dtype", "q4", "--out", "OUT")]
    [InlineData("unknown format 'onnx'", "synth", "--shape", "tiny", "--format", "onnx", "--out", "OUT")]
    [InlineData("needs at least 323 tokens", "synth", "--shape", "tiny", "--vocab", "100", "--out", "OUT")]
    [InlineData("not divisible by n_heads", "synth", "--dim", "100", "--hidden", "128", "--layers", "1", "--heads", "3", "--out", "OUT")]
    public void Synth_refuses_bad_arguments_with_one_clear_line(string message, params string[] args)
    {
        using var dir = new TempDir();
        var outPath = dir.File("model");
        var r = CliRunner.Run(args.Select(a => a == "OUT" ? outPath : a).ToArray());
        Assert.Equal(1, r.ExitCode);
        Assert.Contains(message, r.Stderr);
        Assert.DoesNotContain("   at ", r.Stderr);
        Assert.False(File.Exists(outPath) || Directory.Exists(outPath), "nothing is written on bad arguments");
    }
}
