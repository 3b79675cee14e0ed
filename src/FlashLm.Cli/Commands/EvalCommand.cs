using System.CommandLine;
using System.Globalization;
using FlashLm.Formats;
using FlashLm.Models;
using FlashLm.Models.Sampling;
using FlashLm.Models.Sparsity;

namespace FlashLm.Cli.Commands;

/// <summary>
/// `flashlm eval MODEL (--text FILE | --prompt P)`: perplexity and greedy-token agreement, teacher-forced, for the
/// dense model, the dense thresholded model (the sparsity alone) and each trained predictor in the layout.
/// </summary>
public static class EvalCommand
{
    public static Command Build()
    {
        var model = new Argument<string>("model") { Description = "model file or folder (a flash layout brings its thresholds and predictors)" };
        var tokenizer = new Option<string?>("--tokenizer", "-z") { Description = "tokenizer .bin for llama2.c models" };
        var text = new Option<string?>("--text") { Description = "held-out text file to score" };
        var prompt = new Option<string[]>("--prompt") { Description = "score the dense model's own greedy continuation of each prompt instead" };
        var positions = new Option<int>("--positions", "-n") { Description = "positions per sequence", DefaultValueFactory = _ => 256 };
        var sparsity = new Option<double?>("--sparsity") { Description = "target sparsity for on-the-fly thresholds (default: the layout's calibrated thresholds)" };
        var cmd = new Command("eval", "Perplexity and greedy agreement of dense, thresholded and predictor-sparse variants.") { model, tokenizer, text, prompt, positions, sparsity };
        cmd.SetAction(r => CliErrors.Guard(() =>
        {
            using var source = ModelLoader.Open(r.GetValue(model)!, r.GetValue(tokenizer));
            int n = Math.Min(r.GetValue(positions), source.Config.ContextLength);
            var sequences = new List<int[]>();
            if (r.GetValue(text) is { } file) sequences.AddRange(Calibrator.Sequences(source, File.ReadAllText(file), 16 * n));
            foreach (var p in r.GetValue(prompt) ?? []) sequences.Add(DenseGreedy(source, p, n));
            if (sequences.Count == 0) throw new ArgumentException("give --text FILE or at least one --prompt");
            var thresholds = ThresholdResolver.Resolve(source, r.GetValue(sparsity));
            var variants = new List<Evaluator.Variant> { Evaluator.Dense(), Evaluator.Thresholded(thresholds) };
            variants.AddRange(PredictorVariants.For(source, thresholds));
            // Agreement: the thresholded model against dense; predictors against the thresholded model.
            var results = Evaluator.Run(source, sequences, variants, agreementReference: i => i <= 1 ? 0 : 1);
            Console.WriteLine($"{sequences.Sum(s => s.Length - 1)} positions in {sequences.Count} sequences; thresholds: {(thresholds is null ? "none" : string.Join(" ", thresholds.Select(t => t.ToString("G4", CultureInfo.InvariantCulture))))}");
            Console.WriteLine($"{"variant",-22} {"perplexity",10} {"agreement",10} {"vs",18} {"active",8}");
            for (int i = 0; i < results.Count; i++)
            {
                var e = results[i];
                Console.WriteLine($"{e.Variant,-22} {e.Perplexity,10:F3} {e.Agreement,10:P1} {(i == 0 ? "-" : i == 1 ? "dense" : "dense-thresholded"),18} {e.ActiveFraction,8:P1}");
            }
            return 0;
        }));
        return cmd;
    }

    /// <summary>BOS + prompt, then the dense model's greedy tokens, <paramref name="n"/> positions in all.</summary>
    public static int[] DenseGreedy(ModelSource source, string prompt, int n)
    {
        var net = Transformers.Create(source);
        var tokens = source.Tokenizer.Encode(prompt, addBos: true).ToList();
        if (tokens.Count > n) throw new ArgumentException($"the prompt is {tokens.Count} tokens, more than {n} positions");
        var state = net.CreateState(n);
        for (int pos = 0; tokens.Count < n; pos++)
        {
            var logits = net.Forward(state, tokens[pos], pos);
            if (pos == tokens.Count - 1) tokens.Add(Sampler.ArgMax(logits));
        }
        return tokens.ToArray();
    }
}

/// <summary>The trained predictors a flash layout brings, as evaluation variants (neurons not predicted are zeroed).</summary>
public static class PredictorVariants
{
    public static IEnumerable<Evaluator.Variant> For(ModelSource source, float[]? thresholds)
    {
        if (source is not Formats.FlashLayout.FlashLayoutModel layout) yield break;
        foreach (var kind in new[] { Models.Predictors.PredictorKind.SameLayer, Models.Predictors.PredictorKind.Lookahead })
        {
            if (Models.Predictors.PredictorStore.Load(layout, kind) is not { } predictor) continue;
            yield return Evaluator.Masked($"predictor {Models.Predictors.PredictorStore.KindName(kind)}", thresholds, () => Mask(predictor));
        }
    }

    /// <summary>Zeroes the activations of neurons the predictor did not name; a lookahead predictor sees the previous layer's input.</summary>
    private static NeuronMask Mask(Models.Predictors.LowRankPredictor predictor)
    {
        var ids = new int[predictor.Neurons];
        var keep = new bool[predictor.Neurons];
        float[]? previous = null;
        return (layer, x, activations) =>
        {
            var input = predictor.InputLayer(layer) == layer || previous is null ? x : previous;
            int n = predictor.Active(layer, input, ids);
            Array.Clear(keep);
            for (int i = 0; i < n; i++) keep[ids[i]] = true;
            for (int i = 0; i < activations.Length; i++) if (!keep[i]) activations[i] = 0;
            previous = (float[])x.Clone();
        };
    }
}
