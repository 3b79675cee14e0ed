using System.CommandLine;
using System.Globalization;
using FlashLm.Formats;
using FlashLm.Formats.FlashLayout;
using FlashLm.Models.Predictors;
using FlashLm.Models.Sparsity;

namespace FlashLm.Cli.Commands;

/// <summary>
/// `flashlm calibrate LAYOUT [--text FILE] [--sparsity TARGET]`: sets per-layer SwiGLU activation thresholds
/// for a target sparsity from calibration text (or text the model samples itself) and stores them in the
/// flash layout's manifest, where flash runs (and dense runs of the layout) pick them up.
/// </summary>
public static class CalibrateCommand
{
    private static void TrainPredictors(string folder, List<int[]> sequences, float[]? thresholds, int rank, int epochs, double recall, bool lookahead)
    {
        var watch = System.Diagnostics.Stopwatch.StartNew();
        ActivitySamples samples;
        using (var source = new FlashLayoutModel(folder)) samples = ActivitySamples.Collect(source, sequences, thresholds);
        Console.Error.WriteLine($"collected FFN inputs and active sets in {watch.Elapsed.TotalSeconds:F1} s");
        var options = new PredictorTrainingOptions { Rank = rank, Epochs = epochs, TargetRecall = recall };
        foreach (var kind in lookahead ? new[] { PredictorKind.SameLayer, PredictorKind.Lookahead } : [PredictorKind.SameLayer])
        {
            var t = System.Diagnostics.Stopwatch.StartNew();
            var predictor = PredictorTrainer.Train(samples, kind, options, p =>
            {
                if (p.Epoch == epochs) // epochs count from 1: the last one's figures
                    Console.Error.WriteLine($"{PredictorStore.KindName(kind)} layer {p.Layer}: epoch {p.Epoch}/{epochs}, loss {p.Loss:F4}, held-out recall {p.HeldOutRecall:F3}, over-selection {p.HeldOutOverSelection:F2}x");
            });
            PredictorStore.Save(folder, predictor);
            Console.Error.WriteLine($"trained {PredictorStore.KindName(kind)} predictors (rank {rank}) in {t.Elapsed.TotalSeconds:F1} s");
            Console.WriteLine(PredictorReport.Measure(predictor, samples).ToTable());
        }
    }

    public static Command Build()
    {
        var model = new Argument<string>("model") { Description = "flash-layout folder (thresholds are stored in its manifest)" };
        var text = new Option<string?>("--text") { Description = "calibration text file (default: text the model samples itself, seeded)" };
        var sparsity = new Option<double>("--sparsity") { Description = "target fraction of FFN neurons left out, in [0, 1)", DefaultValueFactory = _ => 0.5 };
        var tokens = new Option<int>("--tokens") { Description = "calibration tokens to use", DefaultValueFactory = _ => 1024 };
        var seed = new Option<ulong>("--seed") { Description = "seed for self-generated calibration text", DefaultValueFactory = _ => 42 };
        var rank = new Option<int?>("--rank") { Description = "also train low-rank sparsity predictors of this rank per layer (x -> A(dim x r) -> B(r x n_ff))" };
        var epochs = new Option<int>("--epochs") { Description = "predictor training epochs", DefaultValueFactory = _ => 8 };
        var lookahead = new Option<bool>("--lookahead") { Description = "also train lookahead predictors (layer N+1's neurons from layer N's input)" };
        var recall = new Option<double>("--recall") { Description = "recall the predictors' decision thresholds aim for (on held-out data; picked on training data with a 0.02 margin)", DefaultValueFactory = _ => 0.975 };
        var cmd = new Command("calibrate", "Calibrate activation-sparsity thresholds (SwiGLU models) and train sparsity predictors; stores them in a flash layout.")
            { model, text, sparsity, tokens, seed, rank, epochs, lookahead, recall };
        cmd.SetAction(r => CliErrors.Guard(() =>
        {
            var folder = r.GetValue(model)!;
            if (!FlashLayoutModel.IsLayoutFolder(folder))
                throw new ArgumentException($"{folder}: calibrate needs a flash-layout folder (thresholds are stored in its manifest); run flashlm convert first");
            Calibration? result = null;
            List<int[]> sequences;
            float[]? thresholds = null;
            using (var source = new FlashLayoutModel(folder))
            {
                string? calibrationText = r.GetValue(text) is { } f ? File.ReadAllText(f) : null;
                sequences = Calibrator.Sequences(source, calibrationText, r.GetValue(tokens), r.GetValue(seed));
                if (source.Config.Architecture == Architecture.Llama)
                {
                    result = Calibrator.Calibrate(source, sequences, r.GetValue(sparsity));
                    thresholds = result.Thresholds;
                }
            }
            if (result is not null) FlashLayoutWriter.WriteThresholds(folder, result.Thresholds.Select(t => (double)t).ToArray());
            if (r.GetValue(rank) is { } rk) TrainPredictors(folder, sequences, thresholds, rk, r.GetValue(epochs), r.GetValue(recall), r.GetValue(lookahead));
            if (result is null) return 0;
            Console.Error.WriteLine($"calibrated on {result.Positions} positions ({(r.GetValue(text) is null ? "self-generated text" : r.GetValue(text))}), target sparsity {result.TargetSparsity:P0}");
            Console.WriteLine("layer  threshold  measured_sparsity");
            for (int l = 0; l < result.Thresholds.Length; l++)
                Console.WriteLine($"{l,5}  {result.Thresholds[l].ToString("G6", CultureInfo.InvariantCulture),9}  {result.MeasuredSparsity[l].ToString("P1", CultureInfo.InvariantCulture),17}");
            return 0;
        }));
        return cmd;
    }
}
