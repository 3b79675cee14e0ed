using FlashLm.Formats;
using FlashLm.Formats.FlashLayout;
using FlashLm.Models.Predictors;
using FlashLm.Models.Sparsity;

namespace FlashLm.Tests;

/// <summary>stories260K in flash layout with 50 % thresholds and trained same-layer and lookahead predictors.</summary>
public sealed class TrainedStoriesFixture : IDisposable
{
    private readonly TempDir? _dir;

    public string? Folder { get; }
    public float[]? Thresholds { get; }

    public TrainedStoriesFixture()
    {
        if (SharedModels.Dir is null) return;
        _dir = new TempDir();
        Folder = _dir.File("stories-trained");
        using (var source = ModelLoader.Open(SharedModels.StoriesBin, SharedModels.Tok512)) FlashLayoutWriter.Convert(source, Folder);
        List<int[]> sequences;
        using (var layout = new FlashLayoutModel(Folder))
        {
            sequences = Calibrator.Sequences(layout, null, 2048);
            Thresholds = Calibrator.Calibrate(layout, sequences, 0.5).Thresholds;
        }
        FlashLayoutWriter.WriteThresholds(Folder, Thresholds.Select(t => (double)t).ToArray());
        ActivitySamples samples;
        using (var layout = new FlashLayoutModel(Folder)) samples = ActivitySamples.Collect(layout, sequences, Thresholds);
        // Rank 64 is this model's full width (dim 64); the note reports rank 32 too.
        var options = new PredictorTrainingOptions { Rank = 64, Epochs = 6, TargetRecall = 0.975 };
        PredictorStore.Save(Folder, PredictorTrainer.Train(samples, PredictorKind.SameLayer, options));
        PredictorStore.Save(Folder, PredictorTrainer.Train(samples, PredictorKind.Lookahead, options));
    }

    public void Dispose() => _dir?.Dispose();
}
