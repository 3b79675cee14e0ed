using Xunit;
namespace FlashLm.Tests;

/// <summary>Finds ../shared/models next to the repository (walking up from the test assembly).</summary>
public static class SharedModels
{
    private static readonly Lazy<string?> Found = new(() =>
    {
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null; d = d.Parent)
        {
            var candidate = System.IO.Path.Combine(d.FullName, "shared", "models");
            if (Directory.Exists(candidate)) return candidate;
        }
        return null;
    });

    /// <summary>The shared models folder, or null when it is absent.</summary>
    public static string? Dir => Found.Value;

    public static string Path(params string[] parts) =>
        System.IO.Path.Combine([Dir ?? throw new InvalidOperationException("shared/models is absent"), .. parts]);

    public const string SkipReason = "../shared/models (the stories260K test model) is not present next to the repository";
}

/// <summary>A fact that is skipped, with the reason, when ../shared/models is absent.</summary>
public sealed class RequiresSharedModelsFactAttribute : FactAttribute
{
    public RequiresSharedModelsFactAttribute()
    {
        if (SharedModels.Dir is null) Skip = SharedModels.SkipReason;
    }
}
