using FlashLm.Formats.FlashLayout;
using FlashLm.Formats.Llama2c;
using FlashLm.Formats.Synth;

namespace FlashLm.Formats.Fuzzing;

/// <summary>One file of a seed that cases mutate, with its located header fields.</summary>
/// <param name="Weight">Relative share of the cases that mutate this file.</param>
public sealed record FuzzTarget(string FileName, byte[] Seed, IReadOnlyList<FuzzField> Fields, bool LengthPrefixedJson, int Weight);

/// <summary>
/// The seed of one format: valid small files that FlashLm itself writes (a tiny synthetic Llama), the files of
/// them that cases mutate, and how the runtime opens them. Cases run in one folder: the mutated file is written
/// over its seed copy and put back after the case.
/// </summary>
public sealed class FuzzCorpus
{
    /// <summary>
    /// The formats the fuzzer knows: gguf, safetensors (a Hugging Face Llama folder: safetensors, config.json,
    /// tokenizer.model), llama2c (model + tokenizer), manifest (a flash layout), opt (a Hugging Face OPT folder,
    /// whose GPT-2 tokenizer files vocab.json and merges.txt are mutated too).
    /// </summary>
    public static readonly string[] Formats = ["gguf", "safetensors", "llama2c", "manifest", "opt"];

    /// <summary>The OPT seed: <see cref="SeedConfig"/>'s sizes with OPT's tied head, learned positions and a GPT-2 vocabulary.</summary>
    public static readonly ModelConfig OptSeedConfig = new()
    {
        Architecture = Architecture.Opt, Dim = 16, HiddenDim = 32, Layers = 2, Heads = 2, KvHeads = 2, VocabSize = 300, ContextLength = 32,
        TiedEmbeddings = true, PositionOffset = 2,
    };

    /// <summary>The seed model: small enough that a case costs about a millisecond, with every tensor kind present.</summary>
    public static readonly ModelConfig SeedConfig = new()
    {
        Architecture = Architecture.Llama, Dim = 16, HiddenDim = 32, Layers = 2, Heads = 2, KvHeads = 1, VocabSize = 323, ContextLength = 32,
    };

    public string Format { get; }
    /// <summary>The folder every case runs in (all seed files, one of them mutated).</summary>
    public string CaseFolder { get; }
    public IReadOnlyList<FuzzTarget> Targets { get; }
    /// <summary>The model path and tokenizer path (llama2c only) that <see cref="ModelLoader.Open"/> is given.</summary>
    public string ModelPath { get; }
    public string? TokenizerPath { get; }

    private FuzzCorpus(string format, string caseFolder, IReadOnlyList<FuzzTarget> targets, string modelPath, string? tokenizerPath)
    {
        Format = format;
        CaseFolder = caseFolder;
        Targets = targets;
        ModelPath = modelPath;
        TokenizerPath = tokenizerPath;
    }

    /// <summary>Total bytes of every file in the case folder (the input a case's allocations are measured against).</summary>
    public long InputBytes() => new DirectoryInfo(CaseFolder).EnumerateFiles().Sum(f => f.Length);

    /// <summary>Writes the seed of <paramref name="format"/> under <paramref name="work"/> (a fresh folder).</summary>
    public static FuzzCorpus Create(string format, string work)
    {
        Directory.CreateDirectory(work);
        var gguf = Path.Combine(work, "seed.gguf");
        SyntheticModel.WriteGguf(gguf, SeedConfig, DType.F32, SyntheticModel.DefaultSeed);
        var cases = Path.Combine(work, "case");
        switch (format)
        {
            case "gguf":
            {
                Directory.CreateDirectory(cases);
                var bytes = File.ReadAllBytes(gguf);
                File.WriteAllBytes(Path.Combine(cases, "model.gguf"), bytes);
                return new FuzzCorpus(format, cases, [new("model.gguf", bytes, FuzzFields.Gguf(bytes), false, 1)], Path.Combine(cases, "model.gguf"), null);
            }
            case "safetensors":
            {
                SyntheticModel.WriteHf(cases, SeedConfig, DType.F32, SyntheticModel.DefaultSeed);
                var st = File.ReadAllBytes(Path.Combine(cases, "model.safetensors"));
                var config = File.ReadAllBytes(Path.Combine(cases, "config.json"));
                var spm = File.ReadAllBytes(Path.Combine(cases, SpmTokenizer.ModelFileName));
                return new FuzzCorpus(format, cases,
                [
                    new("model.safetensors", st, FuzzFields.Safetensors(st), true, 4),
                    new("config.json", config, FuzzFields.Json(config), false, 2),
                    new(SpmTokenizer.ModelFileName, spm, FuzzFields.Protobuf(spm), false, 2),
                ], cases, null);
            }
            case "opt":
            {
                SyntheticModel.WriteHf(cases, OptSeedConfig, DType.F32, SyntheticModel.DefaultSeed);
                FuzzTarget Json(string name, int weight, bool fields = true)
                {
                    var bytes = File.ReadAllBytes(Path.Combine(cases, name));
                    return new(name, bytes, fields ? FuzzFields.Json(bytes) : [], false, weight);
                }
                var st = File.ReadAllBytes(Path.Combine(cases, "model.safetensors"));
                return new FuzzCorpus(format, cases,
                [
                    new("model.safetensors", st, FuzzFields.Safetensors(st), true, 2),
                    Json("config.json", 2),
                    Json(Gpt2BpeTokenizer.VocabFileName, 2),
                    Json(Gpt2BpeTokenizer.MergesFileName, 2, fields: false),
                ], cases, null);
            }
            case "llama2c":
            {
                Directory.CreateDirectory(cases);
                var model = Path.Combine(cases, "model.bin");
                var tok = Path.Combine(cases, Llama2cTokenizer.FileName);
                using (var source = ModelLoader.Open(gguf)) WriteLlama2c(source, model, tok);
                var m = File.ReadAllBytes(model);
                var t = File.ReadAllBytes(tok);
                return new FuzzCorpus(format, cases,
                [
                    new("model.bin", m, FuzzFields.Llama2cModel(m), false, 1),
                    new(Llama2cTokenizer.FileName, t, FuzzFields.Llama2cTokenizer(t), false, 1),
                ], model, tok);
            }
            case "manifest":
            {
                using (var source = ModelLoader.Open(gguf)) FlashLayoutWriter.Convert(source, cases);
                // Calibrated thresholds and a stored predictor, so their manifest entries and reader are fuzzed too.
                FlashLayoutWriter.WriteThresholds(cases, Enumerable.Range(0, SeedConfig.Layers).Select(l => 0.1 * (l + 1)).ToArray());
                FlashLayoutWriter.WritePredictors(cases, SeedPredictor());
                var manifest = File.ReadAllBytes(Path.Combine(cases, FlashLayoutRules.ManifestFile));
                return new FuzzCorpus(format, cases, [new(FlashLayoutRules.ManifestFile, manifest, FuzzFields.Json(manifest), false, 1)], cases, null);
            }
            default:
                throw new ArgumentException($"unknown fuzz format '{format}' (use {string.Join(", ", Formats)})");
        }
    }

    /// <summary>A rank-2 same-layer predictor for <see cref="SeedConfig"/> with fixed values.</summary>
    private static StoredPredictor SeedPredictor()
    {
        var c = SeedConfig;
        const int rank = 2;
        float[] Values(int n, int layer) => Enumerable.Range(0, n).Select(i => (i % 7 - 3) * 0.1f + layer).ToArray();
        var layers = Enumerable.Range(0, c.Layers).Select(l =>
            new StoredPredictorLayer(l, l, rank, 0.5f, 0.01f, Values(rank * c.Dim, l), Values(c.HiddenDim * rank, l), Values(c.HiddenDim, l))).ToArray();
        return new StoredPredictor(StoredPredictor.Kinds[0], StoredPredictor.Heads[0], c.Dim, c.HiddenDim, layers);
    }

    /// <summary>
    /// Writes <paramref name="source"/> as a llama2.c checkpoint (the 7-int32 header, then F32 tensors in run.c's
    /// order, with zeroed freq_cis tables) and its vocabulary as a llama2.c tokenizer.
    /// </summary>
    public static void WriteLlama2c(ModelSource source, string modelPath, string tokenizerPath)
    {
        var c = source.Config;
        using (var w = new BinaryWriter(File.Create(modelPath)))
        {
            foreach (int v in new[] { c.Dim, c.HiddenDim, c.Layers, c.Heads, c.KvHeads, c.TiedEmbeddings ? c.VocabSize : -c.VocabSize, c.ContextLength })
                w.Write(v);
            void Put(string name)
            {
                foreach (var x in source.ReadF32(name)) w.Write(x);
            }
            void Stacked(string part)
            {
                for (int l = 0; l < c.Layers; l++) Put(TensorNames.Block(l, part));
            }
            Put(TensorNames.TokenEmbedding);
            Stacked(TensorNames.AttnNorm);
            Stacked(TensorNames.AttnQ);
            Stacked(TensorNames.AttnK);
            Stacked(TensorNames.AttnV);
            Stacked(TensorNames.AttnOutput);
            Stacked(TensorNames.FfnNorm);
            Stacked(TensorNames.FfnGate);
            Stacked(TensorNames.FfnDown);
            Stacked(TensorNames.FfnUp);
            Put(TensorNames.OutputNorm);
            w.Write(new byte[2L * c.ContextLength * (c.HeadSize / 2) * 4]);
            if (!c.TiedEmbeddings) Put(TensorNames.Output);
        }
        var t = source.Tokenizer;
        var pieces = new byte[t.VocabSize][];
        for (int i = 0; i < pieces.Length; i++) pieces[i] = System.Text.Encoding.UTF8.GetBytes(t.TokenText(i).Replace(SpmVocab.Space, ' '));
        var scores = Enumerable.Range(0, pieces.Length).Select(i => -(float)i).ToArray();
        var tokenizer = new Llama2cTokenizer(pieces, scores, Math.Max(1, pieces.Max(p => p.Length)));
        File.WriteAllBytes(tokenizerPath, tokenizer.Export()[Llama2cTokenizer.FileName]);
    }
}
