using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json;
using FlashLm.Formats;
using FlashLm.Hosting;
using FlashLm.Models;
using FlashLm.Models.Sampling;
using FlashLm.Runtime.Config;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace FlashLm.Server;

/// <summary>What `flashlm serve` opens: the model, the same HOCON profiles and key=value overrides as `flashlm generate`, the
/// positions each conversation may hold (0: the model's context) and where converted layouts are kept (null: the default cache).</summary>
public sealed record ServeOptions(string ModelPath, IReadOnlyList<string> ConfigFiles, IReadOnlyList<string> Overrides, int Positions = 0, string? LayoutCacheFolder = null);

/// <summary>
/// The OpenAI-compatible server: POST /v1/completions and /v1/chat/completions (streamed as server-sent events or whole),
/// GET /v1/models, GET /health and GET /metrics (Prometheus text), on Kestrel over the hosted flash runtime. Requests beyond
/// the runtime's sessions queue (<see cref="Admission"/>) and are refused with 429 past the queue's limit or wait; a client
/// that goes away cancels its generation, which frees its session.
/// </summary>
public sealed class OpenAiServer : IAsyncDisposable
{
    private readonly WebApplication _app;
    private readonly IServedModel _lm;
    private readonly Admission _admission;
    private readonly ServerMetrics _metrics = new();
    private readonly ChatTemplate _template;
    private readonly int? _endOfTurn;
    private readonly string _modelId;
    private readonly long _created = DateTimeOffset.UtcNow.ToUnixTimeSeconds();

    /// <summary>The address Kestrel listens on (the real port when the listen address asked for port 0).</summary>
    public Uri Address { get; }

    /// <summary>The model id requests name.</summary>
    public string ModelId => _modelId;

    /// <summary>The server's settings (flashlm.server).</summary>
    public ServerSettings Settings { get; }

    private OpenAiServer(WebApplication app, ServerSettings settings)
    {
        _app = app;
        Settings = settings;
        _lm = app.Services.GetRequiredService<IServedModel>();
        _admission = new Admission(_lm.MaxConcurrent, settings.QueueLimit, settings.QueueTimeout);
        _template = ChatTemplate.Detect(_lm.ChatTemplate);
        // The token that ends an assistant turn in the template's format, when the vocabulary has it as one token.
        if (_template.EndOfTurn is { } end && _lm.Tokenizer.Encode(end, addBos: false) is [var one]) _endOfTurn = one;
        _modelId = settings.ModelName ?? _lm.Name;
        var addresses = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses;
        Address = new Uri(addresses.First());
    }

    /// <summary>Opens the model, then listens; the returned server runs until disposed.</summary>
    public static Task<OpenAiServer> StartAsync(ServeOptions options, CancellationToken cancellation = default)
    {
        var config = RuntimeSettings.Compose(options.ConfigFiles, options.Overrides);
        var settings = RuntimeSettings.Server(config);
        RuntimeSettings.From(config); // every flashlm key checked before anything opens
        return StartAsync(settings, services =>
        {
            services.AddFlashLm(o =>
            {
                o.ModelPath = options.ModelPath;
                o.LayoutCacheFolder = options.LayoutCacheFolder;
                o.ConfigFiles = [.. options.ConfigFiles];
                foreach (var kv in options.Overrides)
                {
                    int eq = kv.IndexOf('=');
                    if (eq <= 0) throw new SettingsException(kv, "an override is key=value");
                    o.Settings[kv[..eq].Trim()] = kv[(eq + 1)..].Trim();
                }
                o.Positions = options.Positions;
            });
            services.AddSingleton<IServedModel>(sp => new LocalModel(sp.GetRequiredService<IFlashLm>()));
        }, cancellation);
    }

    /// <summary>Listens with <paramref name="settings"/> over the model <paramref name="model"/> (a cluster's, say); the returned
    /// server runs until disposed (disposing it does not dispose the model).</summary>
    public static Task<OpenAiServer> StartAsync(ServerSettings settings, IServedModel model, CancellationToken cancellation = default) =>
        StartAsync(settings, services => services.AddSingleton(model), cancellation);

    private static async Task<OpenAiServer> StartAsync(ServerSettings settings, Action<IServiceCollection> services, CancellationToken cancellation)
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.Logging.AddSimpleConsole(o => o.SingleLine = true).SetMinimumLevel(LogLevel.Warning);
        builder.Logging.AddFilter("Microsoft.AspNetCore", LogLevel.Error);
        builder.WebHost.UseKestrel(k =>
        {
            k.AddServerHeader = false;
            k.Limits.MaxRequestBodySize = settings.MaxRequestBytes;
        });
        builder.WebHost.UseUrls(settings.Listen);
        services(builder.Services);
        var app = builder.Build();
        // Kestrel listens before this method has built the server object: a request that comes in between waits for it.
        var ready = new TaskCompletionSource<OpenAiServer>(TaskCreationOptions.RunContinuationsAsynchronously);
        RequestDelegate Serve(Func<OpenAiServer, HttpContext, Task> handler) => async ctx => await handler(await ready.Task.ConfigureAwait(false), ctx).ConfigureAwait(false);
        app.MapPost("/v1/completions", Serve((s, ctx) => s.Handle(ctx, chat: false)));
        app.MapPost("/v1/chat/completions", Serve((s, ctx) => s.Handle(ctx, chat: true)));
        app.MapGet("/v1/models", Serve((s, ctx) => s.Models(ctx, null)));
        app.MapGet("/v1/models/{id}", Serve((s, ctx) => s.Models(ctx, (string?)ctx.Request.RouteValues["id"])));
        app.MapGet("/health", Serve((s, ctx) => s.Health(ctx)));
        app.MapGet("/metrics", Serve((s, ctx) => s.Metrics(ctx)));
        app.MapFallback(ctx => WriteError(ctx, new ApiException(404, $"no route {ctx.Request.Method} {Clip(ctx.Request.Path.Value ?? "")}", code: "not_found")));
        try
        {
            await app.StartAsync(cancellation).ConfigureAwait(false);
            var server = new OpenAiServer(app, settings);
            ready.SetResult(server);
            return server;
        }
        catch (Exception e)
        {
            ready.TrySetException(e);
            await app.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    /// <summary>Waits until the host is asked to stop (Ctrl+C, SIGTERM) or <paramref name="cancellation"/>.</summary>
    public Task WaitForShutdownAsync(CancellationToken cancellation = default) => Microsoft.Extensions.Hosting.HostingAbstractionsHostExtensions.WaitForShutdownAsync(_app, cancellation);

    /// <summary>Stops listening, cancels running generations and closes the runtime.</summary>
    public async ValueTask DisposeAsync()
    {
        await _app.StopAsync().ConfigureAwait(false);
        await _app.DisposeAsync().ConfigureAwait(false);
    }

    /// <summary>The request header naming a conversation whose KV cache a cluster keeps on one node between requests.</summary>
    public const string ConversationHeader = "X-Conversation-Id";

    /// <summary>The response header naming the node that served a request (a cluster; set where the body had not started).</summary>
    public const string NodeHeader = "X-FlashLm-Node";

    /// <summary>The response header giving the positions of the conversation's KV cache the node reused (a cluster).</summary>
    public const string ReusedHeader = "X-FlashLm-Reused";

    /// <summary>The request's conversation id: 1-128 characters of letters, digits and . _ : -, else 400.</summary>
    private static string? Conversation(HttpContext ctx)
    {
        if (!ctx.Request.Headers.TryGetValue(ConversationHeader, out var values) || values.Count == 0) return null;
        string id = values[0] ?? "";
        if (values.Count > 1 || id.Length is 0 or > 128 || !id.All(ch => char.IsAsciiLetterOrDigit(ch) || ch is '.' or '_' or ':' or '-'))
            throw new ApiException(400, $"{ConversationHeader} must be one id of 1-128 letters, digits, '.', '_', ':' or '-'", ConversationHeader);
        return id;
    }

    private static string Clip(string s) => s.Length > 80 ? s[..80] + "..." : s;

    // ---- endpoints -------------------------------------------------------------------------------------------------

    private Task Health(HttpContext ctx)
    {
        bool ok = _lm.IsRunning;
        ctx.Response.StatusCode = ok ? 200 : 503;
        return WriteJson(ctx, w =>
        {
            w.WriteString("status", ok ? "ok" : "unavailable");
            w.WriteString("model", _modelId);
            w.WriteNumber("sessions_running", _admission.Running);
            w.WriteNumber("sessions_max", _admission.Slots);
            w.WriteNumber("queue_length", _admission.Queued);
            if (_lm.ClusterMembers is { } members) w.WriteNumber("cluster_members", members);
        });
    }

    private Task Models(HttpContext ctx, string? id)
    {
        void Model(Utf8JsonWriter w)
        {
            w.WriteString("id", _modelId);
            w.WriteString("object", "model");
            w.WriteNumber("created", _created);
            w.WriteString("owned_by", "flashlm");
        }
        if (id is not null)
        {
            if (id != _modelId) return WriteError(ctx, new ApiException(404, $"The model '{Clip(id)}' does not exist", "model", "model_not_found"));
            return WriteJson(ctx, Model);
        }
        return WriteJson(ctx, w =>
        {
            w.WriteString("object", "list");
            w.WriteStartArray("data");
            w.WriteStartObject();
            Model(w);
            w.WriteEndObject();
            w.WriteEndArray();
        });
    }

    private Task Metrics(HttpContext ctx)
    {
        ctx.Response.ContentType = "text/plain; version=0.0.4; charset=utf-8";
        var stats = _lm.Stats;
        return ctx.Response.WriteAsync(_metrics.Render(_admission, stats) + _lm.ExtraMetrics(), ctx.RequestAborted);
    }

    private async Task Handle(HttpContext ctx, bool chat)
    {
        string endpoint = chat ? "chat" : "completions";
        IDisposable? slot = null;
        bool started = false;
        try
        {
            if (ctx.Request.ContentType is not { } type || !type.StartsWith("application/json", StringComparison.OrdinalIgnoreCase))
                throw new ApiException(415, "Content-Type must be application/json");
            JsonDocument doc;
            try
            {
                doc = await JsonDocument.ParseAsync(ctx.Request.Body, new JsonDocumentOptions { MaxDepth = 32 }, ctx.RequestAborted).ConfigureAwait(false);
            }
            catch (JsonException e)
            {
                throw new ApiException(400, $"the body is not valid JSON: {e.Message}");
            }
            catch (BadHttpRequestException e) when (e.StatusCode == 413)
            {
                throw new ApiException(413, $"the body is larger than {Settings.MaxRequestBytes} bytes (flashlm.server.max-request-bytes)");
            }
            using var _ = doc;
            var (req, root) = GenerationRequest.Parse(doc, chat);
            if (req.Model is { } m && m != _modelId) throw new ApiException(404, $"The model '{Clip(m)}' does not exist (this server serves '{_modelId}')", "model", "model_not_found");
            var tok = _lm.Tokenizer;
            string prompt;
            var stops = req.Stop.ToList();
            int? endToken = null;
            if (chat)
            {
                prompt = _template.Render(GenerationRequest.Messages(root));
                stops.AddRange(_template.ImpliedStops);
                endToken = _endOfTurn;
            }
            else prompt = GenerationRequest.Prompt(root);
            int[] tokens = tok.Encode(prompt, addBos: true);
            int capacity = _lm.Capacity;
            if (tokens.Length == 0) throw new ApiException(400, "the prompt is empty", chat ? "messages" : "prompt");
            if (tokens.Length >= capacity)
                throw new ApiException(400, $"the prompt has {tokens.Length} tokens; the context holds {capacity} positions, so no room is left to answer", chat ? "messages" : "prompt", "context_length_exceeded");
            int room = capacity - tokens.Length;
            int maxTokens = Math.Min(req.MaxTokens ?? (chat ? room : 16), room);

            var wait = Stopwatch.StartNew();
            slot = await _admission.EnterAsync(ctx.RequestAborted).ConfigureAwait(false);
            if (slot is null)
                throw new ApiException(429, $"the server is at capacity ({_admission.Slots} running, {_admission.Queued} queued; flashlm.server.queue-limit {Settings.QueueLimit}, queue-timeout {Settings.QueueTimeout.TotalSeconds:F0} s)", code: "rate_limit_exceeded", type: "rate_limit_error");
            _metrics.QueueWait(wait.Elapsed);

            var sampling = new SamplingOptions(req.Temperature, req.TopP, req.TopK, req.Seed ?? (ulong)Random.Shared.NextInt64());
            string id = (chat ? "chatcmpl-" : "cmpl-") + Guid.NewGuid().ToString("N")[..24];
            long created = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
            var text = new StringBuilder();
            string? finish = null;
            int completion = 0;

            if (req.Stream)
            {
                ctx.Response.StatusCode = 200;
                ctx.Response.ContentType = "text/event-stream";
                ctx.Response.Headers.CacheControl = "no-cache";
                ctx.Features.Get<IHttpResponseBodyFeature>()?.DisableBuffering();
                started = true;
                if (chat) await Event(ctx, Chunk(id, created, chat, w => { w.WriteString("role", "assistant"); w.WriteString("content", ""); }, null)).ConfigureAwait(false);
            }
            var result = await Generate(Conversation(ctx), by =>
            {
                if (ctx.Response.HasStarted) return;
                ctx.Response.Headers[NodeHeader] = by.Node;
                ctx.Response.Headers[ReusedHeader] = by.ReusedPositions.ToString(CultureInfo.InvariantCulture);
            }, tokens, maxTokens, sampling, stops, endToken, req.Echo ? prompt : null, async piece =>
            {
                text.Append(piece);
                if (req.Stream) await Event(ctx, Chunk(id, created, chat, w => w.WriteString(chat ? "content" : "text", piece), null)).ConfigureAwait(false);
            }, ctx.RequestAborted).ConfigureAwait(false);
            finish = result.Finish;
            completion = result.CompletionTokens;
            _metrics.Completed(endpoint, tokens.Length, completion, result.FirstToken, result.Decode, result.Hits, result.Active);
            if (req.Stream)
            {
                await Event(ctx, Chunk(id, created, chat, chat ? _ => { } : w => w.WriteString("text", ""), finish)).ConfigureAwait(false);
                if (req.IncludeUsage)
                    await Event(ctx, Json(w =>
                    {
                        Head(w, id, created, chat ? "chat.completion.chunk" : "text_completion");
                        w.WriteStartArray("choices");
                        w.WriteEndArray();
                        Usage(w, tokens.Length, completion);
                    })).ConfigureAwait(false);
                await ctx.Response.WriteAsync("data: [DONE]\n\n", ctx.RequestAborted).ConfigureAwait(false);
                await ctx.Response.Body.FlushAsync(ctx.RequestAborted).ConfigureAwait(false);
                _metrics.Request(endpoint, 200);
                return;
            }
            _metrics.Request(endpoint, 200);
            ctx.Response.ContentType = "application/json";
            var answer = Choice(id, created, chat ? "chat.completion" : "text_completion", chat ? "message" : null,
                w =>
                {
                    if (chat) w.WriteString("role", "assistant");
                    w.WriteString(chat ? "content" : "text", text.ToString());
                }, finish, w => Usage(w, tokens.Length, completion));
            await ctx.Response.Body.WriteAsync(answer, ctx.RequestAborted).ConfigureAwait(false);
        }
        catch (Exception) when (ctx.RequestAborted.IsCancellationRequested)
        {
            // The client went away; its generation was cancelled with it (however the cancellation surfaced: a cancelled
            // read or write, or the session's own cancellation).
            _metrics.Request(endpoint, 499);
        }
        catch (ModelBusyException e) when (!started)
        {
            _metrics.Request(endpoint, 429);
            await WriteError(ctx, new ApiException(429, e.Message, code: "rate_limit_exceeded", type: "rate_limit_error")).ConfigureAwait(false);
        }
        catch (ApiException e)
        {
            _metrics.Request(endpoint, e.Status);
            if (!started) await WriteError(ctx, e).ConfigureAwait(false);
        }
        catch (Exception e)
        {
            // Anything else is the server's failure, answered as such (never an unhandled exception on the connection).
            _metrics.Request(endpoint, 500);
            var error = new ApiException(500, $"generation failed: {e.Message}", type: "server_error");
            if (!started) await WriteError(ctx, error).ConfigureAwait(false);
            else
            {
                try
                {
                    await Event(ctx, ErrorBody(error)).ConfigureAwait(false);
                }
                catch (Exception)
                {
                    // the connection is gone as well
                }
            }
        }
        finally
        {
            slot?.Dispose();
        }
    }

    /// <summary>What one generation came to.</summary>
    private sealed record Result(string Finish, int CompletionTokens, TimeSpan? FirstToken, TimeSpan Decode, long Hits, long Active);

    /// <summary>
    /// Runs one generation in a fresh session: <paramref name="maxTokens"/> tokens at most after the prompt (the positions
    /// flashlm generate -n runs for prompt + maxTokens - 1); each piece of text
    /// (whole UTF-8 characters, held back while a stop sequence may be starting) goes to <paramref name="emit"/>. Finish: "stop"
    /// (a stop sequence, the end of turn, or the model's end of text) or "length".
    /// </summary>
    private async Task<Result> Generate(string? conversation, Action<ServedBy>? served, int[] tokens, int maxTokens, SamplingOptions sampling, IReadOnlyList<string> stops, int? endToken, string? echo,
        Func<string, Task> emit, CancellationToken cancellation)
    {
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(cancellation);
        var watch = Stopwatch.StartNew();
        TimeSpan? first = null;
        var joiner = new Utf8Joiner();
        var text = new TextStops(stops);
        if (echo is not null) await emit(echo).ConfigureAwait(false);
        int generated = 0;
        bool ended = false;
        long hits = 0, active = 0;
        try
        {
            int[] stopTokens = endToken is { } e ? [e, _lm.Tokenizer.EosId] : [_lm.Tokenizer.EosId];
            await foreach (var ev in _lm.GenerateAsync(conversation, tokens, tokens.Length + maxTokens - 1, sampling, stopTokens, served, linked.Token).ConfigureAwait(false))
            {
                if (ev.FromPrompt) continue;
                generated++;
                first ??= watch.Elapsed;
                hits += ev.Stats.NeuronsWindowHit + ev.Stats.NeuronsPinnedHit;
                active += ev.Stats.NeuronsActive;
                if (ev.Token == endToken || ev.Token == _lm.Tokenizer.EosId)
                {
                    ended = true;
                    break;
                }
                // Exactly what flashlm generate prints (run.c's rule: an ASCII control byte piece is left out; bytes of a
                // character spelled byte by byte are joined), so greedy output through the server equals generate's.
                if (!Generator.IsPrintable(ev.Piece)) continue;
                var piece = text.Push(joiner.Push(ev.Piece));
                if (piece.Length > 0) await emit(piece).ConfigureAwait(false);
                if (text.Stopped) break;
            }
        }
        finally
        {
            await linked.CancelAsync().ConfigureAwait(false);
        }
        // A character cut off by the end becomes U+FFFD, as decoding generate's bytes gives it.
        var cut = text.Push(joiner.Flush());
        if (cut.Length > 0) await emit(cut).ConfigureAwait(false);
        var rest = text.Flush();
        if (rest.Length > 0) await emit(rest).ConfigureAwait(false);
        bool stopped = text.Stopped || ended || generated < maxTokens;
        return new Result(stopped ? "stop" : "length", generated, first, watch.Elapsed - (first ?? TimeSpan.Zero), hits, active);
    }

    // ---- JSON ----------------------------------------------------------------------------------------------------

    private void Head(Utf8JsonWriter w, string id, long created, string obj)
    {
        w.WriteString("id", id);
        w.WriteString("object", obj);
        w.WriteNumber("created", created);
        w.WriteString("model", _modelId);
    }

    private static void Usage(Utf8JsonWriter w, int prompt, int completion)
    {
        w.WriteStartObject("usage");
        w.WriteNumber("prompt_tokens", prompt);
        w.WriteNumber("completion_tokens", completion);
        w.WriteNumber("total_tokens", prompt + completion);
        w.WriteEndObject();
    }

    private byte[] Chunk(string id, long created, bool chat, Action<Utf8JsonWriter> content, string? finish) =>
        Choice(id, created, chat ? "chat.completion.chunk" : "text_completion", chat ? "delta" : null, content, finish, null);

    /// <summary>A response or chunk with one choice: its content inside <paramref name="wrapper"/> (chat: message or delta) or
    /// beside the index (completions, with null logprobs), the finish reason, then <paramref name="after"/> (usage).</summary>
    private byte[] Choice(string id, long created, string obj, string? wrapper, Action<Utf8JsonWriter> content, string? finish, Action<Utf8JsonWriter>? after) => Json(w =>
    {
        Head(w, id, created, obj);
        w.WriteStartArray("choices");
        w.WriteStartObject();
        w.WriteNumber("index", 0);
        if (wrapper is not null)
        {
            w.WriteStartObject(wrapper);
            content(w);
            w.WriteEndObject();
        }
        else
        {
            content(w);
            w.WriteNull("logprobs");
        }
        if (finish is null) w.WriteNull("finish_reason");
        else w.WriteString("finish_reason", finish);
        w.WriteEndObject();
        w.WriteEndArray();
        after?.Invoke(w);
    });

    private static byte[] Json(Action<Utf8JsonWriter> body)
    {
        using var ms = new MemoryStream();
        using (var w = new Utf8JsonWriter(ms))
        {
            w.WriteStartObject();
            body(w);
            w.WriteEndObject();
        }
        return ms.ToArray();
    }

    private static async Task Event(HttpContext ctx, byte[] json)
    {
        await ctx.Response.Body.WriteAsync("data: "u8.ToArray(), ctx.RequestAborted).ConfigureAwait(false);
        await ctx.Response.Body.WriteAsync(json, ctx.RequestAborted).ConfigureAwait(false);
        await ctx.Response.Body.WriteAsync("\n\n"u8.ToArray(), ctx.RequestAborted).ConfigureAwait(false);
        await ctx.Response.Body.FlushAsync(ctx.RequestAborted).ConfigureAwait(false);
    }

    private static Task WriteJson(HttpContext ctx, Action<Utf8JsonWriter> body)
    {
        ctx.Response.ContentType = "application/json";
        return ctx.Response.Body.WriteAsync(Json(body), ctx.RequestAborted).AsTask();
    }

    private static byte[] ErrorBody(ApiException e) => Json(w =>
    {
        w.WriteStartObject("error");
        w.WriteString("message", e.Message);
        w.WriteString("type", e.Type);
        if (e.Param is null) w.WriteNull("param");
        else w.WriteString("param", e.Param);
        if (e.Code is null) w.WriteNull("code");
        else w.WriteString("code", e.Code);
        w.WriteEndObject();
    });

    private static Task WriteError(HttpContext ctx, ApiException e)
    {
        if (ctx.Response.HasStarted) return Task.CompletedTask;
        ctx.Response.StatusCode = e.Status;
        ctx.Response.ContentType = "application/json";
        return ctx.Response.Body.WriteAsync(ErrorBody(e), ctx.RequestAborted).AsTask();
    }
}
