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
            info.AddRow("architecture", c.Architecture.ToString());
            info.AddRow("dim / hidden (neurons per layer)", $"{c.Dim} / {c.HiddenDim}");
            info.AddRow("layers / heads / kv heads / head size", $"{c.Layers} / {c.Heads} / {c.KvHeads} / {c.HeadSize}");
            info.AddRow("vocab / context", $"{c.VocabSize} / {c.ContextLength}");
            info.AddRow("tied embeddings", c.TiedEmbeddings.ToString());
            info.AddRow("tokenizer", source.Tokenizer.Kind);
            long dram = source.Tensors.Values.Where(t => !TensorNames.IsFfnMatrix(t.Name)).Sum(t => t.ByteLength);
            long flash = source.Tensors.Values.Where(t => TensorNames.IsFfnMatrix(t.Name)).Sum(t => t.ByteLength);
            info.AddRow("stays in DRAM (embeddings, attention, norms, head)", FlashRuntime.Bytes(dram));
            info.AddRow("goes to flash (FFN neurons)", $"{FlashRuntime.Bytes(flash)} ({100.0 * flash / Math.Max(1, dram + flash):F1} %)");
            var dtypes = source.Tensors.Values.GroupBy(t => t.DType).Select(g => $"{g.Key}: {g.Count()}");
            info.AddRow("dtypes", string.Join(", ", dtypes));
            console.Write(info);
            if (r.GetValue(tensors))
            {
                var t = new Table().AddColumn("tensor").AddColumn("dtype").AddColumn("shape").AddColumn("bytes").AddColumn("placement");
                foreach (var x in source.Tensors.Values.OrderBy(x => x.Offset))
                    t.AddRow(x.Name, x.DType.ToString(), TensorNames.ShapeText(x.Shape), x.ByteLength.ToString(), TensorNames.IsFfnMatrix(x.Name) ? "flash" : "DRAM");
                console.Write(t);
            }
            return 0;
        }));
        return cmd;
    }
}
