using System.Diagnostics;
using System.Globalization;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;
using FlashLm.Server;

namespace FlashLm.Cluster;

/// <summary>HTTP calls against a node's OpenAI endpoint, for `flashlm cluster` and the tests: completions whole and streamed,
/// the node and reuse headers, /metrics as numbers, and the loopback interface's byte count.</summary>
public static class ClusterProbe
{
    /// <summary>A whole completion: its text, the node that served it and the KV positions it reused (cluster headers), its
    /// completion tokens and wall time.</summary>
    public sealed record Completion(string Text, string? Node, int? Reused, int CompletionTokens, double Ms);

    /// <summary>A streamed completion: the text that arrived, the error event that ended it (null: it completed), when the first
    /// chunk and the end arrived (ms from the request).</summary>
    public sealed record Streamed(string Text, string? Error, double FirstChunkMs, double EndMs, string? Node);

    private static HttpRequestMessage Request(Uri server, string prompt, int maxTokens, double temperature, ulong? seed, string? conversation, bool stream,
        string? stop = null)
    {
        var body = new Dictionary<string, object> { ["prompt"] = prompt, ["max_tokens"] = maxTokens, ["temperature"] = temperature, ["stream"] = stream };
        if (seed is { } s) body["seed"] = s;
        if (stop is not null) body["stop"] = stop;
        var request = new HttpRequestMessage(HttpMethod.Post, new Uri(server, "/v1/completions")) { Content = JsonContent.Create(body) };
        if (conversation is not null) request.Headers.Add(OpenAiServer.ConversationHeader, conversation);
        return request;
    }

    /// <summary>POST /v1/completions (not streamed); throws with the error body on a non-200 status.</summary>
    public static async Task<Completion> CompleteAsync(HttpClient http, Uri server, string prompt, int maxTokens, double temperature = 0, ulong? seed = null,
        string? conversation = null, string? stop = null, CancellationToken cancellation = default)
    {
        var watch = Stopwatch.StartNew();
        using var response = await http.SendAsync(Request(server, prompt, maxTokens, temperature, seed, conversation, stream: false, stop), cancellation).ConfigureAwait(false);
        string text = await response.Content.ReadAsStringAsync(cancellation).ConfigureAwait(false);
        if (!response.IsSuccessStatusCode) throw new HttpRequestException($"{server} answered {(int)response.StatusCode}: {text}", null, response.StatusCode);
        using var doc = JsonDocument.Parse(text);
        var root = doc.RootElement;
        string? node = response.Headers.TryGetValues(OpenAiServer.NodeHeader, out var n) ? n.First() : null;
        int? reused = response.Headers.TryGetValues(OpenAiServer.ReusedHeader, out var r) ? int.Parse(r.First(), CultureInfo.InvariantCulture) : null;
        return new Completion(root.GetProperty("choices")[0].GetProperty("text").GetString()!, node, reused,
            root.GetProperty("usage").GetProperty("completion_tokens").GetInt32(), watch.Elapsed.TotalMilliseconds);
    }

    /// <summary>POST /v1/completions streamed; <paramref name="onFirstChunk"/> runs when the first text chunk arrives (say, to kill
    /// a node mid-generation); returns what came, and the error event that ended it, if one did.</summary>
    public static async Task<Streamed> StreamAsync(HttpClient http, Uri server, string prompt, int maxTokens, double temperature = 0, string? conversation = null,
        Action? onFirstChunk = null, CancellationToken cancellation = default)
    {
        var watch = Stopwatch.StartNew();
        using var response = await http.SendAsync(Request(server, prompt, maxTokens, temperature, null, conversation, stream: true), HttpCompletionOption.ResponseHeadersRead,
            cancellation).ConfigureAwait(false);
        if (!response.IsSuccessStatusCode)
            throw new HttpRequestException($"{server} answered {(int)response.StatusCode}: {await response.Content.ReadAsStringAsync(cancellation).ConfigureAwait(false)}");
        string? node = response.Headers.TryGetValues(OpenAiServer.NodeHeader, out var n) ? n.First() : null;
        using var reader = new StreamReader(await response.Content.ReadAsStreamAsync(cancellation).ConfigureAwait(false), Encoding.UTF8);
        var text = new StringBuilder();
        double first = -1;
        string? error = null;
        while (await reader.ReadLineAsync(cancellation).ConfigureAwait(false) is { } line)
        {
            if (!line.StartsWith("data: ", StringComparison.Ordinal)) continue;
            var data = line[6..];
            if (data == "[DONE]") break;
            using var doc = JsonDocument.Parse(data);
            if (doc.RootElement.TryGetProperty("error", out var e))
            {
                error = e.GetProperty("message").GetString();
                break;
            }
            var choices = doc.RootElement.GetProperty("choices");
            if (choices.GetArrayLength() == 0) continue;
            text.Append(choices[0].GetProperty("text").GetString());
            if (first < 0)
            {
                first = watch.Elapsed.TotalMilliseconds;
                onFirstChunk?.Invoke();
            }
        }
        return new Streamed(text.ToString(), error, first, watch.Elapsed.TotalMilliseconds, node);
    }

    /// <summary>GET /metrics as name (with labels) to value.</summary>
    public static async Task<Dictionary<string, double>> MetricsAsync(HttpClient http, Uri server, CancellationToken cancellation = default)
    {
        var result = new Dictionary<string, double>(StringComparer.Ordinal);
        foreach (var line in (await http.GetStringAsync(new Uri(server, "/metrics"), cancellation).ConfigureAwait(false)).Split('\n'))
        {
            if (line.Length == 0 || line[0] == '#') continue;
            int space = line.LastIndexOf(' ');
            if (space > 0 && double.TryParse(line[(space + 1)..], NumberStyles.Float, CultureInfo.InvariantCulture, out var v)) result[line[..space]] = v;
        }
        return result;
    }

    /// <summary>Bytes received on the loopback interface so far (Linux /proc/net/dev; null elsewhere): every process's
    /// loopback traffic, heartbeats and HTTP included.</summary>
    public static long? LoopbackBytes()
    {
        try
        {
            foreach (var line in File.ReadLines("/proc/net/dev"))
            {
                var parts = line.Split(':', 2);
                if (parts.Length == 2 && parts[0].Trim() == "lo")
                    return long.Parse(parts[1].Split(' ', StringSplitOptions.RemoveEmptyEntries)[0], CultureInfo.InvariantCulture);
            }
        }
        catch (IOException)
        {
        }
        return null;
    }
}
