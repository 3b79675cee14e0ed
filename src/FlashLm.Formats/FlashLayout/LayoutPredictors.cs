using System.IO.Hashing;
using System.Runtime.InteropServices;

namespace FlashLm.Formats.FlashLayout;

/// <summary>
/// One layer of a stored low-rank predictor (F32, row-major): A (rank, dim), B (neurons, rank), Bias (neurons).
/// Scores are head(B (A x) + Bias) for x = the FFN input of <see cref="InputLayer"/>; a neuron is predicted
/// active iff its score &gt;= <see cref="DecisionThreshold"/>. <see cref="ActivityThreshold"/> is the model
/// threshold the predictor was trained for (0 for ReLU).
/// </summary>
public sealed record StoredPredictorLayer(int Layer, int InputLayer, int Rank, float DecisionThreshold, float ActivityThreshold, float[] A, float[] B, float[] Bias);

/// <summary>A set of per-layer predictors as stored in a flash layout. Kind: "same-layer" or "lookahead"; Head: "relu" or "silu-magnitude".</summary>
public sealed record StoredPredictor(string Kind, string Head, int Dim, int Neurons, IReadOnlyList<StoredPredictorLayer> Layers)
{
    public static readonly string[] Kinds = ["same-layer", "lookahead"];
    public static readonly string[] Heads = ["relu", "silu-magnitude"];

    /// <summary>The data file a kind is stored in.</summary>
    public static string FileName(string kind) => $"predictors-{kind}.bin";

    internal static long LayerBytes(int rank, int dim, int neurons) => 4L * ((long)rank * dim + (long)neurons * rank + neurons);
}

// manifest.json: "predictors": [{kind, head, file, dtype, layers: [{layer, input_layer, rank, decision_threshold,
// activity_threshold, offset, bytes, xxh64}]}]; each layer's blob is A, B, bias back to back at a 64-byte-aligned offset.

internal sealed class PredictorSetDto
{
    public required string Kind { get; set; }
    public required string Head { get; set; }
    public required string File { get; set; }
    public required string Dtype { get; set; }
    public required PredictorLayerDto[] Layers { get; set; }
}

internal sealed class PredictorLayerDto
{
    public required int Layer { get; set; }
    public required int InputLayer { get; set; }
    public required int Rank { get; set; }
    public required float DecisionThreshold { get; set; }
    public required float ActivityThreshold { get; set; }
    public required long Offset { get; set; }
    public required long Bytes { get; set; }
    public required string Xxh64 { get; set; }
}

/// <summary>Writes and reads the predictors of a flash layout (called through FlashLayoutWriter / FlashLayoutModel).</summary>
internal static class LayoutPredictors
{
    public static void Write(string folder, StoredPredictor p)
    {
        ArgumentNullException.ThrowIfNull(p);
        var manifestPath = System.IO.Path.Combine(folder, FlashLayoutRules.ManifestFile);
        var m = ManifestJson.Load(manifestPath);
        if (!StoredPredictor.Kinds.Contains(p.Kind)) throw new ArgumentException($"unknown predictor kind '{p.Kind}' (expected {string.Join(" or ", StoredPredictor.Kinds)})");
        if (!StoredPredictor.Heads.Contains(p.Head)) throw new ArgumentException($"unknown predictor head '{p.Head}' (expected {string.Join(" or ", StoredPredictor.Heads)})");
        if (p.Dim != m.Dim || p.Neurons != m.HiddenDim || p.Layers.Count != m.Layers)
            throw new ArgumentException($"predictor shape (dim {p.Dim}, neurons {p.Neurons}, {p.Layers.Count} layers) does not match the layout (dim {m.Dim}, hidden_dim {m.HiddenDim}, {m.Layers} layers)");
        var file = StoredPredictor.FileName(p.Kind);
        var layers = new PredictorLayerDto[p.Layers.Count];
        var tmp = System.IO.Path.Combine(folder, file + ".tmp");
        using (var f = new FileStream(tmp, FileMode.Create, FileAccess.Write, FileShare.None))
        {
            for (int l = 0; l < layers.Length; l++)
            {
                var w = p.Layers[l];
                if (w.Layer != l || w.InputLayer < 0 || w.InputLayer >= m.Layers || w.Rank <= 0
                    || w.A.Length != w.Rank * p.Dim || w.B.Length != p.Neurons * w.Rank || w.Bias.Length != p.Neurons)
                    throw new ArgumentException($"predictor layer {l} is inconsistent (layer {w.Layer}, input {w.InputLayer}, rank {w.Rank})");
                if (!float.IsFinite(w.DecisionThreshold) || !float.IsFinite(w.ActivityThreshold))
                    throw new ArgumentException($"predictor layer {l}: thresholds must be finite");
                f.Write(new byte[FlashLayoutRules.AlignUp(f.Position, FlashLayoutRules.DramAlignment) - f.Position]);
                long offset = f.Position;
                var hash = new XxHash64();
                foreach (var part in new[] { w.A, w.B, w.Bias })
                {
                    var bytes = MemoryMarshal.AsBytes(part.AsSpan());
                    hash.Append(bytes);
                    f.Write(bytes);
                }
                layers[l] = new PredictorLayerDto
                {
                    Layer = l,
                    InputLayer = w.InputLayer,
                    Rank = w.Rank,
                    DecisionThreshold = w.DecisionThreshold,
                    ActivityThreshold = w.ActivityThreshold,
                    Offset = offset,
                    Bytes = f.Position - offset,
                    Xxh64 = FlashLayoutRules.Hex(hash.GetCurrentHashAsUInt64()),
                };
            }
            f.Flush(flushToDisk: true);
        }
        File.Move(tmp, System.IO.Path.Combine(folder, file), overwrite: true);
        var set = new PredictorSetDto { Kind = p.Kind, Head = p.Head, File = file, Dtype = "F32", Layers = layers };
        m.Predictors = [.. (m.Predictors ?? []).Where(s => s.Kind != p.Kind), set];
        ManifestJson.WriteAtomic(manifestPath, m);
    }

    /// <summary>Reads and validates one kind; null when the manifest has none of that kind.</summary>
    public static StoredPredictor? Read(string folder, string manifestPath, PredictorSetDto[]? sets, ModelConfig c, string kind)
    {
        if (sets is null) return null;
        int index = Array.FindIndex(sets, s => s.Kind == kind);
        if (index < 0) return null;
        var set = sets[index];
        string key = $"predictors[{index}]";

        void Require(bool ok, string k, string problem)
        {
            if (!ok) throw new ModelFormatException(manifestPath, problem, k);
        }

        Require(StoredPredictor.Heads.Contains(set.Head), key + ".head", $"unknown predictor head '{ModelFormatException.Printable(set.Head)}' (expected {string.Join(" or ", StoredPredictor.Heads)})");
        Require(set.Dtype == "F32", key + ".dtype", $"predictors are stored F32, not '{set.Dtype}'");
        Require(FlashLayoutRules.IsPlainFileName(set.File), key + ".file", $"'{ModelFormatException.Printable(set.File)}' is not a plain file name in the layout folder");
        var path = System.IO.Path.Combine(folder, set.File);
        Require(File.Exists(path), key + ".file", $"predictor file '{set.File}' is missing");
        Require(set.Layers.Length == c.Layers, key + ".layers", $"has {set.Layers.Length} layers for {c.Layers} model layers");
        long size = new FileInfo(path).Length;
        var result = new StoredPredictorLayer[c.Layers];
        long previousEnd = 0;
        using var h = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.Read);
        for (int l = 0; l < c.Layers; l++)
        {
            var d = set.Layers[l];
            string lk = $"{key}.layers[{l}]";
            Require(d.Layer == l, lk + ".layer", $"entry {l} is labelled layer {d.Layer}");
            Require(d.InputLayer >= 0 && d.InputLayer <= l, lk + ".input_layer", $"layer {l} reads input layer {d.InputLayer}; expected a layer in 0..{l}");
            Require(d.Rank > 0 && d.Rank <= Math.Min(c.Dim, c.HiddenDim), lk + ".rank", $"rank {d.Rank} is outside 1..{Math.Min(c.Dim, c.HiddenDim)}");
            Require(float.IsFinite(d.DecisionThreshold), lk + ".decision_threshold", "decision threshold must be finite");
            Require(float.IsFinite(d.ActivityThreshold), lk + ".activity_threshold", "activity threshold must be finite");
            long bytes = StoredPredictor.LayerBytes(d.Rank, c.Dim, c.HiddenDim);
            Require(d.Bytes == bytes, lk + ".bytes", $"bytes {d.Bytes}, but rank {d.Rank} needs {bytes}");
            Require(d.Offset >= 0 && d.Offset % FlashLayoutRules.DramAlignment == 0, lk + ".offset", $"offset {d.Offset} is negative or not a multiple of {FlashLayoutRules.DramAlignment}");
            Require(d.Offset >= previousEnd, lk + ".offset", $"layer {l}'s data at {d.Offset} overlaps the previous layer's (ends at {previousEnd})");
            Require(FlashLayoutRules.TryParseHex(d.Xxh64, out var expected), lk + ".xxh64", $"xxh64 '{d.Xxh64}' is not 16 hex digits");
            if (d.Offset > size - d.Bytes)
                throw new ModelFormatException(path, $"model is corrupted or incomplete: predictor layer {l}'s data [{d.Offset}, {d.Offset + d.Bytes}) lies beyond the end of the file ({size} bytes)", $"predictor layer {l}", d.Offset);
            previousEnd = d.Offset + d.Bytes;
            var blob = new byte[bytes];
            BinaryFile.ReadExactly(h, path, d.Offset, blob, $"predictor layer {l}");
            var actual = XxHash64.HashToUInt64(blob);
            if (actual != expected)
                throw new ModelFormatException(path, $"checksum mismatch in predictor layer {l}: xxh64 {FlashLayoutRules.Hex(actual)}, manifest says {FlashLayoutRules.Hex(expected)}; the file is corrupted", $"predictor layer {l}", d.Offset);
            var floats = MemoryMarshal.Cast<byte, float>(blob.AsSpan());
            int aLen = d.Rank * c.Dim, bLen = c.HiddenDim * d.Rank;
            result[l] = new StoredPredictorLayer(l, d.InputLayer, d.Rank, d.DecisionThreshold, d.ActivityThreshold,
                floats[..aLen].ToArray(), floats.Slice(aLen, bLen).ToArray(), floats.Slice(aLen + bLen, c.HiddenDim).ToArray());
        }
        return new StoredPredictor(kind, set.Head, c.Dim, c.HiddenDim, result);
    }
}
