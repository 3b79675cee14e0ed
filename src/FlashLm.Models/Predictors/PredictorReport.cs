using System.Globalization;
using System.Text;

namespace FlashLm.Models.Predictors;

/// <summary>
/// One layer measured against the exact active sets. Recall = truly active neurons predicted / truly active;
/// precision = truly active among predicted / predicted; over-selection = predicted / truly active (1 is ideal,
/// and 1 / (1 - sparsity) means "everything"). Counts are summed over positions before dividing.
/// </summary>
public sealed record PredictorLayerReport(int Layer, int InputLayer, int Rank, int Positions, double MeanActive, double MeanPredicted,
    double Recall, double Precision, double OverSelection, long Bytes);

/// <summary>A predictor's per-layer quality on a set of positions (normally the held-out part).</summary>
public sealed record PredictorReport(PredictorKind Kind, IReadOnlyList<PredictorLayerReport> Layers, long Bytes)
{
    public double MinRecall => Layers.Min(l => l.Recall);
    public double MaxOverSelection => Layers.Max(l => l.OverSelection);

    /// <summary>Measures <paramref name="predictor"/> on <paramref name="data"/>'s held-out positions (or training positions).</summary>
    public static PredictorReport Measure(LowRankPredictor predictor, ActivitySamples data, bool heldOut = true)
    {
        var c = data.Config;
        if (predictor.Dim != c.Dim || predictor.Neurons != c.HiddenDim || predictor.Layers != c.Layers)
            throw new ArgumentException("the predictor's shape does not match the samples' model");
        var positions = heldOut ? data.HeldOut : data.Train;
        var ids = new int[c.HiddenDim];
        var predicted = new bool[c.HiddenDim];
        var rows = new List<PredictorLayerReport>();
        for (int l = 0; l < c.Layers; l++)
        {
            int inLayer = predictor.InputLayer(l);
            long actual = 0, chosen = 0, hit = 0;
            foreach (var p in positions)
            {
                int count = predictor.Active(l, data.Input(inLayer, p), ids);
                Array.Clear(predicted);
                for (int k = 0; k < count; k++) predicted[ids[k]] = true;
                chosen += count;
                var g = data.PreActivation(l, p);
                for (int i = 0; i < g.Length; i++)
                {
                    if (!data.IsActive(l, g[i])) continue;
                    actual++;
                    if (predicted[i]) hit++;
                }
            }
            int n = positions.Length;
            rows.Add(new PredictorLayerReport(l, inLayer, predictor.LayerWeights[l].Rank, n, (double)actual / n, (double)chosen / n,
                actual == 0 ? 1 : (double)hit / actual, chosen == 0 ? 1 : (double)hit / chosen,
                actual == 0 ? (chosen == 0 ? 1 : double.PositiveInfinity) : (double)chosen / actual, predictor.LayerBytes(l)));
        }
        return new PredictorReport(predictor.Kind, rows, predictor.Bytes);
    }

    /// <summary>A markdown table, one row per layer.</summary>
    public string ToTable()
    {
        var sb = new StringBuilder();
        var inv = CultureInfo.InvariantCulture;
        sb.AppendLine(inv, $"{Kind} predictor, {Bytes} bytes");
        sb.AppendLine("| layer | input | rank | positions | active | predicted | recall | precision | over-selection | bytes |");
        sb.AppendLine("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
        foreach (var r in Layers)
            sb.AppendLine(inv, $"| {r.Layer} | {r.InputLayer} | {r.Rank} | {r.Positions} | {r.MeanActive:F1} | {r.MeanPredicted:F1} | {r.Recall:F4} | {r.Precision:F4} | {r.OverSelection:F3} | {r.Bytes} |");
        return sb.ToString();
    }
}
