using System.CommandLine;
using FlashLm.Runtime.Config;
using FlashLm.Server;

namespace FlashLm.Cli.Commands;

/// <summary>
/// `flashlm serve [--model M] [--listen URL] [--config F] [--set k=v] [--dram-budget S]`: the OpenAI-compatible HTTP server
/// (POST /v1/completions, /v1/chat/completions; GET /v1/models, /health, /metrics) over the flash runtime, until Ctrl+C.
/// </summary>
public static class ServeCommand
{
    public static Command Build()
    {
        var model = new Option<string?>("--model", "-m") { Description = "llama2.c .bin, GGUF file, Hugging Face folder or flash-layout folder (default: the built-in synthetic model)" };
        var tokenizer = new Option<string?>("--tokenizer", "-z") { Description = "tokenizer .bin for llama2.c models" };
        var listen = new Option<string?>("--listen") { Description = "address to listen on (flashlm.server.listen; default http://127.0.0.1:8080; port 0 picks a free one)" };
        var config = new Option<string[]>("--config") { Description = "HOCON profile(s) overriding the runtime's reference.conf (e.g. hocon/low-memory.conf)", AllowMultipleArgumentsPerToken = false };
        var set = new Option<string[]>("--set") { Description = "override one setting: key=value (e.g. max-sessions=4, server.queue-limit=16)" };
        var budget = new Option<string?>("--dram-budget") { Description = "DRAM budget (e.g. 512MiB, 4GiB; 'auto' = everything fits)" };
        var positions = new Option<int>("--positions") { Description = "positions each conversation may hold (0 = the model's context)", DefaultValueFactory = _ => 0 };
        var cmd = new Command("serve", "Serve the model over HTTP with the OpenAI API shape (completions, chat completions, models, health, Prometheus metrics).")
            { model, tokenizer, listen, config, set, budget, positions };
        cmd.SetAction(r => CliErrors.Guard(() =>
        {
            if (r.GetValue(positions) < 0) throw new ArgumentException($"--positions {r.GetValue(positions)}: must be 0 or more");
            var overrides = new List<string>(r.GetValue(set) ?? []);
            if (r.GetValue(budget) is { } b) overrides.Add($"dram-budget={b}");
            if (r.GetValue(listen) is { } l) overrides.Add($"server.listen=\"{l}\"");
            var layout = DefaultModel.LayoutFolder(r.GetValue(model), r.GetValue(tokenizer));
            using var ctrlC = CtrlC.Listen();
            return Task.Run(async () =>
            {
                await using var server = await OpenAiServer.StartAsync(new ServeOptions(layout, r.GetValue(config) ?? [], overrides, r.GetValue(positions)), ctrlC.Token);
                // The address line is what scripts wait for (with port 0 it names the port picked).
                Console.WriteLine($"flashlm: serving {server.ModelId} on {server.Address} (POST /v1/completions, /v1/chat/completions; GET /v1/models, /health, /metrics)");
                Console.Out.Flush();
                try
                {
                    // Until Ctrl+C, or SIGTERM (the host's lifetime stops the application on it, as a service manager sends it).
                    await server.WaitForShutdownAsync(ctrlC.Token);
                }
                catch (OperationCanceledException)
                {
                }
                Console.Error.WriteLine("flashlm: stopping the server");
                return 0;
            }).GetAwaiter().GetResult();
        }));
        return cmd;
    }
}
