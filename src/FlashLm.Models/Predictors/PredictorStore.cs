using FlashLm.Formats;
using FlashLm.Formats.FlashLayout;

namespace FlashLm.Models.Predictors;

/// <summary>Saves predictors into, and loads them from, a flash-layout folder (predictors-{kind}.bin + manifest entries).</summary>
public static class PredictorStore
{
    public static string KindName(PredictorKind k) => k == PredictorKind.Lookahead ? "lookahead" : "same-layer";
    public static string HeadName(PredictorHead h) => h == PredictorHead.Relu ? "relu" : "silu-magnitude";

    public static void Save(string layoutFolder, LowRankPredictor p) =>
        FlashLayoutWriter.WritePredictors(layoutFolder, new StoredPredictor(KindName(p.Kind), HeadName(p.Head), p.Dim, p.Neurons,
            p.LayerWeights.Select((w, l) => new StoredPredictorLayer(l, p.InputLayer(l), w.Rank, w.DecisionThreshold, w.ActivityThreshold, w.A, w.B, w.Bias)).ToArray()));

    /// <summary>The stored predictor of <paramref name="kind"/>, or null when the layout has none.</summary>
    public static LowRankPredictor? Load(FlashLayoutModel layout, PredictorKind kind)
    {
        var s = layout.LoadPredictors(KindName(kind));
        if (s is null) return null;
        var head = s.Head == "relu" ? PredictorHead.Relu : PredictorHead.SiluMagnitude;
        var expectedHead = ActivitySamples.HeadFor(layout.Config);
        if (head != expectedHead)
            throw new ModelFormatException(System.IO.Path.Combine(layout.Path, FlashLayoutRules.ManifestFile),
                $"predictor head '{s.Head}' does not fit a {layout.Config.Architecture} model with a {FfnActivations.Name(layout.Config.Activation)} FFN", "predictors");
        var p = new LowRankPredictor(kind, head, s.Dim, s.Neurons,
            s.Layers.Select(l => new LowRankLayer(l.Rank, l.A, l.B, l.Bias, l.DecisionThreshold, l.ActivityThreshold)).ToArray());
        for (int l = 0; l < p.Layers; l++)
            if (s.Layers[l].InputLayer != p.InputLayer(l))
                throw new ModelFormatException(System.IO.Path.Combine(layout.Path, FlashLayoutRules.ManifestFile),
                    $"layer {l} reads input layer {s.Layers[l].InputLayer}, but a {KindName(kind)} predictor reads {p.InputLayer(l)}", "predictors");
        return p;
    }
}
