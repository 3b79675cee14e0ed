using FlashLm.Cluster;
using FlashLm.Formats.Synth;
using FlashLm.Server;
using Xunit;

namespace FlashLm.Tests.Cli;

/// <summary>
/// Three `flashlm node` processes on loopback (Akka.Cluster): layers across nodes give one node's output and a stage killed
/// mid-generation fails the request naming it; conversations sharded across nodes are served through any node, keep their
/// KV cache on one node between turns, fail clearly when their node is killed mid-turn and restart from the transcript on
/// a node that remains. One node in this process (the same layout and settings) is the reference.
/// </summary>
public sealed class ClusterTests : IDisposable
{
    private static readonly string Flashlm = Path.Combine(AppContext.BaseDirectory, "flashlm.dll");

    // Reproducible sums on every node; failure detection with room for a loaded CI machine (a node is taken as unreachable
    // after 6 s of silence and removed 2 s later).
    private static readonly string[] Settings = ["hits-first=off", "cluster.failure-detection=6s", "cluster.down-after=2s"];

    private readonly TempDir _dir = new();
    private readonly HttpClient _http = new() { Timeout = TimeSpan.FromSeconds(120) };

    public void Dispose()
    {
        _http.Dispose();
        _dir.Dispose();
    }

    private string Layout() => SyntheticModels.WriteLayout(_dir.File("tiny.flash"), SyntheticShapes.Get("tiny"));

    private static Task<OpenAiServer> Reference(string layout, params string[] extra) =>
        OpenAiServer.StartAsync(new ServeOptions(layout, [], [.. Settings, .. extra, "server.listen=\"http://127.0.0.1:0\""]));

    [Fact]
    public void A_node_refuses_bad_settings_naming_the_key_before_it_joins_anything()
    {
        var layout = Layout();
        (string[] Args, string Key, string Says)[] cases =
        [
            (["--layers", "3-9"], "flashlm.layers", "outside the model's 4 layers"),
            (["--layers", "2-1"], "flashlm.layers", "FROM < TO"),
            (["--seed", "not a seed"], "flashlm.cluster.seeds", "not a node address"),
            (["--set", "cluster.start-timeout=soon"], "flashlm.cluster.start-timeout", "not a duration"),
            (["--layers", "1-4", "--http", "http://127.0.0.1:0"], "flashlm.server.listen", "the node holding layer 0 serves HTTP"),
        ];
        foreach (var (args, key, says) in cases)
        {
            var r = CliRunner.Run(["node", "--model", layout, "--port", "0", .. args]);
            Assert.NotEqual(0, r.ExitCode);
            Assert.Contains($"'{key}'", r.Stderr);
            Assert.Contains(says, r.Stderr);
        }
    }

    [Fact]
    public async Task Layers_across_three_processes_give_one_nodes_output_and_a_killed_stage_fails_the_request_naming_it()
    {
        var layout = Layout();
        await using var one = await Reference(layout);
        await using var cluster = await LocalCluster.StartAsync(Flashlm, layout,
            [new NodeSpec("0-1", Http: true), new NodeSpec("1-3", Http: false), new NodeSpec("3-4", Http: false)], Settings, timeout: TimeSpan.FromSeconds(120));
        var head = cluster.Nodes[0].Http!;
        const string prompt = "Once upon a time";

        var before = await ClusterProbe.MetricsAsync(_http, head);
        var greedy = await ClusterProbe.CompleteAsync(_http, head, prompt, 24);
        var expected = await ClusterProbe.CompleteAsync(_http, one.Address, prompt, 24);
        Assert.Equal(24, expected.CompletionTokens);
        Assert.Equal(expected.Text, greedy.Text);
        Assert.Equal(expected.CompletionTokens, greedy.CompletionTokens);
        var after = await ClusterProbe.MetricsAsync(_http, head);
        // Each generated token: layer 0 here, layers 1-3 and 3-4 on the others, back here: three hops of at least a hidden state.
        double tokens = after["flashlm_pipeline_tokens_total"] - before["flashlm_pipeline_tokens_total"];
        Assert.Equal(24, tokens);
        Assert.Equal(3 * tokens, after["flashlm_pipeline_hops_total"] - before["flashlm_pipeline_hops_total"]);
        Assert.True(after["flashlm_pipeline_hop_payload_bytes_total"] - before["flashlm_pipeline_hop_payload_bytes_total"] > 2 * tokens * 128 * 4);

        for (ulong seed = 1; seed <= 2; seed++)
            Assert.Equal((await ClusterProbe.CompleteAsync(_http, one.Address, prompt, 24, temperature: 0.9, seed: seed)).Text,
                (await ClusterProbe.CompleteAsync(_http, head, prompt, 24, temperature: 0.9, seed: seed)).Text);

        // The middle stage dies mid-generation: the request ends with an error naming the node and its layers.
        var killed = await ClusterProbe.StreamAsync(_http, head, prompt, 200, onFirstChunk: () => cluster.Kill(1));
        Assert.NotNull(killed.Error);
        Assert.Contains(cluster.Nodes[1].Address, killed.Error);
        Assert.Contains("layers 1-3 of 4", killed.Error);
        Assert.True(killed.EndMs - killed.FirstChunkMs < 30_000, $"the failure took {killed.EndMs - killed.FirstChunkMs:0} ms to surface");
    }

    [Fact]
    public async Task Conversations_sharded_across_three_processes_are_served_anywhere_keep_their_cache_and_survive_a_killed_node()
    {
        var layout = Layout();
        await using var one = await Reference(layout);
        await using var cluster = await LocalCluster.StartAsync(Flashlm, layout,
            [new NodeSpec(null, Http: true), new NodeSpec(null, Http: true), new NodeSpec(null, Http: true)], [.. Settings, "max-sessions=2"],
            timeout: TimeSpan.FromSeconds(120));
        var holders = new Dictionary<string, string>();
        for (int c = 0; c < 6; c++)
        {
            string id = $"chat-{c}", prompt = $"Lily and Ben {c}";
            var first = await ClusterProbe.CompleteAsync(_http, cluster.Nodes[c % 3].Http!, prompt, 8, conversation: id);
            Assert.Equal((await ClusterProbe.CompleteAsync(_http, one.Address, prompt, 8)).Text, first.Text);
            Assert.NotNull(first.Node);
            Assert.Equal(0, first.Reused);
            holders[id] = first.Node!;
            // The next turn through another node: the same node holds it, and re-feeds only the new part of the transcript.
            string transcript = prompt + first.Text + " and then";
            var second = await ClusterProbe.CompleteAsync(_http, cluster.Nodes[(c + 1) % 3].Http!, transcript, 8, conversation: id);
            Assert.Equal(first.Node, second.Node);
            Assert.True(second.Reused > 0, $"turn 2 of {id} reused {second.Reused} positions");
            Assert.Equal((await ClusterProbe.CompleteAsync(_http, one.Address, transcript, 8)).Text, second.Text);
        }
        Assert.True(holders.Values.Distinct().Count() > 1, $"every conversation went to one node: {string.Join(", ", holders.Values)}");

        // A turn the server ends early (a stop sequence, with tokens still coming) keeps what it computed: the next turn reuses it.
        var full = await ClusterProbe.CompleteAsync(_http, one.Address, "Tom had a red", 200);
        string stop = full.Text.Substring(6, 2);
        var stopped = await ClusterProbe.CompleteAsync(_http, cluster.Nodes[0].Http!, "Tom had a red", 200, conversation: "stopped", stop: stop);
        Assert.Equal((await ClusterProbe.CompleteAsync(_http, one.Address, "Tom had a red", 200, stop: stop)).Text, stopped.Text);
        var after = await ClusterProbe.CompleteAsync(_http, cluster.Nodes[1].Http!, "Tom had a red" + stopped.Text, 8, conversation: "stopped");
        Assert.True(after.Reused > 0, $"the turn after a stopped one reused {after.Reused} positions");
        Assert.Equal((await ClusterProbe.CompleteAsync(_http, one.Address, "Tom had a red" + stopped.Text, 8)).Text, after.Text);

        // The node holding a conversation dies mid-turn (the request came in through node 0, which holds something else).
        var (victimId, victimAddress) = holders.First(kv => kv.Value != cluster.Nodes[0].Address);
        var victim = cluster.At(victimAddress);
        // Greedy, so the turn is known to run long (a sampled one could end by itself before the kill lands).
        Assert.True((await ClusterProbe.CompleteAsync(_http, one.Address, "Once upon a time", 220)).CompletionTokens > 40);
        var killed = await ClusterProbe.StreamAsync(_http, cluster.Nodes[0].Http!, "Once upon a time", 220, conversation: victimId,
            onFirstChunk: () => cluster.Kill(victim.Index));
        Assert.NotNull(killed.Error);
        Assert.Contains(victimAddress, killed.Error);
        Assert.Contains("restarts from its transcript", killed.Error);
        Assert.True(killed.EndMs - killed.FirstChunkMs < 30_000, $"the failure took {killed.EndMs - killed.FirstChunkMs:0} ms to surface");

        // Its next request restarts from the transcript on a node that remains; new conversations avoid the dead node.
        var restarted = await ClusterProbe.CompleteAsync(_http, cluster.Nodes[0].Http!, "Once upon a time", 8, conversation: victimId);
        Assert.NotEqual(victimAddress, restarted.Node);
        Assert.Equal(0, restarted.Reused);
        Assert.Equal((await ClusterProbe.CompleteAsync(_http, one.Address, "Once upon a time", 8)).Text, restarted.Text);
        for (int c = 0; c < 6; c++)
        {
            var fresh = await ClusterProbe.CompleteAsync(_http, cluster.Nodes[c % 3 == victim.Index ? 0 : c % 3].Http!, "Tom had", 4, conversation: $"new-{c}");
            Assert.NotEqual(victimAddress, fresh.Node);
        }
    }
}
