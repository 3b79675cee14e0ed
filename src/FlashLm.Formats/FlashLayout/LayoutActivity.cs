using System.IO.Hashing;
using System.Runtime.InteropServices;

namespace FlashLm.Formats.FlashLayout;

/// <summary>
/// How often each FFN neuron was active over the calibration positions: <see cref="Frequencies"/>[layer][neuron] in [0, 1]
/// (the share of <see cref="Positions"/> at which the neuron passed the layer's threshold; ReLU: was positive; mixture of
/// experts: at which the router chose the neuron's expert, so an expert's neurons share one frequency). The runtime pins each
/// layer's most frequent neurons in DRAM (flashlm.pin; under MoE whole experts).
/// </summary>
public sealed record ActivityFrequencies(int Positions, float[][] Frequencies);

// manifest.json: "activity": {file, dtype: "F32", positions, bytes, xxh64}; the file holds layers x neurons F32 values, row-major.

internal sealed class ActivityDto
{
    public required string File { get; set; }
    public required string Dtype { get; set; }
    public required int Positions { get; set; }
    public required long Bytes { get; set; }
    public required string Xxh64 { get; set; }
}

/// <summary>Writes and reads the activation frequencies of a flash layout (through FlashLayoutWriter / FlashLayoutModel).</summary>
internal static class LayoutActivity
{
    public const string FileName = "activity.bin";

    public static void Write(string folder, ActivityFrequencies a)
    {
        ArgumentNullException.ThrowIfNull(a);
        var manifestPath = System.IO.Path.Combine(folder, FlashLayoutRules.ManifestFile);
        var m = ManifestJson.Load(manifestPath);
        if (a.Positions <= 0) throw new ArgumentException($"activity frequencies need at least one position, got {a.Positions}");
        // Mixture of experts: every expert's neurons (expert e's neuron i is e x hidden_dim + i, as the layout stores them).
        int neurons = m.Experts is > 0 and var e ? checked(e * m.HiddenDim) : m.HiddenDim;
        if (a.Frequencies.Length != m.Layers || a.Frequencies.Any(f => f.Length != neurons))
            throw new ArgumentException($"activity frequencies must be {m.Layers} layers of {neurons} neurons");
        if (a.Frequencies.Any(f => f.Any(v => !(v >= 0 && v <= 1))))
            throw new ArgumentException("activity frequencies must lie in [0, 1]");
        var tmp = System.IO.Path.Combine(folder, FileName + ".tmp");
        var hash = new XxHash64();
        long bytes = 0;
        using (var f = new FileStream(tmp, FileMode.Create, FileAccess.Write, FileShare.None))
        {
            foreach (var layer in a.Frequencies)
            {
                var b = MemoryMarshal.AsBytes(layer.AsSpan());
                hash.Append(b);
                f.Write(b);
                bytes += b.Length;
            }
            f.Flush(flushToDisk: true);
        }
        File.Move(tmp, System.IO.Path.Combine(folder, FileName), overwrite: true);
        m.Activity = new ActivityDto { File = FileName, Dtype = "F32", Positions = a.Positions, Bytes = bytes, Xxh64 = FlashLayoutRules.Hex(hash.GetCurrentHashAsUInt64()) };
        ManifestJson.WriteAtomic(manifestPath, m);
    }

    /// <summary>Reads and validates the frequencies; null when the manifest has none.</summary>
    public static ActivityFrequencies? Read(string folder, string manifestPath, ActivityDto? d, ModelConfig c)
    {
        if (d is null) return null;

        void Require(bool ok, string k, string problem)
        {
            if (!ok) throw new ModelFormatException(manifestPath, problem, k);
        }

        Require(d.Dtype == "F32", "activity.dtype", $"activity frequencies are stored F32, not '{ModelFormatException.Printable(d.Dtype)}'");
        Require(d.Positions > 0, "activity.positions", $"positions {d.Positions} must be positive");
        Require(FlashLayoutRules.IsPlainFileName(d.File), "activity.file", $"'{ModelFormatException.Printable(d.File)}' is not a plain file name in the layout folder");
        int neurons = c.FfnNeurons;
        long expectedBytes = 4L * c.Layers * neurons;
        Require(d.Bytes == expectedBytes, "activity.bytes", $"bytes {d.Bytes}, but {c.Layers} layers of {neurons} F32 values need {expectedBytes}");
        Require(FlashLayoutRules.TryParseHex(d.Xxh64, out var expected), "activity.xxh64", $"xxh64 '{ModelFormatException.Printable(d.Xxh64)}' is not 16 hex digits");
        var path = System.IO.Path.Combine(folder, d.File);
        if (!File.Exists(path)) throw new ModelFormatException(path, "activity file named by manifest.json is missing", "activity.file");
        long size = new FileInfo(path).Length;
        if (size != expectedBytes)
            throw new ModelFormatException(path, $"model is corrupted or incomplete: the activity file has {size} bytes, the manifest says {expectedBytes}", "activity.bytes");
        var blob = new byte[expectedBytes];
        using (var h = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.Read))
            BinaryFile.ReadExactly(h, path, 0, blob, "activity frequencies");
        var actual = XxHash64.HashToUInt64(blob);
        if (actual != expected)
            throw new ModelFormatException(path, $"checksum mismatch in the activity frequencies: xxh64 {FlashLayoutRules.Hex(actual)}, manifest says {FlashLayoutRules.Hex(expected)}; the file is corrupted", "activity.xxh64");
        var floats = MemoryMarshal.Cast<byte, float>(blob.AsSpan());
        var result = new float[c.Layers][];
        for (int l = 0; l < c.Layers; l++)
        {
            result[l] = floats.Slice(l * neurons, neurons).ToArray();
            for (int n = 0; n < neurons; n++)
                if (!(result[l][n] >= 0 && result[l][n] <= 1))
                    throw new ModelFormatException(path, $"activity frequency of layer {l} neuron {n} is {result[l][n]}, outside [0, 1]", "activity", 4L * ((long)l * neurons + n));
        }
        return new ActivityFrequencies(d.Positions, result);
    }
}
