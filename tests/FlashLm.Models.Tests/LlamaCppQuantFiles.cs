using System.Collections.Concurrent;
using FlashLm.Bench;
using FlashLm.Formats;
using FlashLm.Formats.Synth;
using Xunit;

namespace FlashLm.Tests;

/// <summary>
/// The synthetic "tiny-k" Llama (every weight row a multiple of 256, so K-quants apply everywhere) as an F16 GGUF, and
/// files quantized from it by llama.cpp's own quantizer (flashlm-bench's <see cref="LlamaCppQuantizer"/>, llama-quantize's
/// presets), each made on first use and kept for the test run in one temporary folder.
/// </summary>
public sealed class LlamaCppQuantFiles : IDisposable
{
    public const ulong Seed = 11;

    private readonly TempDir _dir = new();
    private readonly ConcurrentDictionary<string, Lazy<string>> _files = new(StringComparer.OrdinalIgnoreCase);

    public LlamaCppQuantFiles()
    {
        F16 = _dir.File("tiny-k.F16.gguf");
        SyntheticModel.WriteGguf(F16, Config, DType.F16, Seed);
    }

    public ModelConfig Config { get; } = SyntheticShapes.Get("tiny-k");

    /// <summary>The F16 GGUF every quantized file is made from.</summary>
    public string F16 { get; }

    /// <summary>The file of llama-quantize preset <paramref name="type"/> ("Q4_K_M"), or <see cref="F16"/> for "F16".</summary>
    public string Get(string type)
    {
        if (string.Equals(type, "F16", StringComparison.OrdinalIgnoreCase)) return F16;
        var name = LlamaCppQuantizer.Canonical(type);
        return _files.GetOrAdd(name, t => new Lazy<string>(() =>
        {
            var path = _dir.File($"tiny-k.{t}.gguf");
            LlamaCppQuantizer.Quantize(F16, path, t, threads: 2);
            return path;
        })).Value;
    }

    public void Dispose() => _dir.Dispose();
}

/// <summary>Test classes that share the llama.cpp-quantized tiny-k files (made once per test run).</summary>
[CollectionDefinition(Name)]
public sealed class LlamaCppQuantCollection : ICollectionFixture<LlamaCppQuantFiles>
{
    public const string Name = "llama.cpp-quantized tiny-k";
}
