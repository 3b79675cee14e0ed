using Xunit;
namespace FlashLm.Tests;

/// <summary>Locates ../shared/models (next to the repository) from the test assembly's folder.</summary>
public static class SharedModels
{
    private static readonly Lazy<string?> Found = new(() =>
    {
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null; d = d.Parent)
        {
            var candidate = Path.Combine(d.FullName, "shared", "models");
            if (Directory.Exists(candidate)) return candidate;
        }
        return null;
    });

    /// <summary>The shared models folder, or null when it is absent.</summary>
    public static string? Dir => Found.Value;

    /// <summary>A path under the shared models folder (only call from tests marked <see cref="RequiresSharedModelsFactAttribute"/>).</summary>
    public static string File(params string[] parts) =>
        Path.Combine([Dir ?? throw new InvalidOperationException("shared/models is absent"), .. parts]);
}

/// <summary>A fact that is skipped, with the reason, when ../shared/models is absent.</summary>
public sealed class RequiresSharedModelsFactAttribute : FactAttribute
{
    public RequiresSharedModelsFactAttribute()
    {
        if (SharedModels.Dir is null)
            Skip = "needs the shared test models: no shared/models folder found above the test assembly (expected <repo>/../shared/models)";
    }
}
