using System.CommandLine;
using System.Runtime.InteropServices;
using FlashLm.Cluster;

namespace FlashLm.Cli.Commands;

/// <summary>
/// `flashlm node [--model M] [--layers FROM-TO] [--port P] [--seed HOST:PORT]... [--http URL]`: one node of a FlashLm cluster
/// (Akka.Cluster) until Ctrl+C or SIGTERM. Holding all layers it holds a share of the conversations (sharded); holding a
/// range it is a stage of a pipeline across nodes. With --http it serves the OpenAI API (any conversation, wherever held;
/// for a pipeline, on the node holding layer 0).
/// </summary>
public static class NodeCommand
{
    public static Command Build()
    {
        var model = new Option<string?>("--model", "-m") { Description = "llama2.c .bin, GGUF file, Hugging Face folder or flash-layout folder (default: the built-in synthetic model)" };
        var layers = new Option<string?>("--layers") { Description = "the layers this node holds, FROM-TO (TO exclusive; flashlm.layers; default: all, a sessions node)" };
        var hostname = new Option<string?>("--hostname") { Description = "address the other nodes reach this one at (flashlm.cluster.hostname; default 127.0.0.1)" };
        var port = new Option<int?>("--port") { Description = "cluster port (flashlm.cluster.port; 0 picks one)" };
        var seeds = new Option<string[]>("--seed") { Description = "a node to join, HOST:PORT (repeatable; default: this node starts a cluster of its own)" };
        var http = new Option<string?>("--http") { Description = "serve the OpenAI API here too (e.g. http://127.0.0.1:8080; port 0 picks one)" };
        var config = new Option<string[]>("--config") { Description = "HOCON profile(s) overriding the runtime's reference.conf", AllowMultipleArgumentsPerToken = false };
        var set = new Option<string[]>("--set") { Description = "override one setting: key=value (e.g. max-sessions=4, cluster.down-after=5s)" };
        var budget = new Option<string?>("--dram-budget") { Description = "DRAM budget of this node (e.g. 512MiB; 'auto' = everything fits)" };
        var positions = new Option<int>("--positions") { Description = "positions each conversation may hold (0 = the model's context)", DefaultValueFactory = _ => 0 };
        var cmd = new Command("node", "Run one node of a FlashLm cluster: conversations sharded across nodes, or a range of layers of a pipeline across nodes.")
            { model, layers, hostname, port, seeds, http, config, set, budget, positions };
        cmd.SetAction(r => CliErrors.Guard(() =>
        {
            if (r.GetValue(positions) < 0) throw new ArgumentException($"--positions {r.GetValue(positions)}: must be 0 or more");
            var overrides = new List<string>(r.GetValue(set) ?? []);
            if (r.GetValue(budget) is { } b) overrides.Add($"dram-budget={b}");
            if (r.GetValue(layers) is { } l) overrides.Add($"layers={l}");
            if (r.GetValue(hostname) is { } h) overrides.Add($"cluster.hostname=\"{h}\"");
            if (r.GetValue(port) is { } p) overrides.Add($"cluster.port={p}");
            if (r.GetValue(seeds) is { Length: > 0 } s)
                overrides.Add("cluster.seeds=[" + string.Join(",", s.Select(x => $"\"{(x.Contains("://") ? x : "akka.tcp://flashlm@" + x)}\"")) + "]");
            if (r.GetValue(http) is { } url) overrides.Add($"server.listen=\"{url}\"");
            var layout = DefaultModel.LayoutFolder(r.GetValue(model), null);
            using var ctrlC = CtrlC.Listen();
            using var term = PosixSignalRegistration.Create(PosixSignal.SIGTERM, c =>
            {
                c.Cancel = true;
                Console.Error.WriteLine("flashlm: SIGTERM, leaving the cluster");
                try
                {
                    ctrlC.Cancel();
                }
                catch (ObjectDisposedException)
                {
                }
            });
            return Task.Run(async () =>
            {
                await using var node = await ClusterNode.StartAsync(new NodeOptions(layout, r.GetValue(config) ?? [], overrides, r.GetValue(positions), Http: r.GetValue(http) is not null), ctrlC.Token);
                // The lines scripts (and flashlm cluster) wait for.
                Console.WriteLine($"flashlm: node {node.Address} holds layers {node.Layers} of {node.ModelLayers} (role {node.Role})");
                if (node.HttpAddress is { } served) Console.WriteLine($"flashlm: serving on {served}");
                Console.Out.Flush();
                try
                {
                    await Task.Delay(Timeout.Infinite, ctrlC.Token);
                }
                catch (OperationCanceledException)
                {
                }
                Console.Error.WriteLine("flashlm: node stopping");
                return 0;
            }).GetAwaiter().GetResult();
        }));
        return cmd;
    }
}
