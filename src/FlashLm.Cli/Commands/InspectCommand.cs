using System.CommandLine;
using FlashLm.Formats;
using FlashLm.Runtime;
using Spectre.Console;

namespace FlashLm.Cli.Commands;

/// <summary>`flashlm inspect`: shapes, dtypes and sizes, and what would stay in DRAM versus go to flash.</summary>
public static class InspectCommand
{
    public static Command Build()
    {
        var model = new Option<string?>("--model", "-m") { Description = "model file or folder" };
        var tokenizer = new Option<string?>("--tokenizer", "-z") { Description = "tokenizer .bin for llama2.c models" };
        var tensors = new Option<bool>("--tensors") { Description = "list every tensor" };
        var cmd = new Command("inspect", "Show a model's shapes, dtypes, sizes and its DRAM / flash split.") { model, tokenizer, tensors };
        cmd.SetAction(r => CliErrors.Guard(() =>
        {
            using var source = DefaultModel.Open(r.GetValue(model), r.GetValue(tokenizer));
            var c = source.Config;
            var console = AnsiConsole.Console;
            var info = new Table().AddColumn("property").AddColumn("value");
            info.AddRow("path", Markup.Escape(source.Path));
            info.AddRow("format", source.Format);
            info.AddRow("architecture", c.Architecture == Architecture.Llama ? c.GgufArchitecture : c.Architecture.ToString());
            info.AddRow(c.MoE ? "dim / hidden (neurons per expert)" : "dim / hidden (neurons per layer)", $"{c.Dim} / {c.HiddenDim}");
            if (c.MoE) info.AddRow("experts per layer / used per token", $"{c.Experts} / {c.ExpertsUsed}");
            info.AddRow("layers / heads / kv heads / head size", $"{c.Layers} / {c.Heads} / {c.KvHeads} / {c.HeadSize}");
            info.AddRow("vocab / context", $"{c.VocabSize} / {c.ContextLength}");
            info.AddRow("tied embeddings", c.TiedEmbeddings.ToString());
            info.AddRow("tokenizer", source.Tokenizer.Kind);
            long dram = source.Tensors.Values.Where(t => !TensorNames.IsFfnMatrix(t.Name)).Sum(t => t.ByteLength);
            long flash = source.Tensors.Values.Where(t => TensorNames.IsFfnMatrix(t.Name)).Sum(t => t.ByteLength);
            info.AddRow("stays in DRAM (embeddings, attention, norms, head)", FlashRuntime.Bytes(dram));
            info.AddRow(c.MoE ? "goes to flash (experts)" : "goes to flash (FFN neurons)", $"{FlashRuntime.Bytes(flash)} ({100.0 * flash / Math.Max(1, dram + flash):F1} %)");
            var dtypes = source.Tensors.Values.GroupBy(t => t.DType).OrderBy(g => g.Key)
                .Select(g => $"{DTypeInfo.Name(g.Key)}: {g.Count()} ({FlashRuntime.Bytes(g.Sum(t => t.ByteLength))})");
            info.AddRow("dtypes (tensors, bytes)", string.Join(", ", dtypes));
            info.AddRow("FFN bytes per neuron", Markup.Escape(PerNeuron(source)));
            console.Write(info);
            if (r.GetValue(tensors))
            {
                var t = new Table().AddColumn("tensor").AddColumn("dtype").AddColumn("shape").AddColumn("bytes").AddColumn("placement");
                foreach (var x in source.Tensors.Values.OrderBy(x => x.Offset))
                    t.AddRow(Markup.Escape(x.Name), DTypeInfo.Name(x.DType), Markup.Escape(TensorNames.ShapeText(x.Shape)), x.ByteLength.ToString(), TensorNames.IsFfnMatrix(x.Name) ? "flash" : "DRAM");
                console.Write(t);
            }
            return 0;
        }));
        return cmd;
    }

    /// <summary>
    /// What one FFN neuron costs: a layout's bundle (its parts as stored, and the stride between bundles); for
    /// other formats layer 0's gate row, up row and down column in their stored types (the down column is not
    /// contiguous in the source: its share is the down tensor's bytes over the neurons).
    /// </summary>
    internal static string PerNeuron(ModelSource source)
    {
        if (source is FlashLm.Formats.FlashLayout.FlashLayoutModel layout)
        {
            var f = layout.Ffn;
            var parts = f.Parts.Select(p => $"{p.Name} {p.Bytes} ({DTypeInfo.Name(p.DType)})");
            var bundle = $"{string.Join(" + ", parts)}: {f.BundleBytes} B per bundle, bundles {f.BundleStride} B apart in ffn.bin";
            return layout.DownRequant is { } dr ? $"{bundle}; {dr}" : bundle;
        }
        var c = source.Config;
        if (c.MoE)
        {
            // One expert of layer 0: its slab of each experts tensor.
            var parts = new[] { ("gate", TensorNames.FfnGateExperts), ("up", TensorNames.FfnUpExperts), ("down", TensorNames.FfnDownExperts) }
                .Select(p => (p.Item1, T: source.Info(TensorNames.Block(0, p.Item2)))).ToList();
            long expert = parts.Sum(p => p.T.ByteLength / c.Experts);
            return $"{string.Join(" + ", parts.Select(p => $"{p.Item1} {p.T.ByteLength / c.Experts} ({DTypeInfo.Name(p.T.DType)})"))} = {expert} B per expert " +
                   $"({expert / c.HiddenDim} B per neuron; layer 0, as stored)";
        }
        var names = c.Architecture == Architecture.Llama
            ? new[] { ("gate", TensorNames.FfnGate), ("up", TensorNames.FfnUp), ("down", TensorNames.FfnDown) }
            : new[] { ("up", TensorNames.FfnUp), ("down", TensorNames.FfnDown) };
        long total = 0;
        var text = new List<string>();
        foreach (var (part, tensor) in names)
        {
            var t = source.Info(TensorNames.Block(0, tensor));
            // gate/up: one row of dim elements; down: (dim, hidden), one neuron's column is a hidden-th of it.
            long bytes = part == "down" ? t.ByteLength / c.HiddenDim : DTypeInfo.ByteCount(t.DType, c.Dim);
            total += bytes;
            text.Add($"{part} {bytes} ({DTypeInfo.Name(t.DType)})");
        }
        return $"{string.Join(" + ", text)} = {total} B (layer 0, as stored)";
    }
}
