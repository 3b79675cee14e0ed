using System.Globalization;
using System.Reflection;
using Akka.Configuration;
using Akka.Configuration.Hocon;

namespace FlashLm.Runtime.Config;

/// <summary>A HOCON key holds a value the runtime cannot use; the message names the key.</summary>
public sealed class SettingsException(string key, string problem) : Exception($"configuration key '{key}': {problem}")
{
    /// <summary>The HOCON key (or the file) that is wrong.</summary>
    public string Key { get; } = key;
}

/// <summary>What decides which FFN neurons are read for a token.</summary>
public enum PredictorKind
{
    /// <summary>The exact active set, from a copy of the gate/up weights held outside the budget.</summary>
    Oracle,
    /// <summary>Every neuron: the dense FFN streamed from flash.</summary>
    All,
    /// <summary>Trained low-rank predictors (same layer): reads issued once the layer's FFN input is known.</summary>
    LowRank,
    /// <summary>Trained lookahead predictors name layer N+1's neurons from layer N's input; the same-layer
    /// predictor (or the oracle when there is none) fills misses late.</summary>
    Lookahead,
    /// <summary>Gate-resident selection: each layer's gate rows (up rows for ReLU models) held in DRAM in the layout's own
    /// type and counted in the budget; the gate is computed for every neuron and exactly the neurons past the threshold are
    /// read. Exact by construction, needs no training; costs the gate matrices' DRAM and reads them (checked) at start.</summary>
    Gate,
    /// <summary>A measuring instrument for synthetic models: a recorded activation trace replayed at a stated recall and
    /// over-selection, paying a rank-r low-rank predictor's memory (in the budget) and compute (flashlm.trace).</summary>
    Trace,
    /// <summary>What the budget and the layout allow, all deployable (nothing outside the budget): the layout's trained
    /// predictors (with the lookahead ones when it has them); else gate-resident selection when the model is sparse
    /// (thresholds or ReLU) and the gates fit with a quarter of every layer's neurons still cached; else every neuron.</summary>
    Auto,
}

/// <summary>What lookahead reads for layer N+1 while layer N computes (flashlm.lookahead-guess).</summary>
public enum LookaheadGuess
{
    /// <summary>Gate when the predictor is gate-resident; else the layout's trained lookahead predictors when present; else previous.</summary>
    Auto,
    /// <summary>Layer N+1's resident gate applied to layer N's FFN input (the residual stream changes little between layers).</summary>
    Gate,
    /// <summary>What layer N+1 used for the previous token.</summary>
    Previous,
}

/// <summary>Trace-driven selection (flashlm.trace): the trace file and the degradation it is replayed at.</summary>
public sealed record TraceSettings(string File, double Recall, double OverSelection, int Rank, ulong Seed);

/// <summary>Flash loader pool settings (flashlm.loader).</summary>
public sealed record LoaderSettings(int Readers, int Threads, long CoalesceGap, int MaxRead, bool DirectIo, int MaxAttempts, int DebugDelayMs,
    bool SplitParts = false, bool VerifyReads = true, bool SkipResident = true, LoaderEngine Engine = LoaderEngine.Auto);

/// <summary>How the loader reads: a pool of blocking reader threads, or io_uring (one submitting and one reaping thread).</summary>
public enum LoaderEngine { Threads, IoUring, Auto }

/// <summary>The runtime's settings, read from HOCON (reference.conf, then profiles, then --set overrides).</summary>
public sealed record RuntimeSettings(
    long? DramBudget, int Window, PredictorKind Predictor, bool Lookahead, double? Sparsity, bool PrefillSequential, LoaderSettings Loader,
    bool MeasurePredictor = false, int MaxSessions = 1, bool RefuseOverflow = false, bool StreamAttention = false,
    TimeSpan? SessionStallTimeout = null, LookaheadGuess LookaheadGuess = LookaheadGuess.Auto, long? ProcessReserve = 0, long ProcessAllowance = 0,
    TraceSettings? Trace = null, double? Pin = 0, int MoePrefetchExperts = 0, bool HitsFirst = true, FlashLm.Formats.LayerRange? Layers = null)
{
    /// <summary>The embedded defaults.</summary>
    public static Akka.Configuration.Config Reference { get; } = LoadReference();

    private static Akka.Configuration.Config LoadReference()
    {
        using var s = Assembly.GetExecutingAssembly().GetManifestResourceStream("FlashLm.Runtime.reference.conf")
                      ?? throw new InvalidOperationException("embedded reference.conf is missing");
        using var r = new StreamReader(s);
        return ConfigurationFactory.ParseString(r.ReadToEnd());
    }

    /// <summary>
    /// Builds the full configuration: <paramref name="overrides"/> (key=value, highest priority; an earlier one wins), then
    /// the files in order (later wins), then <paramref name="defaults"/> (key=value: a caller's own defaults, such as the
    /// command line's process-reserve = auto, which files and overrides may still change), then reference.conf.
    /// </summary>
    public static Akka.Configuration.Config Compose(IEnumerable<string> files, IEnumerable<string> overrides, IEnumerable<string>? defaults = null)
    {
        var config = Reference;
        foreach (var d in (defaults ?? []).Reverse()) config = Setting(d).WithFallback(config);
        foreach (var f in files)
        {
            if (!File.Exists(f)) throw new SettingsException("--config", $"file not found: {f}");
            Akka.Configuration.Config parsed;
            try
            {
                var text = File.ReadAllText(f);
                CheckBrackets(f, text);
                parsed = ConfigurationFactory.ParseString(text);
            }
            catch (Exception e) when (e is not SettingsException)
            {
                throw new SettingsException("--config", $"{f}: not valid HOCON: {e.Message}");
            }
            CheckKeys(parsed, f);
            config = parsed.WithFallback(config);
        }
        foreach (var o in overrides.Reverse()) config = Setting(o).WithFallback(config);
        return config;
    }

    /// <summary>One key=value setting (the key with or without "flashlm."), checked against reference.conf's keys.</summary>
    private static Akka.Configuration.Config Setting(string o)
    {
        int eq = o.IndexOf('=');
        if (eq <= 0) throw new SettingsException(o, "expected key=value");
        var key = o[..eq].Trim();
        if (!key.StartsWith("flashlm.", StringComparison.Ordinal)) key = "flashlm." + key;
        Akka.Configuration.Config parsed;
        try
        {
            parsed = ConfigurationFactory.ParseString($"{key} = {Quote(o[(eq + 1)..].Trim())}");
        }
        catch (Exception e)
        {
            throw new SettingsException(key, $"cannot parse value '{o[(eq + 1)..]}': {e.Message}");
        }
        CheckKeys(parsed, "--set");
        return parsed;
    }

    /// <summary>
    /// Every key under flashlm that reference.conf defines, with whether it is a section (an object such as
    /// flashlm.loader) or a value. The check below is driven by this, so a key added to reference.conf is
    /// accepted everywhere without further changes.
    /// </summary>
    private static readonly Lazy<Dictionary<string, bool>> KnownKeys = new(() =>
    {
        var keys = new Dictionary<string, bool>(StringComparer.Ordinal);
        void Walk(HoconValue value, string path)
        {
            bool section = value.IsObject();
            keys[path] = section;
            if (section)
                foreach (var (name, child) in value.GetObject().Items) Walk(child, path + "." + name);
        }
        Walk(Reference.GetValue("flashlm"), "flashlm");
        return keys;
    });

    /// <summary>
    /// Refuses keys under flashlm that reference.conf does not define (a typo such as loader.reader would
    /// otherwise be ignored without a word), naming the nearest defined key, and a value where a section is
    /// expected or the reverse. Keys outside flashlm (akka.*) are Akka's and pass through.
    /// </summary>
    private static void CheckKeys(Akka.Configuration.Config parsed, string source)
    {
        if (parsed.IsEmpty || !parsed.Root.IsObject()) return;
        if (!parsed.Root.GetObject().Items.TryGetValue("flashlm", out var top)) return;
        var known = KnownKeys.Value;
        void Walk(HoconValue value, string path)
        {
            if (!known.TryGetValue(path, out bool section))
                throw new SettingsException(path, $"unknown key (in {source}); did you mean '{Nearest(path)}'?");
            if (section && !value.IsObject())
            {
                var example = known.Keys.First(k => k.StartsWith(path + ".", StringComparison.Ordinal) && !known[k]);
                throw new SettingsException(path, $"is a section, not a value (in {source}); set its keys, e.g. {example}");
            }
            if (!section && value.IsObject())
                throw new SettingsException(path, $"is a value, not a section (in {source})");
            if (section)
                foreach (var (name, child) in value.GetObject().Items) Walk(child, path + "." + name);
        }
        Walk(top, "flashlm");
    }

    /// <summary>The defined value key closest to <paramref name="key"/> by edit distance (ties: the shorter key).</summary>
    internal static string Nearest(string key)
    {
        string best = "";
        int bestDistance = int.MaxValue;
        foreach (var (k, section) in KnownKeys.Value)
        {
            if (section) continue;
            int d = EditDistance(key, k);
            if (d < bestDistance || (d == bestDistance && k.Length < best.Length))
            {
                best = k;
                bestDistance = d;
            }
        }
        return best;
    }

    /// <summary>Levenshtein distance (insert, delete, substitute: 1 each).</summary>
    internal static int EditDistance(string a, string b)
    {
        var row = new int[b.Length + 1];
        for (int j = 0; j <= b.Length; j++) row[j] = j;
        for (int i = 1; i <= a.Length; i++)
        {
            int diagonal = row[0];
            row[0] = i;
            for (int j = 1; j <= b.Length; j++)
            {
                int above = row[j];
                row[j] = Math.Min(Math.Min(row[j] + 1, row[j - 1] + 1), diagonal + (a[i - 1] == b[j - 1] ? 0 : 1));
                diagonal = above;
            }
        }
        return row[b.Length];
    }

    /// <summary>
    /// Akka's HOCON parser silently accepts unbalanced braces and brackets (dropping what follows), which
    /// would ignore half a profile without a word; this catches that, naming the file and line.
    /// </summary>
    private static void CheckBrackets(string file, string text)
    {
        var open = new Stack<(char Ch, int Line)>();
        int line = 1;
        for (int i = 0; i < text.Length; i++)
        {
            char c = text[i];
            if (c == '\n') line++;
            else if (c == '#' || (c == '/' && i + 1 < text.Length && text[i + 1] == '/'))
            {
                while (i + 1 < text.Length && text[i + 1] != '\n') i++;
            }
            else if (c == '"')
            {
                bool triple = i + 2 < text.Length && text[i + 1] == '"' && text[i + 2] == '"';
                int end = triple ? text.IndexOf("\"\"\"", i + 3, StringComparison.Ordinal) : IndexOfQuote(text, i + 1);
                if (end < 0) throw new SettingsException(file, $"line {line}: unterminated string");
                line += text.AsSpan(i, end - i).Count('\n');
                i = triple ? end + 2 : end;
            }
            else if (c is '{' or '[') open.Push((c, line));
            else if (c is '}' or ']')
            {
                char want = c == '}' ? '{' : '[';
                if (open.Count == 0 || open.Peek().Ch != want) throw new SettingsException(file, $"line {line}: unmatched '{c}'");
                open.Pop();
            }
        }
        if (open.Count > 0) throw new SettingsException(file, $"line {open.Peek().Line}: '{open.Peek().Ch}' is never closed");
    }

    private static int IndexOfQuote(string text, int from)
    {
        for (int i = from; i < text.Length; i++)
        {
            if (text[i] == '\\') i++;
            else if (text[i] == '"') return i;
            else if (text[i] == '\n') return -1;
        }
        return -1;
    }

    /// <summary><paramref name="config"/> with reference.conf underneath (unchanged when the reference is already in its chain).</summary>
    public static Akka.Configuration.Config WithReference(Akka.Configuration.Config config)
    {
        if (ReferenceEquals(config, Reference)) return config;
        try
        {
            return config.WithFallback(Reference);
        }
        catch (ArgumentException)
        {
            return config; // already falls back to the reference
        }
    }

    private static string Quote(string v) =>
        v.Length > 0 && (char.IsLetterOrDigit(v[0]) || v[0] == '-' || v[0] == '.' || v[0] == '"' || (v[0] == '[' && v[^1] == ']')) ? v : "\"" + v.Replace("\"", "\\\"") + "\"";

    /// <summary>Reads and validates the flashlm.server keys (flashlm serve).</summary>
    public static ServerSettings Server(Akka.Configuration.Config config)
    {
        var c = WithReference(config);
        const string listenKey = "flashlm.server.listen";
        var listen = Str(c, listenKey);
        if (!Uri.TryCreate(listen, UriKind.Absolute, out var uri) || uri.Scheme != "http" || uri.AbsolutePath != "/" || uri.Port < 0)
            throw new SettingsException(listenKey, $"'{listen}' is not an http:// address with a port (e.g. http://127.0.0.1:8080)");
        var name = Str(c, "flashlm.server.model-name");
        var timeout = StallTimeout(c, "flashlm.server.queue-timeout")
                      ?? throw new SettingsException("flashlm.server.queue-timeout", "must be a duration (e.g. 30s), not off");
        return new ServerSettings(listen, name.Equals("auto", StringComparison.OrdinalIgnoreCase) ? null : name,
            Int(c, "flashlm.server.queue-limit", 0, 1 << 20), timeout, Size(c, "flashlm.server.max-request-bytes", 1024, 1L << 30));
    }

    /// <summary>Reads and validates the flashlm.cluster keys (flashlm node).</summary>
    public static ClusterSettings Cluster(Akka.Configuration.Config config)
    {
        var c = WithReference(config);
        var host = Str(c, "flashlm.cluster.hostname");
        if (host.Length == 0 || Uri.CheckHostName(host) == UriHostNameType.Unknown)
            throw new SettingsException("flashlm.cluster.hostname", $"'{host}' is not a host name or address");
        string[] seeds;
        try
        {
            var v = c.GetValue("flashlm.cluster.seeds");
            seeds = v is null ? [] : v.IsString() ? v.GetString().Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries) : [.. v.GetStringList()];
        }
        catch (Exception e)
        {
            throw new SettingsException("flashlm.cluster.seeds", $"not a list of node addresses: {e.Message}");
        }
        foreach (var seed in seeds)
            if (!seed.StartsWith("akka.tcp://", StringComparison.Ordinal) || !Uri.TryCreate(seed.Replace("akka.tcp://", "tcp://"), UriKind.Absolute, out var u) || u.Port <= 0)
                throw new SettingsException("flashlm.cluster.seeds", $"'{seed}' is not a node address akka.tcp://flashlm@HOST:PORT");
        TimeSpan Duration(string key) => StallTimeout(c, key) ?? throw new SettingsException(key, "must be a duration (e.g. 5s), not off");
        return new ClusterSettings(host, Int(c, "flashlm.cluster.port", 0, 65535), seeds, Duration("flashlm.cluster.start-timeout"),
            Duration("flashlm.cluster.step-timeout"), Int(c, "flashlm.cluster.max-requests", 1, 1 << 16), Duration("flashlm.cluster.failure-detection"),
            Duration("flashlm.cluster.down-after"), Duration("flashlm.cluster.conversation-idle"), Int(c, "flashlm.cluster.shards", 1, 1 << 20));
    }

    /// <summary>Reads and validates every flashlm.* key.</summary>
    public static RuntimeSettings From(Akka.Configuration.Config config)
    {
        var c = WithReference(config);
        string budgetText = Str(c, "flashlm.dram-budget");
        long? budget = budgetText.Equals("auto", StringComparison.OrdinalIgnoreCase) ? null : Size(c, "flashlm.dram-budget", min: 1);
        string predictor = Str(c, "flashlm.predictor").ToLowerInvariant();
        var kind = predictor switch
        {
            "oracle" => PredictorKind.Oracle,
            "all" or "none" or "dense" => PredictorKind.All,
            "lowrank" => PredictorKind.LowRank,
            "lookahead" => PredictorKind.Lookahead,
            "auto" => PredictorKind.Auto,
            "gate" or "gate-resident" => PredictorKind.Gate,
            "trace" => PredictorKind.Trace,
            _ => throw new SettingsException("flashlm.predictor", $"unknown predictor '{predictor}' (expected auto, gate, oracle, all, lowrank, lookahead or trace)"),
        };
        string sparsityText = Str(c, "flashlm.sparsity");
        double? sparsity = null;
        if (!sparsityText.Equals("manifest", StringComparison.OrdinalIgnoreCase))
        {
            if (!double.TryParse(sparsityText.TrimEnd('%'), NumberStyles.Float, CultureInfo.InvariantCulture, out var s))
                throw new SettingsException("flashlm.sparsity", $"'{sparsityText}' is not a number in [0, 1) or 'manifest'");
            if (sparsityText.EndsWith('%')) s /= 100;
            if (!(s >= 0 && s < 1)) throw new SettingsException("flashlm.sparsity", $"{s} is outside [0, 1)");
            sparsity = s;
        }
        int maxRead = (int)Size(c, "flashlm.loader.max-read", min: 4096, max: 1L << 30);
        if (maxRead % 4096 != 0) throw new SettingsException("flashlm.loader.max-read", $"{maxRead} is not a multiple of 4096");
        var loader = new LoaderSettings(
            Int(c, "flashlm.loader.readers", 1, 1024),
            Int(c, "flashlm.loader.threads", 1, 1024),
            Size(c, "flashlm.loader.coalesce-gap", min: 0, max: 1L << 30),
            maxRead,
            Bool(c, "flashlm.loader.direct-io"),
            Int(c, "flashlm.loader.max-attempts", 1, 100),
            Int(c, "flashlm.loader.debug-delay-ms", 0, 60_000),
            Bool(c, "flashlm.loader.split-parts"),
            Bool(c, "flashlm.loader.verify-reads"),
            Bool(c, "flashlm.loader.skip-resident"),
            Str(c, "flashlm.loader.engine").ToLowerInvariant() switch
            {
                "threads" => LoaderEngine.Threads,
                "io_uring" or "io-uring" or "uring" => LoaderEngine.IoUring,
                "auto" => LoaderEngine.Auto,
                var v => throw new SettingsException("flashlm.loader.engine", $"'{v}' is not threads, io_uring or auto"),
            });
        return new RuntimeSettings(budget, Int(c, "flashlm.window", 0, 1000), kind, Bool(c, "flashlm.lookahead"), sparsity,
            Bool(c, "flashlm.prefill-sequential"), loader, Bool(c, "flashlm.measure-predictor"), Int(c, "flashlm.max-sessions", 1, 4096),
            Str(c, "flashlm.session-overflow").ToLowerInvariant() switch
            {
                "wait" => false,
                "refuse" => true,
                var v => throw new SettingsException("flashlm.session-overflow", $"'{v}' is not wait or refuse"),
            }, Bool(c, "flashlm.stream-attention"), StallTimeout(c, "flashlm.session-stall-timeout"),
            Str(c, "flashlm.lookahead-guess").ToLowerInvariant() switch
            {
                "auto" => LookaheadGuess.Auto,
                "gate" => LookaheadGuess.Gate,
                "previous" => LookaheadGuess.Previous,
                var v => throw new SettingsException("flashlm.lookahead-guess", $"'{v}' is not auto, gate or previous"),
            },
            Str(c, "flashlm.process-reserve").Equals("auto", StringComparison.OrdinalIgnoreCase) ? null : Size(c, "flashlm.process-reserve", min: 0),
            Size(c, "flashlm.process-allowance", min: 0),
            TraceOf(c, kind),
            PinShare(c, "flashlm.pin"),
            Str(c, "flashlm.moe-prefetch-experts").Equals("all", StringComparison.OrdinalIgnoreCase) ? 0 : Int(c, "flashlm.moe-prefetch-experts", 1, 4096),
            Bool(c, "flashlm.hits-first"), LayersOf(c));
    }

    /// <summary>flashlm.layers: all, or the range FROM-TO this node holds (a stage of a pipeline across nodes).</summary>
    private static FlashLm.Formats.LayerRange? LayersOf(Akka.Configuration.Config c)
    {
        string text = Str(c, "flashlm.layers");
        if (text.Equals("all", StringComparison.OrdinalIgnoreCase)) return null;
        try
        {
            return FlashLm.Formats.LayerRange.Parse(text);
        }
        catch (FormatException e)
        {
            throw new SettingsException("flashlm.layers", e.Message + " or all");
        }
    }

    /// <summary>flashlm.trace, checked whatever the predictor (a bad value is an error wherever it is); the file is required with predictor = trace.</summary>
    private static TraceSettings TraceOf(Akka.Configuration.Config c, PredictorKind kind)
    {
        double recall = Fraction(c, "flashlm.trace.recall", minExclusive: 0, max: 1);
        double over = Fraction(c, "flashlm.trace.over-selection", minExclusive: 0, max: 1000);
        if (over < recall) throw new SettingsException("flashlm.trace.over-selection", $"{over} is below flashlm.trace.recall ({recall}): the predicted set holds at least the kept exact neurons");
        string file = Str(c, "flashlm.trace.file");
        if (kind == PredictorKind.Trace && file.Length == 0)
            throw new SettingsException("flashlm.trace.file", "predictor = trace needs an activation trace file (flashlm-bench records one)");
        string seedText = Str(c, "flashlm.trace.seed");
        if (!ulong.TryParse(seedText, NumberStyles.None, CultureInfo.InvariantCulture, out var seed))
            throw new SettingsException("flashlm.trace.seed", $"'{seedText}' is not a non-negative integer");
        return new TraceSettings(file, recall, over, Int(c, "flashlm.trace.rank", 1, 1 << 16), seed);
    }

    /// <summary>A number in (minExclusive, max].</summary>
    private static double Fraction(Akka.Configuration.Config c, string key, double minExclusive, double max)
    {
        string text = Str(c, key);
        if (!double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out var v) || !(v > minExclusive && v <= max))
            throw new SettingsException(key, $"'{text}' is not a number in ({minExclusive}, {max}]");
        return v;
    }

    /// <summary>flashlm.pin: "auto" (null), "off" (0) or the share of each layer's cache rows pinned, in [0, 1) (a percentage too).</summary>
    private static double? PinShare(Akka.Configuration.Config c, string key)
    {
        var text = Str(c, key).Trim();
        if (text.Equals("auto", StringComparison.OrdinalIgnoreCase)) return null;
        if (text.Equals("off", StringComparison.OrdinalIgnoreCase)) return 0;
        if (!double.TryParse(text.TrimEnd('%'), NumberStyles.Float, CultureInfo.InvariantCulture, out var share))
            throw new SettingsException(key, $"'{text}' is not auto, off or a share of each layer's cache rows in [0, 1) (e.g. 0.3 or 30%)");
        if (text.EndsWith('%')) share /= 100;
        if (!(share >= 0 && share < 1))
            throw new SettingsException(key, $"{text} is outside [0, 1): the window cache needs rows of its own (off, or 0, pins nothing)");
        return share;
    }

    /// <summary>A duration with units (e.g. 60s, 500ms, 2m), or off; null when off.</summary>
    private static TimeSpan? StallTimeout(Akka.Configuration.Config c, string key)
    {
        var text = Str(c, key);
        if (text.Equals("off", StringComparison.OrdinalIgnoreCase)) return null;
        TimeSpan t;
        try
        {
            t = c.GetTimeSpan(key, allowInfinite: false);
        }
        catch (Exception e)
        {
            throw new SettingsException(key, $"'{text}' is not a duration with units (e.g. 60s, 500ms) or off: {e.Message}");
        }
        if (t <= TimeSpan.Zero) throw new SettingsException(key, $"'{text}' must be positive (or off)");
        return t;
    }

    private static string Str(Akka.Configuration.Config c, string key)
    {
        if (!c.HasPath(key)) throw new SettingsException(key, "missing");
        try
        {
            return c.GetString(key) ?? throw new SettingsException(key, "missing");
        }
        catch (Exception e) when (e is not SettingsException)
        {
            throw new SettingsException(key, $"not a single value: {e.Message}");
        }
    }

    private static int Int(Akka.Configuration.Config c, string key, int min, int max)
    {
        var s = Str(c, key);
        if (!int.TryParse(s, NumberStyles.Integer, CultureInfo.InvariantCulture, out var v))
            throw new SettingsException(key, $"'{s}' is not an integer");
        if (v < min || v > max) throw new SettingsException(key, $"{v} is outside {min}..{max}");
        return v;
    }

    private static bool Bool(Akka.Configuration.Config c, string key)
    {
        var s = Str(c, key).ToLowerInvariant();
        return s switch
        {
            "on" or "true" or "yes" => true,
            "off" or "false" or "no" => false,
            _ => throw new SettingsException(key, $"'{s}' is not on/off"),
        };
    }

    private static long Size(Akka.Configuration.Config c, string key, long min, long max = long.MaxValue)
    {
        var s = Str(c, key);
        if (!ByteSize.TryParse(s, out var v)) throw new SettingsException(key, $"'{s}' is not a size (e.g. 4096, 32KiB, 512MiB, 4GiB)");
        if (v < min || v > max) throw new SettingsException(key, $"{s} is outside {min}..{max} bytes");
        return v;
    }
}

/// <summary>Parses sizes such as 4096, 32KiB, 512MiB, 4GiB, 1.5GB (binary multiples for K/M/G, with or without 'iB').</summary>
public static class ByteSize
{
    /// <summary>Parses a size; false when <paramref name="text"/> is not one.</summary>
    public static bool TryParse(string text, out long bytes)
    {
        bytes = 0;
        var s = text.Trim();
        int i = 0;
        while (i < s.Length && (char.IsDigit(s[i]) || s[i] == '.')) i++;
        if (i == 0 || !double.TryParse(s[..i], NumberStyles.Float, CultureInfo.InvariantCulture, out var n)) return false;
        var unit = s[i..].Trim().ToLowerInvariant();
        long mult = unit switch
        {
            "" or "b" => 1,
            "k" or "kb" or "kib" => 1L << 10,
            "m" or "mb" or "mib" => 1L << 20,
            "g" or "gb" or "gib" => 1L << 30,
            "t" or "tb" or "tib" => 1L << 40,
            _ => 0,
        };
        if (mult == 0 || n < 0 || n * mult > long.MaxValue / 2) return false;
        bytes = (long)(n * mult);
        return true;
    }

    /// <summary>Parses a size or throws ArgumentException naming <paramref name="what"/>.</summary>
    public static long Parse(string text, string what) =>
        TryParse(text, out var v) ? v : throw new ArgumentException($"{what}: '{text}' is not a size (e.g. 64MiB, 4GiB)");
}

/// <summary>flashlm.server: the HTTP server's address, model id, queue and request limits.</summary>
/// <param name="ModelName">The model id; null: the model file's name.</param>
/// <summary>flashlm.cluster: how a node joins the cluster and how long cluster steps may take (see reference.conf).</summary>
public sealed record ClusterSettings(string Hostname, int Port, string[] Seeds, TimeSpan StartTimeout, TimeSpan StepTimeout, int MaxRequests,
    TimeSpan FailureDetection, TimeSpan DownAfter, TimeSpan ConversationIdle, int Shards);

public sealed record ServerSettings(string Listen, string? ModelName, int QueueLimit, TimeSpan QueueTimeout, long MaxRequestBytes);
