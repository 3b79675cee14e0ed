using Xunit;

namespace FlashLm.Tests;

/// <summary>Locates ../shared/models next to the repository (walking up from the test assembly).</summary>
public static class SharedModels
{
    /// <summary>The shared models folder, or null when it is absent.</summary>
    public static string? Dir { get; } = Find();

    private static string? Find()
    {
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null; d = d.Parent)
        {
            var candidate = Path.Combine(d.FullName, "shared", "models");
            if (Directory.Exists(candidate)) return candidate;
        }
        return null;
    }
}

/// <summary>A fact that is skipped, with the reason, when ../shared/models is absent.</summary>
public sealed class RequiresSharedModelsFactAttribute : FactAttribute
{
    public RequiresSharedModelsFactAttribute()
    {
        if (SharedModels.Dir is null) Skip = "../shared/models (stories260K) is not present next to the repository";
    }
}
