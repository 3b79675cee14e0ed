using System.Globalization;
using System.Text;
using FlashLm.Runtime;

namespace FlashLm.Server;

/// <summary>The server's counters, rendered in the Prometheus text format for GET /metrics.</summary>
internal sealed class ServerMetrics
{
    private readonly object _gate = new();
    private readonly Dictionary<(string Endpoint, int Status), long> _requests = new();
    private long _promptTokens, _completionTokens, _ttftCount, _hits, _active;
    private double _ttftSum, _decodeSeconds, _queueSum;
    private long _queueCount;
    private double _lastTokensPerSecond;

    public void Request(string endpoint, int status)
    {
        lock (_gate) _requests[(endpoint, status)] = _requests.GetValueOrDefault((endpoint, status)) + 1;
    }

    public void QueueWait(TimeSpan t)
    {
        lock (_gate)
        {
            _queueSum += t.TotalSeconds;
            _queueCount++;
        }
    }

    public void Completed(string endpoint, int prompt, int completion, TimeSpan? firstToken, TimeSpan decode, long hits, long active)
    {
        lock (_gate)
        {
            _promptTokens += prompt;
            _completionTokens += completion;
            if (firstToken is { } f)
            {
                _ttftSum += f.TotalSeconds;
                _ttftCount++;
            }
            _decodeSeconds += decode.TotalSeconds;
            if (completion > 1 && decode > TimeSpan.Zero) _lastTokensPerSecond = (completion - 1) / decode.TotalSeconds;
            _hits += hits;
            _active += active;
        }
    }

    public string Render(Admission admission, RuntimeStats? stats)
    {
        var b = new StringBuilder();
        void Metric(string name, string type, string help, params (string Labels, double Value)[] values)
        {
            b.Append("# HELP ").Append(name).Append(' ').Append(help).Append('\n');
            b.Append("# TYPE ").Append(name).Append(' ').Append(type).Append('\n');
            foreach (var (labels, v) in values)
                b.Append(name).Append(labels.Length > 0 ? "{" + labels + "}" : "").Append(' ').Append(v.ToString("R", CultureInfo.InvariantCulture)).Append('\n');
        }
        void Summary(string name, string help, double sum, long count)
        {
            b.Append("# HELP ").Append(name).Append(' ').Append(help).Append('\n');
            b.Append("# TYPE ").Append(name).Append(" summary\n");
            b.Append(name).Append("_sum ").Append(sum.ToString("R", CultureInfo.InvariantCulture)).Append('\n');
            b.Append(name).Append("_count ").Append(count).Append('\n');
        }
        lock (_gate)
        {
            Metric("flashlm_requests_total", "counter", "HTTP generation requests by endpoint and status (499: the client went away).",
                [.. _requests.OrderBy(kv => kv.Key).Select(kv => ($"endpoint=\"{kv.Key.Endpoint}\",status=\"{kv.Key.Status}\"", (double)kv.Value))]);
            Metric("flashlm_prompt_tokens_total", "counter", "Prompt tokens of completed requests.", ("", _promptTokens));
            Metric("flashlm_completion_tokens_total", "counter", "Tokens generated for completed requests.", ("", _completionTokens));
            Summary("flashlm_time_to_first_token_seconds", "From the session's start to the first generated token.", _ttftSum, _ttftCount);
            Metric("flashlm_decode_seconds_total", "counter", "Time spent generating after the first token.", ("", _decodeSeconds));
            Metric("flashlm_decode_tokens_per_second", "gauge", "Decode speed of the last completed request.", ("", _lastTokensPerSecond));
            Summary("flashlm_queue_wait_seconds", "Time requests waited for a session.", _queueSum, _queueCount);
            Metric("flashlm_cache_hit_ratio", "gauge", "Share of the active FFN neurons of generated tokens found in DRAM (window or pinned).",
                ("", _active > 0 ? (double)_hits / _active : 0));
        }
        Metric("flashlm_sessions_running", "gauge", "Requests holding a session.", ("", admission.Running));
        Metric("flashlm_sessions_max", "gauge", "Sessions the DRAM budget holds (flashlm.max-sessions).", ("", admission.Slots));
        Metric("flashlm_queue_length", "gauge", "Requests waiting for a session.", ("", admission.Queued));
        if (stats is not null)
        {
            Metric("flashlm_flash_bytes_read_total", "counter", "Bytes read from flash by the runtime.", ("", stats.BytesRead));
            Metric("flashlm_tokens_total", "counter", "Positions the runtime computed (prompt and generated).", ("", stats.Positions));
            Metric("flashlm_dram_budget_bytes", "gauge", "The DRAM budget.", ("", stats.DramBudget));
        }
        return b.ToString();
    }
}
