namespace FlashLm.Hosting;

/// <summary>
/// What <see cref="FlashLmServiceCollectionExtensions.AddFlashLm"/> opens. Bound from the configuration section
/// "FlashLm" first, then the code's configure delegate (which wins).
/// </summary>
public sealed class FlashLmOptions
{
    /// <summary>The configuration section the options are bound from.</summary>
    public const string Section = "FlashLm";

    /// <summary>The model: a flash-layout folder, or any format ModelLoader opens (converted once into <see cref="LayoutCacheFolder"/>).</summary>
    public string? ModelPath { get; set; }

    /// <summary>Where converted layouts are kept (one subfolder per model file); null: $FLASHLM_CACHE, $XDG_CACHE_HOME/flashlm or ~/.cache/flashlm, under "layouts".</summary>
    public string? LayoutCacheFolder { get; set; }

    /// <summary>HOCON profiles, applied in order (later wins) over reference.conf.</summary>
    public List<string> ConfigFiles { get; set; } = [];

    /// <summary>key=value overrides (the "flashlm." prefix is optional), applied over the profiles.</summary>
    public Dictionary<string, string> Settings { get; set; } = new(StringComparer.Ordinal);

    /// <summary>Positions each session may hold (KV cache size); 0: the model's context length.</summary>
    public int Positions { get; set; }

    /// <summary>DRAM budget as a size ("64MiB", "2GiB", "auto"); null: the configuration's flashlm.dram-budget.</summary>
    public string? DramBudget { get; set; }

    /// <summary>Sessions that may run at once (flashlm.max-sessions); null: the configuration's value.</summary>
    public int? MaxSessions { get; set; }

    /// <summary>Name of the actor system created when the host has none registered.</summary>
    public string ActorSystemName { get; set; } = "flashlm";

    /// <summary>Use an <c>Akka.Actor.ActorSystem</c> registered in DI (e.g. by Akka.Hosting) when there is one.</summary>
    public bool UseHostActorSystem { get; set; } = true;

    /// <summary>The key=value overrides these options amount to (Settings, then the typed properties, which win).</summary>
    public IReadOnlyList<string> Overrides()
    {
        var list = Settings.Select(kv => $"{kv.Key}={kv.Value}").ToList();
        if (DramBudget is { Length: > 0 } budget) list.Add($"dram-budget={budget}");
        if (MaxSessions is { } sessions) list.Add($"max-sessions={sessions}");
        return list;
    }
}
