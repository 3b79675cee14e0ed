using FlashLm.Formats;
using FlashLm.Formats.FlashLayout;
using FlashLm.Models.Predictors;
using Xunit;

namespace FlashLm.Tests.Predictors;

public sealed class PredictorStoreTests
{
    private static LowRankPredictor RandomPredictor(PredictorKind kind, ModelConfig c, int seed)
    {
        var r = new Random(seed);
        float[] R(int n) => Enumerable.Range(0, n).Select(_ => r.NextSingle() * 2 - 1).ToArray();
        var layers = Enumerable.Range(0, c.Layers).Select(l =>
        {
            int rank = 3 + l;
            return new LowRankLayer(rank, R(rank * c.Dim), R(c.HiddenDim * rank), R(c.HiddenDim), 0.05f * (l + 1), 0.1f);
        }).ToArray();
        return new LowRankPredictor(kind, PredictorHead.SiluMagnitude, c.Dim, c.HiddenDim, layers);
    }

    private static string Layout(TempDir tmp)
    {
        using var src = new RandomModel(tmp.Sub("model.bin"), RandomModel.Llama(layers: 3), DType.F32, 1);
        var folder = tmp.Sub("layout");
        FlashLayoutWriter.Convert(src, folder);
        return folder;
    }

    [Fact]
    public void Stored_predictors_give_bit_identical_predictions()
    {
        using var tmp = new TempDir();
        var folder = Layout(tmp);
        using (var flash = new FlashLayoutModel(folder))
        {
            Assert.Null(PredictorStore.Load(flash, PredictorKind.SameLayer));
            Assert.Empty(flash.PredictorKinds);
        }
        var c = new FlashLayoutModel(folder).Config;
        var same = RandomPredictor(PredictorKind.SameLayer, c, 1);
        var ahead = RandomPredictor(PredictorKind.Lookahead, c, 2);
        PredictorStore.Save(folder, same);
        PredictorStore.Save(folder, ahead);
        PredictorStore.Save(folder, same); // replacing a kind keeps one entry
        using var reopened = new FlashLayoutModel(folder);
        Assert.Equal(["lookahead", "same-layer"], reopened.PredictorKinds.Order());
        reopened.Verify(); // the layout itself is untouched
        foreach (var original in new[] { same, ahead })
        {
            var loaded = PredictorStore.Load(reopened, original.Kind)!;
            Assert.Equal(original.Bytes, loaded.Bytes);
            var r = new Random(3);
            var x = new float[c.Dim];
            var s1 = new float[c.HiddenDim];
            var s2 = new float[c.HiddenDim];
            var ids1 = new int[c.HiddenDim];
            var ids2 = new int[c.HiddenDim];
            for (int trial = 0; trial < 20; trial++)
            {
                for (int j = 0; j < x.Length; j++) x[j] = r.NextSingle() * 4 - 2;
                for (int l = 0; l < c.Layers; l++)
                {
                    Assert.Equal(original.InputLayer(l), loaded.InputLayer(l));
                    original.Scores(l, x, s1);
                    loaded.Scores(l, x, s2);
                    Assert.Equal(s1, s2);
                    int n1 = original.Active(l, x, ids1), n2 = loaded.Active(l, x, ids2);
                    Assert.Equal(ids1.AsSpan(0, n1).ToArray(), ids2.AsSpan(0, n2).ToArray());
                }
            }
        }
    }

    [Fact]
    public void Corrupt_or_truncated_predictor_files_fail_naming_file_and_layer()
    {
        using var tmp = new TempDir();
        var folder = Layout(tmp);
        var c = new FlashLayoutModel(folder).Config;
        PredictorStore.Save(folder, RandomPredictor(PredictorKind.SameLayer, c, 1));
        var bin = Path.Combine(folder, StoredPredictor.FileName("same-layer"));
        var good = File.ReadAllBytes(bin);

        // A flipped byte in layer 1's data.
        using (var flash = new FlashLayoutModel(folder))
        {
            var bytes = (byte[])good.Clone();
            long layer1 = FlashLayoutRules.AlignUp(4L * (3 * c.Dim + c.HiddenDim * 3 + c.HiddenDim), 64);
            bytes[layer1 + 10] ^= 0x40;
            File.WriteAllBytes(bin, bytes);
            var e = Assert.Throws<ModelFormatException>(() => flash.LoadPredictors("same-layer"));
            Assert.Equal(bin, e.FilePath);
            Assert.Equal("predictor layer 1", e.Key);
            Assert.Contains("checksum", e.Message);
        }

        // Truncated: the last layer lies beyond the end.
        File.WriteAllBytes(bin, good[..(good.Length - 8)]);
        using (var flash = new FlashLayoutModel(folder))
        {
            var e = Assert.Throws<ModelFormatException>(() => flash.LoadPredictors("same-layer"));
            Assert.Equal(bin, e.FilePath);
            Assert.Equal("predictor layer 2", e.Key);
            Assert.Contains("beyond the end", e.Message);
        }
        File.WriteAllBytes(bin, good);

        // A manifest whose rank does not match the stored bytes.
        var manifest = Path.Combine(folder, "manifest.json");
        var text = File.ReadAllText(manifest);
        File.WriteAllText(manifest, text.Replace("\"rank\": 4", "\"rank\": 6"));
        using (var flash = new FlashLayoutModel(folder))
        {
            var e = Assert.Throws<ModelFormatException>(() => flash.LoadPredictors("same-layer"));
            Assert.Equal(manifest, e.FilePath);
            Assert.Equal("predictors[0].layers[1].bytes", e.Key);
        }

        // A missing data file.
        File.WriteAllText(manifest, text);
        File.Delete(bin);
        using (var flash = new FlashLayoutModel(folder))
        {
            var e = Assert.Throws<ModelFormatException>(() => flash.LoadPredictors("same-layer"));
            Assert.Equal("predictors[0].file", e.Key);
        }
    }
}
