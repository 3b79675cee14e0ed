using System.CommandLine;
using System.Globalization;
using FlashLm.Cluster;
using FlashLm.Formats.FlashLayout;
using FlashLm.Server;

namespace FlashLm.Cli.Commands;

/// <summary>
/// `flashlm cluster [--model M] [--nodes 3] [--mode layers|sessions|both]`: starts the nodes as separate `flashlm node`
/// processes on loopback and checks and measures them against one node in this process: layers across nodes (output
/// identical to one node, greedy and seeded sampling; per-token cost of each hop; a stage killed mid-generation), and
/// conversations sharded across nodes (any node serves any conversation; a second turn reuses the KV cache; the node
/// holding a conversation killed mid-turn; the conversation restarted from its transcript elsewhere; new ones avoid the dead
/// node). Prints what it measured; exits 1 when a check fails.
/// </summary>
public static class ClusterCommand
{
    public static Command Build()
    {
        var model = new Option<string?>("--model", "-m") { Description = "model (default: the built-in synthetic model)" };
        var nodes = new Option<int>("--nodes") { Description = "node processes to start", DefaultValueFactory = _ => 3 };
        var mode = new Option<string>("--mode") { Description = "layers, sessions or both", DefaultValueFactory = _ => "both" };
        var tokens = new Option<int>("--max-tokens", "-n") { Description = "tokens per measured request", DefaultValueFactory = _ => 32 };
        var reps = new Option<int>("--reps") { Description = "measured requests (alternating cluster and one node)", DefaultValueFactory = _ => 5 };
        var prompt = new Option<string>("--prompt", "-i") { Description = "prompt", DefaultValueFactory = _ => "Once upon a time" };
        var set = new Option<string[]>("--set") { Description = "a setting for every node and the reference: key=value" };
        var cmd = new Command("cluster", "Start a cluster of flashlm node processes on loopback; check it against one node and measure each hop.")
            { model, nodes, mode, tokens, reps, prompt, set };
        cmd.SetAction(r => CliErrors.Guard(() =>
        {
            int n = r.GetValue(nodes);
            if (n is < 2 or > 8) throw new ArgumentException($"--nodes {n}: 2 to 8 on one machine");
            string m = r.GetValue(mode)!;
            if (m is not ("layers" or "sessions" or "both")) throw new ArgumentException($"--mode {m}: layers, sessions or both");
            if (r.GetValue(tokens) is < 2 or > 4096) throw new ArgumentException("--max-tokens: 2 to 4096");
            if (r.GetValue(reps) is < 1 or > 100) throw new ArgumentException("--reps: 1 to 100");
            var layout = DefaultModel.LayoutFolder(r.GetValue(model), null);
            // Reproducible output on every node (hits-first off: one summation order whatever the cache held).
            var settings = new List<string> { "hits-first=off" };
            settings.AddRange(r.GetValue(set) ?? []);
            var run = new Run(layout, n, settings, r.GetValue(prompt)!, r.GetValue(tokens), r.GetValue(reps));
            return Task.Run(async () =>
            {
                bool ok = true;
                if (m is "layers" or "both") ok &= await run.LayersAsync();
                if (m is "sessions" or "both") ok &= await run.SessionsAsync();
                Console.WriteLine(ok ? "cluster: every check passed" : "cluster: a check FAILED (above)");
                return ok ? 0 : 1;
            }).GetAwaiter().GetResult();
        }));
        return cmd;
    }

    private sealed class Run(string layout, int nodes, List<string> settings, string prompt, int maxTokens, int reps)
    {
        private static readonly string Flashlm = typeof(ClusterCommand).Assembly.Location;
        private readonly HttpClient _http = new() { Timeout = TimeSpan.FromMinutes(5) };
        private bool _ok = true;

        private void Check(bool passed, string what)
        {
            Console.WriteLine($"  [{(passed ? "ok" : "FAIL")}] {what}");
            _ok &= passed;
        }

        private static double Median(List<double> v)
        {
            v.Sort();
            return v.Count == 0 ? double.NaN : v.Count % 2 == 1 ? v[v.Count / 2] : (v[v.Count / 2 - 1] + v[v.Count / 2]) / 2;
        }

        private static string F(double v, string format = "0.00") => v.ToString(format, CultureInfo.InvariantCulture);

        private Task<OpenAiServer> ReferenceAsync() =>
            OpenAiServer.StartAsync(new ServeOptions(layout, [], [.. settings, "server.listen=\"http://127.0.0.1:0\""]));

        public async Task<bool> LayersAsync()
        {
            int layers;
            using (var m = new FlashLayoutModel(layout)) layers = m.Config.Layers;
            if (layers < nodes) throw new ArgumentException($"the model has {layers} layers: fewer than {nodes} nodes can hold a range each");
            var ranges = Enumerable.Range(0, nodes).Select(i => $"{i * layers / nodes}-{(i + 1) * layers / nodes}").ToArray();
            Console.WriteLine($"layers across {nodes} nodes ({string.Join(", ", ranges)} of {layers}); {layout}");
            await using var reference = await ReferenceAsync();
            await using var cluster = await LocalCluster.StartAsync(Flashlm, layout, ranges.Select((l, i) => new NodeSpec(l, Http: i == 0)).ToArray(), settings);
            var head = cluster.Nodes[0].Http!;
            var one = await ClusterProbe.CompleteAsync(_http, reference.Address, prompt, maxTokens);
            var many = await ClusterProbe.CompleteAsync(_http, head, prompt, maxTokens);
            Check(one.Text == many.Text && one.CompletionTokens == many.CompletionTokens, $"greedy output identical to one node ({many.CompletionTokens} tokens)");
            var oneS = await ClusterProbe.CompleteAsync(_http, reference.Address, prompt, maxTokens, temperature: 0.9, seed: 7);
            var manyS = await ClusterProbe.CompleteAsync(_http, head, prompt, maxTokens, temperature: 0.9, seed: 7);
            Check(oneS.Text == manyS.Text, "sampled output (temperature 0.9, seed 7) identical to one node");

            // Per-token cost, alternating the two (the machine is shared: medians of runs side by side).
            var before = await ClusterProbe.MetricsAsync(_http, head);
            long? lo0 = ClusterProbe.LoopbackBytes();
            var msOne = new List<double>();
            var msMany = new List<double>();
            int clusterTokens = 0;
            for (int i = 0; i < reps; i++)
            {
                var a = await ClusterProbe.CompleteAsync(_http, head, prompt, maxTokens);
                msMany.Add(a.Ms / a.CompletionTokens);
                clusterTokens += a.CompletionTokens;
                var b = await ClusterProbe.CompleteAsync(_http, reference.Address, prompt, maxTokens);
                msOne.Add(b.Ms / b.CompletionTokens);
            }
            long? lo1 = ClusterProbe.LoopbackBytes();
            var after = await ClusterProbe.MetricsAsync(_http, head);
            double D(string k) => after.GetValueOrDefault(k) - before.GetValueOrDefault(k);
            double tokens = D("flashlm_pipeline_tokens_total"), hops = D("flashlm_pipeline_hops_total");
            double hopMs = (D("flashlm_pipeline_token_seconds_total") - D("flashlm_pipeline_stage_seconds_total")) * 1000 / Math.Max(1, hops);
            double payload = D("flashlm_pipeline_hop_payload_bytes_total") / Math.Max(1, hops);
            Console.WriteLine($"  request ms/token (HTTP, prompt included), median of {reps}: one node {F(Median(msOne))}, {nodes} nodes {F(Median(msMany))} ({F(Median(msMany) / Median(msOne))}x)");
            Console.WriteLine($"  per generated token: {F(hops / Math.Max(1, tokens), "0.#")} hops; per hop {F(hopMs, "0.000")} ms beyond the stages' own time and {F(payload, "0")} bytes of payload");
            Console.WriteLine($"  stages' own time {F(D("flashlm_pipeline_stage_seconds_total") * 1000 / Math.Max(1, tokens))} ms/token of {F(D("flashlm_pipeline_token_seconds_total") * 1000 / Math.Max(1, tokens))} ms/token through the pipeline");
            if (lo0 is { } x && lo1 is { } y)
                Console.WriteLine($"  loopback traffic during the {reps} x 2 requests: {F((y - x) / 1024.0, "0.0")} KiB ({F((y - x) / (double)Math.Max(1, clusterTokens), "0")} bytes per cluster token; HTTP, heartbeats and the one-node requests included)");

            // A middle stage killed mid-generation: the request fails naming the node and its layers.
            int victim = nodes / 2;
            var killed = await ClusterProbe.StreamAsync(_http, head, prompt, Math.Max(maxTokens, 200), conversation: null, onFirstChunk: () => cluster.Kill(victim));
            Check(killed.Error is { } e && e.Contains(cluster.Nodes[victim].Address, StringComparison.Ordinal) && e.Contains($"layers {ranges[victim]}", StringComparison.Ordinal),
                $"stage {ranges[victim]} killed mid-generation: the request failed {F(killed.EndMs - killed.FirstChunkMs, "0")} ms later with: {killed.Error ?? "(no error)"}");
            return _ok;
        }

        public async Task<bool> SessionsAsync()
        {
            Console.WriteLine($"conversations sharded across {nodes} nodes (each holds the whole model, max-sessions 2); {layout}");
            await using var reference = await ReferenceAsync();
            await using var cluster = await LocalCluster.StartAsync(Flashlm, layout, Enumerable.Range(0, nodes).Select(_ => new NodeSpec(null, Http: true)).ToArray(),
                [.. settings, "max-sessions=2"]);
            var holders = new Dictionary<string, string>();
            bool same = true, reusedAll = true;
            for (int c = 0; c < 3 * nodes; c++)
            {
                string id = $"conv-{c}", p = $"{prompt} {c}";
                var entry = cluster.Nodes[c % nodes].Http!;
                var first = await ClusterProbe.CompleteAsync(_http, entry, p, 8, conversation: id);
                holders[id] = first.Node!;
                same &= first.Text == (await ClusterProbe.CompleteAsync(_http, reference.Address, p, 8)).Text;
                // The next turn, through another node: the transcript so far and more.
                string transcript = p + first.Text + " and then";
                var second = await ClusterProbe.CompleteAsync(_http, cluster.Nodes[(c + 1) % nodes].Http!, transcript, 8, conversation: id);
                reusedAll &= second.Node == first.Node && second.Reused > 0;
                same &= second.Text == (await ClusterProbe.CompleteAsync(_http, reference.Address, transcript, 8)).Text;
            }
            var spread = holders.Values.GroupBy(h => h).ToDictionary(g => g.Key, g => g.Count());
            Check(same, $"{holders.Count} conversations, entered through every node: output identical to one node");
            Check(spread.Count > 1, $"held by {spread.Count} nodes ({string.Join(", ", spread.Select(kv => $"{kv.Key.Split(':')[^1]}: {kv.Value}"))})");
            Check(reusedAll, "each second turn, entered through another node, ran on the same node and reused the KV cache");

            // Kill the node holding a conversation mid-turn, entering through another.
            var (victimId, victimAddress) = holders.First(kv => kv.Value != cluster.Nodes[0].Address);
            var victim = cluster.At(victimAddress);
            var killed = await ClusterProbe.StreamAsync(_http, cluster.Nodes[0].Http!, prompt, 220, conversation: victimId,
                onFirstChunk: () => cluster.Kill(victim.Index));
            Check(killed.Error is { } e && e.Contains(victimAddress, StringComparison.Ordinal),
                $"node {victimAddress.Split(':')[^1]} killed mid-turn: the turn failed {F(killed.EndMs - killed.FirstChunkMs, "0")} ms later with: {killed.Error ?? "(no error)"}");
            var restarted = await ClusterProbe.CompleteAsync(_http, cluster.Nodes[0].Http!, $"{prompt} again", 8, conversation: victimId);
            Check(restarted.Node != victimAddress && restarted.Reused == 0
                  && restarted.Text == (await ClusterProbe.CompleteAsync(_http, reference.Address, $"{prompt} again", 8)).Text,
                $"its next request restarted from the transcript on {restarted.Node?.Split(':')[^1]} (output identical to one node)");
            var after = new List<string>();
            for (int c = 0; c < 2 * nodes; c++)
                after.Add((await ClusterProbe.CompleteAsync(_http, cluster.Nodes[0].Http!, prompt, 4, conversation: $"new-{c}")).Node!);
            Check(!after.Contains(victimAddress), $"{after.Count} new conversations all went to the nodes that remain");
            return _ok;
        }
    }
}
