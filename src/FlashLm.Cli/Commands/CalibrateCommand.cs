using System.CommandLine;
using System.Globalization;
using FlashLm.Formats;
using FlashLm.Formats.FlashLayout;
using FlashLm.Models.Sparsity;

namespace FlashLm.Cli.Commands;

/// <summary>
/// `flashlm calibrate LAYOUT [--text FILE] [--sparsity TARGET]`: sets per-layer SwiGLU activation thresholds
/// for a target sparsity from calibration text (or text the model samples itself) and stores them in the
/// flash layout's manifest, where flash runs (and dense runs of the layout) pick them up.
/// </summary>
public static class CalibrateCommand
{
    public static Command Build()
    {
        var model = new Argument<string>("model") { Description = "flash-layout folder (thresholds are stored in its manifest)" };
        var text = new Option<string?>("--text") { Description = "calibration text file (default: text the model samples itself, seeded)" };
        var sparsity = new Option<double>("--sparsity") { Description = "target fraction of FFN neurons left out, in [0, 1)", DefaultValueFactory = _ => 0.5 };
        var tokens = new Option<int>("--tokens") { Description = "calibration tokens to use", DefaultValueFactory = _ => 1024 };
        var seed = new Option<ulong>("--seed") { Description = "seed for self-generated calibration text", DefaultValueFactory = _ => 42 };
        var cmd = new Command("calibrate", "Calibrate activation-sparsity thresholds (SwiGLU models) and store them in a flash layout.") { model, text, sparsity, tokens, seed };
        cmd.SetAction(r => CliErrors.Guard(() =>
        {
            var folder = r.GetValue(model)!;
            if (!FlashLayoutModel.IsLayoutFolder(folder))
                throw new ArgumentException($"{folder}: calibrate needs a flash-layout folder (thresholds are stored in its manifest); run flashlm convert first");
            Calibration result;
            using (var source = new FlashLayoutModel(folder))
            {
                string? calibrationText = r.GetValue(text) is { } f ? File.ReadAllText(f) : null;
                var sequences = Calibrator.Sequences(source, calibrationText, r.GetValue(tokens), r.GetValue(seed));
                result = Calibrator.Calibrate(source, sequences, r.GetValue(sparsity));
            }
            FlashLayoutWriter.WriteThresholds(folder, result.Thresholds.Select(t => (double)t).ToArray());
            Console.Error.WriteLine($"calibrated on {result.Positions} positions ({(r.GetValue(text) is null ? "self-generated text" : r.GetValue(text))}), target sparsity {result.TargetSparsity:P0}");
            Console.WriteLine("layer  threshold  measured_sparsity");
            for (int l = 0; l < result.Thresholds.Length; l++)
                Console.WriteLine($"{l,5}  {result.Thresholds[l].ToString("G6", CultureInfo.InvariantCulture),9}  {result.MeasuredSparsity[l].ToString("P1", CultureInfo.InvariantCulture),17}");
            return 0;
        }));
        return cmd;
    }
}
