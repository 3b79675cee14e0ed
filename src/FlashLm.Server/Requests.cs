using System.Text.Json;

namespace FlashLm.Server;

/// <summary>A request the server refuses: the HTTP status and an OpenAI-style error body.</summary>
internal sealed class ApiException(int status, string message, string? param = null, string? code = null, string type = "invalid_request_error") : Exception(message)
{
    public int Status { get; } = status;
    public string? Param { get; } = param;
    public string? Code { get; } = code;
    public string Type { get; } = type;
}

/// <summary>What a completion or chat request asks for, validated.</summary>
internal sealed record GenerationRequest(string? Model, int? MaxTokens, float Temperature, float TopP, int TopK, ulong? Seed, string[] Stop, bool Stream,
    bool IncludeUsage, bool Echo)
{
    /// <summary>Parses the body (a JSON object) of either endpoint; <paramref name="chat"/> accepts max_completion_tokens too.</summary>
    public static (GenerationRequest Request, JsonElement Root) Parse(JsonDocument doc, bool chat)
    {
        var r = doc.RootElement;
        if (r.ValueKind != JsonValueKind.Object) throw new ApiException(400, "the request body must be a JSON object");
        string? model = OptString(r, "model");
        int? maxTokens = OptInt(r, chat && r.TryGetProperty("max_completion_tokens", out _) ? "max_completion_tokens" : "max_tokens", 1, 1 << 24);
        float temperature = OptFloat(r, "temperature", 0, 2) ?? 1f;
        float topP = OptFloat(r, "top_p", 0, 1) ?? 1f;
        if (r.TryGetProperty("top_p", out _) && topP == 0) throw new ApiException(400, "top_p must be greater than 0", "top_p");
        int topK = OptInt(r, "top_k", 0, 1 << 24) ?? 0;
        ulong? seed = null;
        if (r.TryGetProperty("seed", out var s) && s.ValueKind != JsonValueKind.Null)
        {
            if (s.ValueKind != JsonValueKind.Number || !s.TryGetInt64(out long v)) throw new ApiException(400, "seed must be an integer", "seed");
            seed = unchecked((ulong)v);
        }
        string[] stop = [];
        if (r.TryGetProperty("stop", out var st) && st.ValueKind != JsonValueKind.Null)
        {
            stop = st.ValueKind switch
            {
                JsonValueKind.String => [st.GetString()!],
                JsonValueKind.Array when st.GetArrayLength() <= 4 && st.EnumerateArray().All(x => x.ValueKind == JsonValueKind.String) =>
                    st.EnumerateArray().Select(x => x.GetString()!).ToArray(),
                _ => throw new ApiException(400, "stop must be a string or an array of up to 4 strings", "stop"),
            };
            if (stop.Any(x => x.Length == 0 || x.Length > 256)) throw new ApiException(400, "each stop sequence must be 1 to 256 characters", "stop");
        }
        bool stream = OptBool(r, "stream") ?? false;
        bool includeUsage = false;
        if (r.TryGetProperty("stream_options", out var so) && so.ValueKind == JsonValueKind.Object)
            includeUsage = OptBool(so, "include_usage") ?? false;
        if (OptInt(r, "n", 1, 128) is > 1) throw new ApiException(400, "only n = 1 is supported", "n");
        bool echo = !chat && (OptBool(r, "echo") ?? false);
        if (r.TryGetProperty("logprobs", out var lp) && lp.ValueKind is not (JsonValueKind.Null or JsonValueKind.False))
            throw new ApiException(400, "logprobs are not supported", "logprobs");
        return (new GenerationRequest(model, maxTokens, temperature, topP, topK, seed, stop, stream, includeUsage, echo), r);
    }

    /// <summary>/v1/completions: the prompt, a string or an array of one string.</summary>
    public static string Prompt(JsonElement r)
    {
        if (!r.TryGetProperty("prompt", out var p)) throw new ApiException(400, "prompt is required", "prompt");
        return p.ValueKind switch
        {
            JsonValueKind.String => p.GetString()!,
            JsonValueKind.Array when p.GetArrayLength() == 1 && p[0].ValueKind == JsonValueKind.String => p[0].GetString()!,
            JsonValueKind.Array => throw new ApiException(400, "prompt must be a string or an array of exactly one string (batches are not supported)", "prompt"),
            _ => throw new ApiException(400, "prompt must be a string", "prompt"),
        };
    }

    private static readonly HashSet<string> Roles = ["system", "developer", "user", "assistant", "tool"];

    /// <summary>/v1/chat/completions: the messages, each a role and text content (a string or text parts).</summary>
    public static List<ChatMessage> Messages(JsonElement r)
    {
        if (!r.TryGetProperty("messages", out var list) || list.ValueKind != JsonValueKind.Array || list.GetArrayLength() == 0)
            throw new ApiException(400, "messages must be a non-empty array", "messages");
        var messages = new List<ChatMessage>();
        int i = 0;
        foreach (var m in list.EnumerateArray())
        {
            string at = $"messages[{i++}]";
            if (m.ValueKind != JsonValueKind.Object) throw new ApiException(400, $"{at} must be an object", at);
            string role = OptString(m, "role", at + ".role") ?? throw new ApiException(400, $"{at}.role is required", at + ".role");
            if (!Roles.Contains(role)) throw new ApiException(400, $"{at}.role '{Clip(role)}' is not one of system, developer, user, assistant, tool", at + ".role");
            string content = "";
            if (m.TryGetProperty("content", out var c))
            {
                content = c.ValueKind switch
                {
                    JsonValueKind.String => c.GetString()!,
                    JsonValueKind.Null => "",
                    JsonValueKind.Array => string.Concat(c.EnumerateArray().Select(part =>
                        part.ValueKind == JsonValueKind.Object && OptString(part, "type", at + ".content") == "text" && part.TryGetProperty("text", out var t) && t.ValueKind == JsonValueKind.String
                            ? t.GetString()
                            : throw new ApiException(400, $"{at}.content: only text parts are supported", at + ".content"))),
                    _ => throw new ApiException(400, $"{at}.content must be a string or an array of text parts", at + ".content"),
                };
            }
            messages.Add(new ChatMessage(role == "developer" ? "system" : role, content));
        }
        return messages;
    }

    private static string Clip(string s) => s.Length > 40 ? s[..40] + "..." : s;

    private static string? OptString(JsonElement r, string key, string? param = null)
    {
        if (!r.TryGetProperty(key, out var v) || v.ValueKind == JsonValueKind.Null) return null;
        return v.ValueKind == JsonValueKind.String ? v.GetString() : throw new ApiException(400, $"{param ?? key} must be a string", param ?? key);
    }

    private static bool? OptBool(JsonElement r, string key)
    {
        if (!r.TryGetProperty(key, out var v) || v.ValueKind == JsonValueKind.Null) return null;
        return v.ValueKind switch
        {
            JsonValueKind.True => true,
            JsonValueKind.False => false,
            _ => throw new ApiException(400, $"{key} must be true or false", key),
        };
    }

    private static int? OptInt(JsonElement r, string key, int min, int max)
    {
        if (!r.TryGetProperty(key, out var v) || v.ValueKind == JsonValueKind.Null) return null;
        if (v.ValueKind != JsonValueKind.Number || !v.TryGetInt64(out long x)) throw new ApiException(400, $"{key} must be an integer", key);
        if (x < min || x > max) throw new ApiException(400, $"{key} {x} is outside {min}..{max}", key);
        return (int)x;
    }

    private static float? OptFloat(JsonElement r, string key, float min, float max)
    {
        if (!r.TryGetProperty(key, out var v) || v.ValueKind == JsonValueKind.Null) return null;
        if (v.ValueKind != JsonValueKind.Number || !v.TryGetDouble(out double x) || !double.IsFinite(x)) throw new ApiException(400, $"{key} must be a number", key);
        if (x < min || x > max) throw new ApiException(400, $"{key} {x} is outside {min}..{max}", key);
        return (float)x;
    }
}
