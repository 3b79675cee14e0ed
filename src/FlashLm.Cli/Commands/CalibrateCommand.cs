using System.CommandLine;
using System.Globalization;
using FlashLm.Formats;
using FlashLm.Formats.FlashLayout;
using FlashLm.Models.Predictors;
using FlashLm.Models.Sparsity;

namespace FlashLm.Cli.Commands;

/// <summary>
/// `flashlm calibrate LAYOUT [--text FILE] [--sparsity TARGET]`: sets per-layer activation thresholds (SwiGLU, or ReLU / FATReLU)
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
            Console.Error.WriteLine($"trained {PredictorStore.KindName(kind)} predictors (rank {string.Join(", ", predictor.LayerWeights.Select(w => w.Rank).Distinct())}) in {t.Elapsed.TotalSeconds:F1} s");
            Console.WriteLine(PredictorReport.Measure(predictor, samples).ToTable());
        }
    }

    /// <summary>
    /// --activity-only: each neuron's activation frequency under the layout's stored thresholds, stored in the layout. A
    /// mixture of experts (always, it has no thresholds): how often the router chose each expert (what flashlm.pin ranks by).
    /// </summary>
    private static int RecordActivity(string folder, string? textFile, int tokenCount, ulong seed)
    {
        float[][] frequencies;
        int positions;
        ModelConfig c;
        using (var source = new FlashLayoutModel(folder))
        {
            c = source.Config;
            if (c.Architecture != Architecture.Llama)
                throw new ArgumentException($"{folder}: activation frequencies are recorded for SwiGLU (Llama) models");
            var thresholds = c.MoE ? null
                : source.Thresholds?.Select(t => (float)t).ToArray()
                  ?? throw new ArgumentException($"{folder}: the layout has no thresholds to record frequencies under; run flashlm calibrate without --activity-only");
            var sequences = Calibrator.Sequences(source, textFile is null ? null : File.ReadAllText(textFile), tokenCount, seed);
            positions = sequences.Sum(q => q.Length);
            frequencies = thresholds is null ? Calibrator.ExpertFrequencies(source, sequences) : Calibrator.Frequencies(source, sequences, thresholds);
        }
        FlashLayoutWriter.WriteActivity(folder, new ActivityFrequencies(positions, frequencies));
        string text = textFile ?? "self-generated text";
        if (c.MoE)
        {
            Console.Error.WriteLine($"recorded expert frequencies on {positions} positions ({text}), top {c.ExpertsUsed} of {c.Experts} experts per token");
            Console.WriteLine("layer  most_chosen_expert  its_share  experts_never_chosen");
            for (int l = 0; l < c.Layers; l++)
            {
                var perExpert = Enumerable.Range(0, c.Experts).Select(e => frequencies[l][e * c.HiddenDim]).ToArray();
                int top = Array.IndexOf(perExpert, perExpert.Max());
                Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{l,5}  {top,18}  {perExpert[top],9:P1}  {perExpert.Count(f => f == 0),20}"));
            }
            return 0;
        }
        var all = frequencies.SelectMany(f => f).ToArray();
        Array.Sort(all);
        Console.Error.WriteLine($"recorded activation frequencies on {positions} positions ({text}): " +
                                $"median {all[all.Length / 2]:F3}, 90th percentile {all[(int)(all.Length * 0.9)]:F3}, max {all[^1]:F3}");
        return 0;
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
        var activityOnly = new Option<bool>("--activity-only")
        {
            Description = "keep the layout's thresholds and only record each neuron's activation frequency under them (what flashlm.pin ranks neurons by)",
        };
        var cmd = new Command("calibrate", "Calibrate activation-sparsity thresholds (Llama models: SwiGLU, or ReLU / FATReLU above their own threshold), record per-neuron activation frequencies and train sparsity predictors; stores them in a flash layout.")
            { model, text, sparsity, tokens, seed, rank, epochs, lookahead, recall, activityOnly };
        cmd.SetAction(r => CliErrors.Guard(() =>
        {
            var folder = r.GetValue(model)!;
            int tokenCount = r.GetValue(tokens);
            if (tokenCount < 2) throw new ArgumentException($"--tokens {tokenCount}: calibration needs at least 2 tokens (the default is 1024)");
            double target = r.GetValue(sparsity);
            if (!(target >= 0 && target < 1)) throw new ArgumentException($"--sparsity {target}: must be in [0, 1)");
            int? rankValue = r.GetValue(rank);
            if (rankValue is null)
            {
                // Without --rank no predictor is trained: options that only shape training would be ignored silently.
                foreach (var (given, name) in new[] { (r.GetResult(lookahead) is { Implicit: false }, "--lookahead"), (r.GetResult(epochs) is { Implicit: false }, "--epochs"), (r.GetResult(recall) is { Implicit: false }, "--recall") })
                    if (given) throw new ArgumentException($"{name} shapes predictor training, which needs --rank (e.g. --rank 32)");
            }
            else
            {
                if (rankValue <= 0) throw new ArgumentException($"--rank {rankValue}: must be positive");
                if (r.GetValue(epochs) < 0) throw new ArgumentException($"--epochs {r.GetValue(epochs)}: must be 0 or more");
                if (!(r.GetValue(recall) > 0 && r.GetValue(recall) <= 1)) throw new ArgumentException($"--recall {r.GetValue(recall)}: must be in (0, 1]");
            }
            if (!FlashLayoutModel.IsLayoutFolder(folder))
                throw new ArgumentException($"{folder}: calibrate needs a flash-layout folder (thresholds are stored in its manifest); run flashlm convert first");
            bool moe;
            using (var probe = new FlashLayoutModel(folder)) moe = probe.Config.MoE;
            if (moe)
            {
                // The router makes a mixture of experts sparse: no thresholds or predictors to fit, only the experts' frequencies.
                if (rankValue is not null || r.GetResult(sparsity) is { Implicit: false })
                    throw new ArgumentException($"{folder} is a mixture of experts, sparse by its router (exact, in DRAM): --sparsity and --rank do not apply; " +
                                                "flashlm calibrate LAYOUT records how often each expert is chosen (what flashlm.pin ranks experts by)");
                return RecordActivity(folder, r.GetValue(text), tokenCount, r.GetValue(seed));
            }
            if (r.GetValue(activityOnly))
            {
                if (rankValue is not null || r.GetResult(sparsity) is { Implicit: false })
                    throw new ArgumentException("--activity-only keeps the layout's thresholds and trains nothing: drop --sparsity and --rank");
                return RecordActivity(folder, r.GetValue(text), tokenCount, r.GetValue(seed));
            }
            Calibration? result = null;
            List<int[]> sequences;
            float[]? thresholds = null;
            using (var source = new FlashLayoutModel(folder))
            {
                string? calibrationText = r.GetValue(text) is { } f ? File.ReadAllText(f) : null;
                sequences = Calibrator.Sequences(source, calibrationText, tokenCount, r.GetValue(seed));
                if (rankValue is { } asked && asked > Math.Min(source.Config.Dim, source.Config.HiddenDim))
                {
                    // The trainer caps the bottleneck at min(dim, neurons): a larger rank adds nothing. Say what is stored.
                    int stored = Math.Min(source.Config.Dim, source.Config.HiddenDim);
                    Console.Error.WriteLine($"flashlm: note: --rank {asked} is more than min(dim {source.Config.Dim}, neurons {source.Config.HiddenDim}); training and storing rank {stored}");
                    rankValue = stored;
                }
                if (source.Config.Architecture == Architecture.Llama)
                {
                    result = Calibrator.Calibrate(source, sequences, target);
                    thresholds = result.Thresholds;
                }
            }
            if (result is not null)
            {
                FlashLayoutWriter.WriteThresholds(folder, result.Thresholds.Select(t => (double)t).ToArray());
                FlashLayoutWriter.WriteActivity(folder, new ActivityFrequencies(result.Positions, result.Frequencies));
            }
            if (rankValue is { } rk) TrainPredictors(folder, sequences, thresholds, rk, r.GetValue(epochs), r.GetValue(recall), r.GetValue(lookahead));
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
