using System.IO.Hashing;

namespace FlashLm.Formats.FlashLayout;

/// <summary>What <see cref="LayoutVerifier.Run"/> found.</summary>
/// <param name="BundleLevel">True when ffn.bin was checked bundle by bundle (ffn.sums); false for a layout written
/// before per-bundle checksums, whose FFN sections were checked as wholes.</param>
/// <param name="Checked">Items checked: DRAM tensors + bundles (or sections) + predictor sets.</param>
/// <param name="Bad">Items that failed (all of them, not only the first listed).</param>
/// <param name="Problems">The first problems, each naming file, tensor or layer/neuron, and offset.</param>
public sealed record LayoutVerifyResult(bool BundleLevel, long Checked, long Bad, IReadOnlyList<string> Problems)
{
    public bool Ok => Bad == 0;
}

/// <summary>
/// Checks every checksum of a flash layout on demand (`flashlm verify`): each DRAM tensor's xxh64, each FFN
/// bundle against ffn.sums (the checksum file's own hash first), and each stored predictor set. Reads the whole
/// layout once, sequentially, in 4 MiB chunks.
/// </summary>
public static class LayoutVerifier
{
    private const int ChunkBytes = 4 << 20;

    /// <param name="progress">Bytes checked so far and in total.</param>
    /// <param name="maxProblems">Problems listed (all are counted).</param>
    public static LayoutVerifyResult Run(FlashLayoutModel model, int maxProblems = 20, IProgress<(long Done, long Total)>? progress = null)
    {
        var problems = new List<string>();
        long checkedItems = 0, bad = 0;
        void Bad(string problem)
        {
            bad++;
            if (problems.Count < maxProblems) problems.Add(problem);
        }

        var ffn = model.Ffn;
        var dram = model.Tensors.Values.Where(t => !model.IsOnFlash(t.Name)).OrderBy(t => t.Offset).ToList();
        long total = dram.Sum(t => t.ByteLength) + ffn.Layers * ffn.LayerBytes, done = 0;
        progress?.Report((0, total));

        using (var h = File.OpenHandle(model.DramPath, FileMode.Open, FileAccess.Read, FileShare.Read, FileOptions.SequentialScan))
        {
            foreach (var t in dram)
            {
                checkedItems++;
                try
                {
                    model.CheckDramTensor(t, LayoutIo.Hash(h, model.DramPath, t.Offset, t.ByteLength, t.Name));
                }
                catch (ModelFormatException e)
                {
                    Bad(e.Message);
                }
                done += t.ByteLength;
                progress?.Report((done, total));
            }
        }

        BundleChecksums? sums = null;
        if (model.HasBundleChecksums)
        {
            try
            {
                sums = model.LoadBundleChecksums();
            }
            catch (ModelFormatException e)
            {
                // Without a trustworthy table no bundle can be judged: report it and check the sections instead.
                Bad(e.Message);
            }
        }

        using (var h = File.OpenHandle(ffn.FilePath, FileMode.Open, FileAccess.Read, FileShare.Read, FileOptions.SequentialScan))
        {
            long stride = ffn.BundleStride;
            int chunkNeurons = (int)Math.Clamp(ChunkBytes / stride, 1, ffn.Neurons);
            var buf = new byte[chunkNeurons * stride];
            for (int l = 0; l < ffn.Layers; l++)
            {
                var section = sums is null ? new XxHash64() : null;
                for (int first = 0; first < ffn.Neurons; first += chunkNeurons)
                {
                    int count = Math.Min(chunkNeurons, ffn.Neurons - first);
                    var chunk = buf.AsSpan(0, (int)(count * stride));
                    long at = ffn.BundleOffset(l, first);
                    BinaryFile.ReadExactly(h, ffn.FilePath, at, chunk, $"ffn layer {l}");
                    section?.Append(chunk);
                    if (sums is not null)
                        for (int k = 0; k < count; k++)
                        {
                            checkedItems++;
                            if (sums.Check(chunk.Slice((int)(k * stride), (int)ffn.BundleBytes), at + k * stride) is { } problem) Bad(problem);
                        }
                    done += chunk.Length;
                    progress?.Report((done, total));
                }
                if (section is not null)
                {
                    checkedItems++;
                    var actual = section.GetCurrentHashAsUInt64();
                    if (actual != ffn.LayerChecksum(l))
                        Bad($"{ffn.FilePath}: checksum mismatch in FFN layer {l}'s section at offset {ffn.LayerOffset(l)}: xxh64 {FlashLayoutRules.Hex(actual)}, manifest says {FlashLayoutRules.Hex(ffn.LayerChecksum(l))}");
                }
            }
        }

        foreach (var kind in model.PredictorKinds)
        {
            checkedItems++;
            try
            {
                model.LoadPredictors(kind);
            }
            catch (ModelFormatException e)
            {
                Bad(e.Message);
            }
        }
        return new LayoutVerifyResult(sums is not null, checkedItems, bad, problems);
    }
}
