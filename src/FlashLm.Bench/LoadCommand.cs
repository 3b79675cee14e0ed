using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using FlashLm.Cli.Commands;
using FlashLm.Server;

namespace FlashLm.Bench;

/// <summary>
/// `flashlm-bench load`: a bounded load against an OpenAI-compatible server on loopback (its own flashlm serve, in
/// process, unless --url names one): for each client count, a fixed number of streamed completions shared by that many
/// concurrent clients; prints p50/p99 time to first token and per-token latency, tokens/s, errors, and checks that every
/// request was answered exactly once (one [DONE], one finish reason, a distinct id).
/// </summary>
internal static class LoadCommand
{
    private sealed record Outcome(int Status, double? TtftMs, double? PerTokenMs, int Tokens, string? Id, bool Whole);

    public static Command Build()
    {
        var url = new Option<string?>("--url") { Description = "server to load (default: start flashlm serve in this process on 127.0.0.1, a free port)" };
        var model = new Option<string?>("--model", "-m") { Description = "model for the server started here (default: the built-in synthetic model)" };
        var clients = new Option<string>("--clients") { Description = "concurrent client counts, comma-separated", DefaultValueFactory = _ => "1,4,16" };
        var requests = new Option<int>("--requests") { Description = "requests per client count", DefaultValueFactory = _ => 32 };
        var maxTokens = new Option<int>("--max-tokens") { Description = "max_tokens of each request", DefaultValueFactory = _ => 24 };
        var set = new Option<string[]>("--set") { Description = "settings of the server started here (e.g. max-sessions=4)" };
        var cmd = new Command("load", "Bounded HTTP load against flashlm serve: p50/p99 time to first token and per-token latency, tokens/s, errors, each request answered once.")
            { url, model, clients, requests, maxTokens, set };
        cmd.SetAction(r => CliErrors.Guard(() =>
        {
            var counts = r.GetValue(clients)!.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
                .Select(c => int.TryParse(c, out int n) && n is >= 1 and <= 256 ? n : throw new ArgumentException($"--clients: '{c}' is not a count in 1..256")).ToArray();
            int n = r.GetValue(requests), m = r.GetValue(maxTokens);
            if (n < 1 || n > 100_000) throw new ArgumentException($"--requests {n}: must be in 1..100000");
            if (m < 1) throw new ArgumentException($"--max-tokens {m}: must be at least 1");
            return Task.Run(async () =>
            {
                OpenAiServer? own = null;
                try
                {
                    Uri address;
                    if (r.GetValue(url) is { } u) address = new Uri(u.EndsWith('/') ? u : u + "/");
                    else
                    {
                        var layout = DefaultModel.LayoutFolder(r.GetValue(model), null);
                        own = await OpenAiServer.StartAsync(new ServeOptions(layout, [], ["server.listen=\"http://127.0.0.1:0\"", .. r.GetValue(set) ?? []]));
                        address = own.Address;
                    }
                    Console.WriteLine($"load: {address} ({(own is null ? "external server" : $"flashlm serve in process, queue-limit {own.Settings.QueueLimit}; settings {string.Join(' ', r.GetValue(set) ?? [])}")}), " +
                                      $"{n} streamed completions of max_tokens {m} per client count; CPU: {Environment.ProcessorCount} cores, {Kernels.CpuInfo.Describe()}");
                    Console.WriteLine("| clients | requests | ok | errors | lost | duplicated | TTFT p50 ms | TTFT p99 ms | per-token p50 ms | per-token p99 ms | tokens/s (all clients) | wall s |");
                    Console.WriteLine("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
                    using var http = new HttpClient { BaseAddress = address, Timeout = TimeSpan.FromMinutes(10) };
                    foreach (int c in counts) await Level(http, c, n, m);
                    return 0;
                }
                finally
                {
                    if (own is not null) await own.DisposeAsync();
                }
            }).GetAwaiter().GetResult();
        }));
        return cmd;
    }

    private static async Task Level(HttpClient http, int clients, int requests, int maxTokens)
    {
        var outcomes = new Outcome[requests];
        int next = -1;
        var wall = Stopwatch.StartNew();
        var workers = Enumerable.Range(0, clients).Select(async client =>
        {
            int i;
            while ((i = Interlocked.Increment(ref next)) < requests) outcomes[i] = await One(http, i, maxTokens);
        }).ToArray();
        await Task.WhenAll(workers);
        wall.Stop();
        var ok = outcomes.Where(o => o.Status == 200 && o.Whole).ToList();
        int lost = outcomes.Count(o => o.Status == 200 && !o.Whole);
        int duplicated = ok.GroupBy(o => o.Id).Sum(g => g.Count() - 1);
        static double P(IEnumerable<double> values, double q)
        {
            var s = values.Order().ToArray();
            return s.Length == 0 ? double.NaN : s[Math.Min(s.Length - 1, (int)Math.Ceiling(q * s.Length) - 1)];
        }
        var ttft = ok.Where(o => o.TtftMs is not null).Select(o => o.TtftMs!.Value).ToList();
        var per = ok.Where(o => o.PerTokenMs is not null).Select(o => o.PerTokenMs!.Value).ToList();
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"| {clients} | {requests} | {ok.Count} | {outcomes.Count(o => o.Status != 200)} | {lost} | {duplicated} | {P(ttft, 0.5):F1} | {P(ttft, 0.99):F1} | {P(per, 0.5):F1} | {P(per, 0.99):F1} | {ok.Sum(o => o.Tokens) / wall.Elapsed.TotalSeconds:F1} | {wall.Elapsed.TotalSeconds:F1} |"));
        foreach (var g in outcomes.Where(o => o.Status != 200).GroupBy(o => o.Status))
            Console.WriteLine($"  status {g.Key}: {g.Count()} requests");
    }

    private static async Task<Outcome> One(HttpClient http, int index, int maxTokens)
    {
        var body = JsonSerializer.Serialize(new { prompt = $"Once upon a time {index}", max_tokens = maxTokens, temperature = 0, stream = true, stream_options = new { include_usage = true } });
        var watch = Stopwatch.StartNew();
        using var request = new HttpRequestMessage(HttpMethod.Post, "v1/completions") { Content = new StringContent(body, Encoding.UTF8, "application/json") };
        using var response = await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
        if ((int)response.StatusCode != 200) return new Outcome((int)response.StatusCode, null, null, 0, null, false);
        using var reader = new StreamReader(await response.Content.ReadAsStreamAsync());
        double? first = null, last = null;
        string? id = null;
        int finishes = 0, done = 0, tokens = 0;
        string? line;
        while ((line = await reader.ReadLineAsync()) is not null)
        {
            if (!line.StartsWith("data: ", StringComparison.Ordinal)) continue;
            var data = line["data: ".Length..];
            if (data == "[DONE]")
            {
                done++;
                continue;
            }
            using var doc = JsonDocument.Parse(data);
            var root = doc.RootElement;
            id ??= root.GetProperty("id").GetString();
            if (root.TryGetProperty("usage", out var usage) && usage.ValueKind == JsonValueKind.Object) tokens = usage.GetProperty("completion_tokens").GetInt32();
            if (root.GetProperty("choices").GetArrayLength() == 0) continue;
            var choice = root.GetProperty("choices")[0];
            if (choice.TryGetProperty("text", out var t) && t.GetString() is { Length: > 0 })
            {
                first ??= watch.Elapsed.TotalMilliseconds;
                last = watch.Elapsed.TotalMilliseconds;
            }
            if (choice.GetProperty("finish_reason").ValueKind == JsonValueKind.String) finishes++;
        }
        double? perToken = first is not null && last is not null && tokens > 1 ? (watch.Elapsed.TotalMilliseconds - first.Value) / (tokens - 1) : null;
        return new Outcome(200, first, perToken, tokens, id, done == 1 && finishes == 1);
    }
}
