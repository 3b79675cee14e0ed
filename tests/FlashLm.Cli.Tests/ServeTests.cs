using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using FlashLm.Formats;
using FlashLm.Formats.FlashLayout;
using FlashLm.Formats.Synth;
using FlashLm.Server;
using Xunit;

namespace FlashLm.Tests.Cli;

/// <summary>
/// flashlm serve's HTTP contract, over real HTTP on loopback: completions and chat completions, whole and streamed as
/// server-sent events; greedy output equal to flashlm generate's; stop sequences; OpenAI-style errors; the queue's 429;
/// a client that goes away frees its session; models, health and metrics.
/// </summary>
public sealed class ServeTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    private string Layout(string? chatTemplate = null)
    {
        var gguf = _dir.File("tiny.gguf");
        SyntheticModel.WriteGguf(gguf, SyntheticShapes.Get("tiny"), DType.F32, 42, chatTemplate: chatTemplate);
        var folder = _dir.File("tiny.flash");
        using (var source = ModelLoader.Open(gguf)) FlashLayoutWriter.Convert(source, folder);
        return folder;
    }

    private static Task<OpenAiServer> Start(string layout, params string[] overrides) =>
        OpenAiServer.StartAsync(new ServeOptions(layout, [], ["server.listen=\"http://127.0.0.1:0\"", .. overrides]));

    private static HttpClient Client(OpenAiServer s) => new() { BaseAddress = s.Address, Timeout = TimeSpan.FromSeconds(120) };

    private static StringContent Body(object o) => new(JsonSerializer.Serialize(o), Encoding.UTF8, "application/json");

    private static async Task<JsonElement> Json(HttpResponseMessage r) => JsonDocument.Parse(await r.Content.ReadAsStringAsync()).RootElement;

    /// <summary>The data lines of an SSE body, up to [DONE] (which must come last).</summary>
    private static List<JsonElement> Events(string body)
    {
        var lines = body.Split("\n\n", StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal("data: [DONE]", lines[^1]);
        return lines[..^1].Select(l =>
        {
            Assert.StartsWith("data: ", l);
            return JsonDocument.Parse(l["data: ".Length..]).RootElement;
        }).ToList();
    }

    [Fact]
    public async Task Greedy_completions_equal_flashlm_generate_and_streaming_gives_the_same_text()
    {
        var layout = Layout();
        const string prompt = "Once upon a time";
        int promptTokens;
        using (var m = new FlashLayoutModel(layout)) promptTokens = m.Tokenizer.Encode(prompt, addBos: true).Length;
        const int maxTokens = 20;
        // flashlm generate -n runs prompt + max_tokens - 1 positions, printing the prompt's pieces and the generated ones.
        // hits-first = off on both: the FFN sums its neurons in one order whatever the readers' timing (reproducible output).
        var generate = CliRunner.Run("generate", "--model", layout, "--mode", "flash", "--prompt", prompt, "-n", (promptTokens + maxTokens - 1).ToString(), "--temperature", "0",
            "--set", "hits-first=off");
        Assert.True(generate.ExitCode == 0, generate.Stderr);
        string expected = Encoding.UTF8.GetString(generate.Stdout).TrimEnd('\n');

        await using var server = await Start(layout, "hits-first=off");
        using var http = Client(server);
        var r = await http.PostAsync("/v1/completions", Body(new { model = server.ModelId, prompt, max_tokens = maxTokens, temperature = 0, echo = true }));
        Assert.Equal(HttpStatusCode.OK, r.StatusCode);
        var j = await Json(r);
        Assert.Equal("text_completion", j.GetProperty("object").GetString());
        var choice = j.GetProperty("choices")[0];
        Assert.Equal(expected, choice.GetProperty("text").GetString());
        Assert.Equal("length", choice.GetProperty("finish_reason").GetString());
        Assert.Equal(promptTokens, j.GetProperty("usage").GetProperty("prompt_tokens").GetInt32());
        Assert.Equal(maxTokens, j.GetProperty("usage").GetProperty("completion_tokens").GetInt32());
        Assert.Equal(promptTokens + maxTokens, j.GetProperty("usage").GetProperty("total_tokens").GetInt32());

        // Streamed: chunks whose texts join to the same completion, a finish reason, usage when asked, then [DONE].
        string completion = expected[prompt.Length..];
        var s = await http.PostAsync("/v1/completions", Body(new { prompt, max_tokens = maxTokens, temperature = 0, stream = true, stream_options = new { include_usage = true } }));
        Assert.Equal("text/event-stream", s.Content.Headers.ContentType?.MediaType);
        var events = Events(await s.Content.ReadAsStringAsync());
        Assert.True(events.Count > 3, $"{events.Count} events");
        Assert.Equal(completion, string.Concat(events.Where(e => e.GetProperty("choices").GetArrayLength() > 0).Select(e => e.GetProperty("choices")[0].GetProperty("text").GetString())));
        Assert.Equal("length", events[^2].GetProperty("choices")[0].GetProperty("finish_reason").GetString());
        Assert.Equal(maxTokens, events[^1].GetProperty("usage").GetProperty("completion_tokens").GetInt32());

        // A stop sequence taken from the greedy text cuts it there; the finish reason is "stop".
        string stop = completion.Substring(completion.Length / 2, 2);
        int cut = completion.IndexOf(stop, StringComparison.Ordinal);
        var st = await Json(await http.PostAsync("/v1/completions", Body(new { prompt, max_tokens = maxTokens, temperature = 0, stop = new[] { stop } })));
        Assert.Equal(completion[..cut], st.GetProperty("choices")[0].GetProperty("text").GetString());
        Assert.Equal("stop", st.GetProperty("choices")[0].GetProperty("finish_reason").GetString());
    }

    [Fact]
    public async Task Chat_completions_render_the_models_template_and_stream_deltas()
    {
        var layout = Layout(chatTemplate: "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}<|im_start|>assistant\n");
        await using var server = await Start(layout);
        using var http = Client(server);
        var messages = new object[] { new { role = "system", content = "Be brief." }, new { role = "user", content = new object[] { new { type = "text", text = "Hello" } } } };
        var whole = await Json(await http.PostAsync("/v1/chat/completions", Body(new { model = server.ModelId, messages, max_tokens = 8, temperature = 0 })));
        Assert.Equal("chat.completion", whole.GetProperty("object").GetString());
        var message = whole.GetProperty("choices")[0].GetProperty("message");
        Assert.Equal("assistant", message.GetProperty("role").GetString());
        // The prompt is the ChatML rendering (its tokens counted), the answer up to 8 tokens.
        int expectedPrompt;
        using (var m = new FlashLayoutModel(layout))
            expectedPrompt = m.Tokenizer.Encode("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n", addBos: true).Length;
        Assert.Equal(expectedPrompt, whole.GetProperty("usage").GetProperty("prompt_tokens").GetInt32());
        Assert.InRange(whole.GetProperty("usage").GetProperty("completion_tokens").GetInt32(), 1, 8);
        var s = await http.PostAsync("/v1/chat/completions", Body(new { messages, max_tokens = 8, temperature = 0, stream = true }));
        var events = Events(await s.Content.ReadAsStringAsync());
        Assert.Equal("chat.completion.chunk", events[0].GetProperty("object").GetString());
        Assert.Equal("assistant", events[0].GetProperty("choices")[0].GetProperty("delta").GetProperty("role").GetString());
        string streamed = string.Concat(events.Select(e => e.GetProperty("choices")[0].GetProperty("delta")).Where(d => d.TryGetProperty("content", out _)).Select(d => d.GetProperty("content").GetString()));
        Assert.Equal(message.GetProperty("content").GetString(), streamed);
        Assert.NotEqual(JsonValueKind.Null, events[^1].GetProperty("choices")[0].GetProperty("finish_reason").ValueKind);
    }

    [Fact]
    public async Task Bad_requests_get_openai_style_errors_and_the_server_keeps_serving()
    {
        var layout = Layout();
        await using var server = await Start(layout, "server.max-request-bytes=4KiB");
        using var http = Client(server);
        async Task Error(HttpResponseMessage r, HttpStatusCode status, string? param, string? code = null)
        {
            Assert.Equal(status, r.StatusCode);
            var e = (await Json(r)).GetProperty("error");
            Assert.False(string.IsNullOrEmpty(e.GetProperty("message").GetString()));
            Assert.False(string.IsNullOrEmpty(e.GetProperty("type").GetString()));
            if (param is not null) Assert.Equal(param, e.GetProperty("param").GetString());
            if (code is not null) Assert.Equal(code, e.GetProperty("code").GetString());
        }
        await Error(await http.PostAsync("/v1/completions", new StringContent("{not json", Encoding.UTF8, "application/json")), HttpStatusCode.BadRequest, null);
        await Error(await http.PostAsync("/v1/completions", new StringContent("[1,2]", Encoding.UTF8, "application/json")), HttpStatusCode.BadRequest, null);
        await Error(await http.PostAsync("/v1/completions", new StringContent("{}", Encoding.UTF8, "text/plain")), HttpStatusCode.UnsupportedMediaType, null);
        await Error(await http.PostAsync("/v1/completions", Body(new { max_tokens = 4 })), HttpStatusCode.BadRequest, "prompt");
        await Error(await http.PostAsync("/v1/completions", Body(new { prompt = "hi", max_tokens = -1 })), HttpStatusCode.BadRequest, "max_tokens");
        await Error(await http.PostAsync("/v1/completions", Body(new { prompt = "hi", temperature = "hot" })), HttpStatusCode.BadRequest, "temperature");
        await Error(await http.PostAsync("/v1/completions", Body(new { prompt = "hi", n = 3 })), HttpStatusCode.BadRequest, "n");
        await Error(await http.PostAsync("/v1/completions", Body(new { prompt = "hi", stop = new[] { "a", "b", "c", "d", "e" } })), HttpStatusCode.BadRequest, "stop");
        await Error(await http.PostAsync("/v1/completions", Body(new { prompt = "hi", model = "../../etc/passwd" })), HttpStatusCode.NotFound, "model", "model_not_found");
        await Error(await http.PostAsync("/v1/chat/completions", Body(new { messages = Array.Empty<object>() })), HttpStatusCode.BadRequest, "messages");
        await Error(await http.PostAsync("/v1/chat/completions", Body(new { messages = new[] { new { role = "wizard", content = "x" } } })), HttpStatusCode.BadRequest, "messages[0].role");
        // Longer than the context (256 positions for this model): refused before anything runs.
        await Error(await http.PostAsync("/v1/completions", Body(new { prompt = string.Concat(Enumerable.Repeat("once upon a time ", 200))[..3000] })), HttpStatusCode.BadRequest, "prompt", "context_length_exceeded");
        Assert.Equal(HttpStatusCode.RequestEntityTooLarge, (await http.PostAsync("/v1/completions", Body(new { prompt = new string('x', 8000) }))).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await http.GetAsync("/v1/nothing")).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await http.GetAsync("/v1/models/other")).StatusCode);
        // Still serving.
        var ok = await http.PostAsync("/v1/completions", Body(new { prompt = "hi", max_tokens = 3 }));
        Assert.Equal(HttpStatusCode.OK, ok.StatusCode);
        var models = await Json(await http.GetAsync("/v1/models"));
        Assert.Equal(server.ModelId, models.GetProperty("data")[0].GetProperty("id").GetString());
        var metrics = await (await http.GetAsync("/metrics")).Content.ReadAsStringAsync();
        Assert.Contains("flashlm_requests_total{endpoint=\"completions\",status=\"200\"} 1", metrics);
        Assert.Contains("flashlm_requests_total{endpoint=\"completions\",status=\"400\"}", metrics);
        Assert.Contains("flashlm_flash_bytes_read_total ", metrics);
        Assert.Contains("flashlm_time_to_first_token_seconds_count 1", metrics);
    }

    [Fact]
    public async Task Beyond_the_queue_requests_get_429_and_a_client_that_goes_away_frees_its_session()
    {
        // A model slow enough (about 100 MB, 1024 positions) that a long answer cannot finish while the test looks at it.
        var config = SyntheticShapes.Get("tiny") with { Dim = 512, HiddenDim = 1536, Layers = 8, Heads = 8, KvHeads = 4, ContextLength = 1024 };
        var gguf = _dir.File("slow.gguf");
        SyntheticModel.WriteGguf(gguf, config, DType.F32, 5);
        var layout = _dir.File("slow.flash");
        using (var source = ModelLoader.Open(gguf)) FlashLayoutWriter.Convert(source, layout);
        await using var server = await Start(layout, "max-sessions=1", "server.queue-limit=0");
        using var http = Client(server);
        // One long streamed generation holds the only session; read its first event, then a second request is refused.
        // Its own client that never drains a response it stops reading (HttpClient otherwise keeps reading a disposed
        // response to reuse the connection, and the server would never see the client go away).
        using var leaving = new HttpClient(new SocketsHttpHandler { MaxResponseDrainSize = 0 }) { BaseAddress = server.Address };
        var first = new HttpRequestMessage(HttpMethod.Post, "/v1/completions") { Content = Body(new { prompt = "Once", max_tokens = 1000, stream = true }) };
        var held = await leaving.SendAsync(first, HttpCompletionOption.ResponseHeadersRead);
        var stream = await held.Content.ReadAsStreamAsync();
        var buffer = new byte[64];
        Assert.True(await stream.ReadAsync(buffer) > 0);
        var refused = await http.PostAsync("/v1/completions", Body(new { prompt = "hi", max_tokens = 2 }));
        Assert.Equal(HttpStatusCode.TooManyRequests, refused.StatusCode);
        Assert.Equal("rate_limit_exceeded", (await Json(refused)).GetProperty("error").GetProperty("code").GetString());
        // The client goes away mid-stream: its generation is cancelled (counted as 499, not finished as 200) and the session
        // comes back for the next request.
        held.Dispose();
        var deadline = DateTime.UtcNow.AddSeconds(60);
        int running;
        do
        {
            await Task.Delay(50);
            running = (await Json(await http.GetAsync("/health"))).GetProperty("sessions_running").GetInt32();
        } while (running > 0 && DateTime.UtcNow < deadline);
        Assert.Equal(0, running);
        string metrics;
        do metrics = await (await http.GetAsync("/metrics")).Content.ReadAsStringAsync();
        while (!metrics.Contains("status=\"499\"") && DateTime.UtcNow < deadline);
        Assert.Contains("flashlm_requests_total{endpoint=\"completions\",status=\"499\"} 1", metrics);
        Assert.DoesNotContain("status=\"200\"", metrics);
        var after = await http.PostAsync("/v1/completions", Body(new { prompt = "hi", max_tokens = 2 }));
        Assert.Equal(HttpStatusCode.OK, after.StatusCode);
    }

    /// <summary>Plain curl (-N, no buffering) streams a completion whose chunks join to the whole answer.</summary>
    [Fact]
    public async Task Curl_streams_a_completion_whose_chunks_join_to_the_whole_answer()
    {
        var layout = Layout();
        await using (var server = await Start(layout))
        {
            using var http = Client(server);
            var whole = await Json(await http.PostAsync("/v1/completions", Body(new { prompt = "Once upon a time", max_tokens = 12, temperature = 0 })));
            var psi = new System.Diagnostics.ProcessStartInfo("curl") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
            foreach (var a in new[] { "-sS", "-N", "--max-time", "60", "-H", "Content-Type: application/json", "-d",
                         "{\"prompt\":\"Once upon a time\",\"max_tokens\":12,\"temperature\":0,\"stream\":true}", server.Address + "v1/completions" })
                psi.ArgumentList.Add(a);
            System.Diagnostics.Process p;
            try
            {
                p = System.Diagnostics.Process.Start(psi)!;
            }
            catch (System.ComponentModel.Win32Exception)
            {
                throw new InvalidOperationException("curl is not installed; this test drives the server with plain curl");
            }
            using (p)
            {
                var output = await p.StandardOutput.ReadToEndAsync();
                await p.WaitForExitAsync();
                Assert.True(p.ExitCode == 0, await p.StandardError.ReadToEndAsync());
                var events = Events(output);
                Assert.Equal(whole.GetProperty("choices")[0].GetProperty("text").GetString(),
                    string.Concat(events.Select(e => e.GetProperty("choices")[0].GetProperty("text").GetString())));
            }
        }
    }

    /// <summary>
    /// Nothing a client sends crashes the server: seeded mutations of valid bodies (bytes flipped, cut, duplicated, values
    /// swapped for other JSON types, huge numbers, deep nesting) get an answer that is 200 or a 4xx error body, never a 5xx,
    /// and the server still answers a valid request afterwards.
    /// </summary>
    [Fact]
    public async Task Mutated_requests_get_an_answer_and_never_a_server_error()
    {
        var layout = Layout();
        await using var server = await Start(layout, "max-sessions=2");
        using var http = Client(server);
        string[] seeds =
        [
            """{"prompt":"Once upon a time","max_tokens":3,"temperature":0.5,"top_p":0.9,"seed":7,"stop":["x","yz"],"stream":false}""",
            """{"prompt":["hi"],"max_tokens":2,"stream":true,"stream_options":{"include_usage":true},"echo":true}""",
            """{"messages":[{"role":"system","content":"be brief"},{"role":"user","content":[{"type":"text","text":"hi"}]}],"max_tokens":2}""",
            """{"messages":[{"role":"user","content":"hi"}],"max_completion_tokens":2,"stream":true,"top_k":5}""",
        ];
        string[] replacements = ["null", "true", "-1", "0", "1e309", "99999999999999999999", "\"\"", "[]", "{}", "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]", "\"\\u0000\"", "\"<|im_start|>\""];
        var rnd = new Random(20261206);
        for (int i = 0; i < 160; i++)
        {
            var body = seeds[i % seeds.Length];
            switch (rnd.Next(4))
            {
                case 0: // flip a byte
                {
                    var b = body.ToCharArray();
                    b[rnd.Next(b.Length)] = (char)rnd.Next(32, 127);
                    body = new string(b);
                    break;
                }
                case 1: // cut
                    body = body[..rnd.Next(body.Length)];
                    break;
                case 2: // a value swapped for another type or an extreme
                {
                    var colons = Enumerable.Range(0, body.Length).Where(k => body[k] == ':').ToArray();
                    int at = colons[rnd.Next(colons.Length)] + 1;
                    int end = at;
                    int depth = 0;
                    while (end < body.Length && !(depth == 0 && (body[end] == ',' || body[end] == '}')))
                    {
                        if (body[end] is '[' or '{') depth++;
                        if (body[end] is ']' or '}') depth--;
                        end++;
                    }
                    body = body[..at] + replacements[rnd.Next(replacements.Length)] + body[end..];
                    break;
                }
                default: // a span duplicated
                {
                    int a = rnd.Next(body.Length), len = rnd.Next(1, 20);
                    body = body.Insert(a, body.Substring(a, Math.Min(len, body.Length - a)));
                    break;
                }
            }
            string path = body.Contains("messages") ? "/v1/chat/completions" : "/v1/completions";
            var r = await http.PostAsync(path, new StringContent(body, Encoding.UTF8, "application/json"));
            var text = await r.Content.ReadAsStringAsync();
            Assert.True((int)r.StatusCode < 500, $"{(int)r.StatusCode} for {body}: {text}");
            if ((int)r.StatusCode >= 400) Assert.Contains("\"error\"", text);
        }
        Assert.Equal(HttpStatusCode.OK, (await http.PostAsync("/v1/completions", Body(new { prompt = "hi", max_tokens = 2 }))).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await http.GetAsync("/health")).StatusCode);
    }

    [Fact]
    public void Bad_server_settings_are_refused_naming_the_key()
    {
        var e = Assert.Throws<FlashLm.Runtime.Config.SettingsException>(() => FlashLm.Runtime.Config.RuntimeSettings.Server(
            FlashLm.Runtime.Config.RuntimeSettings.Compose([], ["server.listen=\"ftp://x\""])));
        Assert.Equal("flashlm.server.listen", e.Key);
        e = Assert.Throws<FlashLm.Runtime.Config.SettingsException>(() => FlashLm.Runtime.Config.RuntimeSettings.Server(
            FlashLm.Runtime.Config.RuntimeSettings.Compose([], ["server.queue-limit=-1"])));
        Assert.Equal("flashlm.server.queue-limit", e.Key);
    }
}

/// <summary>The official OpenAI npm client (tests/openai-client, installed by .ci/run) against flashlm serve.</summary>
public sealed class OpenAiClientTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    [RequiresOpenAiClientFact]
    public async Task The_official_openai_client_lists_completes_chats_streams_and_sees_errors()
    {
        var gguf = _dir.File("tiny.gguf");
        SyntheticModel.WriteGguf(gguf, SyntheticShapes.Get("tiny"), DType.F32, 42);
        var layout = _dir.File("tiny.flash");
        using (var source = ModelLoader.Open(gguf)) FlashLayoutWriter.Convert(source, layout);
        await using var server = await OpenAiServer.StartAsync(new ServeOptions(layout, [], ["server.listen=\"http://127.0.0.1:0\""]));
        var psi = new System.Diagnostics.ProcessStartInfo("node") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.ArgumentList.Add(Path.Combine(OpenAiClient.Dir!, "check.mjs"));
        psi.ArgumentList.Add(server.Address.ToString());
        psi.ArgumentList.Add(server.ModelId);
        using var p = System.Diagnostics.Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        await p.WaitForExitAsync(new CancellationTokenSource(TimeSpan.FromMinutes(2)).Token);
        Assert.True(p.ExitCode == 0, await stderr);
        var j = JsonDocument.Parse(await stdout).RootElement;
        Assert.Equal(server.ModelId, j.GetProperty("models")[0].GetString());
        var completion = j.GetProperty("completion");
        Assert.Equal("length", completion.GetProperty("finish").GetString());
        Assert.Equal(12, completion.GetProperty("usage").GetProperty("completion_tokens").GetInt32());
        Assert.False(string.IsNullOrEmpty(completion.GetProperty("text").GetString()));
        Assert.Equal("assistant", j.GetProperty("chat").GetProperty("role").GetString());
        // Streamed and whole chat answers agree (greedy, the same request).
        Assert.Equal(j.GetProperty("chat").GetProperty("content").GetString(), j.GetProperty("stream").GetProperty("content").GetString());
        Assert.NotEqual(JsonValueKind.Null, j.GetProperty("stream").GetProperty("finish").ValueKind);
        Assert.Equal(404, j.GetProperty("error").GetProperty("status").GetInt32());
        Assert.Equal("model_not_found", j.GetProperty("error").GetProperty("code").GetString());
    }
}

/// <summary>Where tests/openai-client is, with the openai package installed (npm install there), and node on the PATH.</summary>
public static class OpenAiClient
{
    public const string MissingReason = "the OpenAI npm client is not installed (run: npm install --prefix tests/openai-client; .ci/run does) or node is not on the PATH";

    public static string? Dir { get; } = Find();

    private static string? Find()
    {
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null; d = d.Parent)
        {
            var candidate = Path.Combine(d.FullName, "tests", "openai-client");
            if (File.Exists(Path.Combine(d.FullName, "Pipeline.sln")))
                return Directory.Exists(Path.Combine(candidate, "node_modules", "openai")) && OnPath("node") ? candidate : null;
        }
        return null;
    }

    private static bool OnPath(string program) =>
        (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':').Any(p => p.Length > 0 && File.Exists(Path.Combine(p, program)));
}

/// <summary>A fact skipped, with the reason, when the OpenAI npm client or node is missing.</summary>
public sealed class RequiresOpenAiClientFactAttribute : FactAttribute
{
    public RequiresOpenAiClientFactAttribute()
    {
        if (OpenAiClient.Dir is null) Skip = OpenAiClient.MissingReason;
    }
}
