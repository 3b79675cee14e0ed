// FlashLm.Chat: a console chat on the generic host. Each stdin line is one turn of the same FlashSession
// (the context is kept across turns); the reply streams to stdout; statistics follow at the end of input.
//   dotnet run --project samples/FlashLm.Chat -- [--model PATH] [--max-tokens N] [--temperature T] [--seed S]
//                                                [--positions N] [--budget SIZE] [--config FILE.conf] [--set key=value]
// Without --model it chats with the synthetic "tiny" Llama (random weights: the replies are noise).
using System.Diagnostics;
using FlashLm.Formats;
using FlashLm.Formats.Synth;
using FlashLm.Hosting;
using FlashLm.Models.Sampling;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

string? model = null, budget = null;
int maxTokens = 64, positions = 0;
float temperature = 0.8f;
ulong seed = 42;
var configs = new List<string>();
var settings = new Dictionary<string, string>();
try
{
    for (int i = 0; i < args.Length; i++)
    {
        string Next() => i + 1 < args.Length ? args[++i] : throw new ArgumentException($"{args[i]} needs a value");
        switch (args[i])
        {
            case "--model": model = Next(); break;
            case "--max-tokens": maxTokens = int.Parse(Next()); break;
            case "--temperature": temperature = float.Parse(Next(), System.Globalization.CultureInfo.InvariantCulture); break;
            case "--seed": seed = ulong.Parse(Next()); break;
            case "--positions": positions = int.Parse(Next()); break;
            case "--budget": budget = Next(); break;
            case "--config": configs.Add(Next()); break;
            case "--set":
                var kv = Next();
                int eq = kv.IndexOf('=');
                if (eq <= 0) throw new ArgumentException($"--set {kv}: expected key=value");
                settings[kv[..eq]] = kv[(eq + 1)..];
                break;
            default: throw new ArgumentException($"unknown option {args[i]}");
        }
    }
    if (maxTokens <= 0) throw new ArgumentException("--max-tokens must be positive");
}
catch (Exception e) when (e is ArgumentException or FormatException or OverflowException)
{
    Console.Error.WriteLine($"flashlm-chat: {e.Message}");
    return 2;
}

var builder = Host.CreateApplicationBuilder();
// stdout carries the chat only; the host's and FlashLm's messages go to stderr.
builder.Logging.ClearProviders();
builder.Logging.AddConsole(o => o.LogToStandardErrorThreshold = LogLevel.Trace);
builder.Logging.SetMinimumLevel(LogLevel.Warning);
// A failed start is reported below as one line; the host would log it again with its stack trace.
builder.Logging.AddFilter("Microsoft.Extensions.Hosting", LogLevel.None);
builder.Services.AddFlashLm(o =>
{
    o.ModelPath = model ?? SyntheticTiny();
    o.Positions = positions;
    o.DramBudget = budget ?? o.DramBudget;
    o.ConfigFiles.AddRange(configs);
    foreach (var (k, v) in settings) o.Settings[k] = v;
});

using var host = builder.Build();
try
{
    return await Chat(host, maxTokens, new SamplingOptions(temperature, 0.9f, 0, seed));
}
catch (Exception e) when (e is not OutOfMemoryException)
{
    // Expected failures (a missing or corrupt model, a budget too small, a bad setting) are one clear line and
    // exit code 1, never a stack trace; anything else also names its type.
    bool expected = e is ModelFormatException or FlashLm.Runtime.DramBudgetException or FlashLm.Runtime.Config.SettingsException
        or IOException or UnauthorizedAccessException or ArgumentException or InvalidOperationException or NotSupportedException;
    Console.Error.WriteLine(expected ? $"flashlm-chat: error: {e.Message}" : $"flashlm-chat: error: {e.GetType().Name}: {e.Message}");
    return 1;
}

static async Task<int> Chat(IHost host, int maxTokens, SamplingOptions sampling)
{
    await host.StartAsync();
    var lm = host.Services.GetRequiredService<IFlashLm>();
    var clock = Stopwatch.StartNew();
    int turns = 0, generated = 0;
    var session = await lm.CreateSessionAsync();
    try
    {
        while (Console.In.ReadLine() is { } line)
        {
            if (line.Length == 0) continue;
            if (Console.IsInputRedirected) Console.WriteLine($"> {line}");
            // The turn's positions: the prompt (BOS on the first turn; the last reply's final token on later ones) plus
            // the reply, less one: the last prompt position already yields the first reply token.
            int needed = lm.Tokenizer.Encode(line, addBos: session.Position == 0).Length + (session.Position > 0 ? 1 : 0) + maxTokens - 1;
            if (session.Position + needed > session.Capacity)
            {
                int fresh = lm.Tokenizer.Encode(line, addBos: true).Length + maxTokens - 1;
                if (fresh > session.Capacity)
                {
                    // Even a new conversation cannot hold it: refuse this turn, keep the conversation.
                    Console.Error.WriteLine($"flashlm-chat: this line needs {fresh} positions (its tokens plus --max-tokens {maxTokens}), more than the " +
                                            $"context's {session.Capacity}; line skipped");
                    continue;
                }
                Console.Error.WriteLine($"flashlm-chat: the context is full ({session.Position} of {session.Capacity} positions); starting a new conversation");
                await session.DisposeAsync();
                session = await lm.CreateSessionAsync();
                needed = fresh;
            }
            await foreach (var t in session.GenerateAsync(line, needed, sampling))
            {
                if (t.FromPrompt) continue;
                generated++;
                Console.Write(t.Text);
            }
            Console.WriteLine();
            turns++;
        }
    }
    finally
    {
        await session.DisposeAsync();
    }
    var s = lm.Stats;
    Console.WriteLine($"-- {turns} turns, {generated} tokens generated, {s.Positions} positions run in {clock.Elapsed.TotalSeconds:F2} s " +
                      $"({generated / Math.Max(clock.Elapsed.TotalSeconds, 1e-9):F1} tokens/s), {s.BytesRead} bytes read from flash, " +
                      $"DRAM planned {s.DramPlanned} of budget {s.DramBudget} bytes");
    await host.StopAsync();
    return 0;
}

// The synthetic "tiny" Llama as GGUF in the FlashLm cache folder, written once (under a temporary name, then renamed).
static string SyntheticTiny()
{
    var folder = Path.GetDirectoryName(LayoutCache.DefaultFolder())!;
    var path = Path.Combine(folder, $"chat-synthetic-tiny-f32-seed{SyntheticModel.DefaultSeed}.gguf");
    if (File.Exists(path)) return path;
    Directory.CreateDirectory(folder);
    var temp = $"{path}.{Environment.ProcessId}.tmp";
    try
    {
        Console.Error.WriteLine($"flashlm-chat: writing the synthetic tiny model to {path}");
        SyntheticModel.WriteGguf(temp, SyntheticShapes.Get("tiny"), DType.F32, SyntheticModel.DefaultSeed);
        File.Move(temp, path, overwrite: true);
    }
    finally
    {
        if (File.Exists(temp)) File.Delete(temp);
    }
    return path;
}
