using Xunit;

namespace FlashLm.Tests;

/// <summary>Locates ../shared/models (beside the repository); tests that need it skip when it is absent.</summary>
public static class SharedModels
{
    public const string MissingReason = "../shared/models is not present beside the repository: this test needs the real stories260K model and its reference outputs";

    /// <summary>The shared models folder, or null when it cannot be found.</summary>
    public static string? Dir { get; } = Find();

    private static string? Find()
    {
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null; d = d.Parent)
        {
            var candidate = Path.Combine(d.FullName, "shared", "models");
            if (Directory.Exists(Path.Combine(candidate, "stories260K"))) return candidate;
        }
        return null;
    }

    public static string Stories => Path.Combine(Dir ?? throw new InvalidOperationException(MissingReason), "stories260K");
    public static string StoriesBin => Path.Combine(Stories, "stories260K.bin");
    public static string StoriesGguf => Path.Combine(Stories, "stories260K.gguf");
    public static string Tok512 => Path.Combine(Stories, "tok512.bin");
    /// <summary>A path under the shared models folder (only call from tests marked as requiring it).</summary>
    public static string File(params string[] parts) =>
        Path.Combine([Dir ?? throw new InvalidOperationException(MissingReason), .. parts]);

    public static string Reference(string name) => Path.Combine(Stories, "reference", name);

    /// <summary>The token ids of a reference .tokens.txt file (its "input_tokens: ..." line).</summary>
    public static int[] ReferenceTokens(string[] lines)
    {
        var input = lines.First(l => l.StartsWith("input_tokens", StringComparison.Ordinal));
        return input[(input.IndexOf(':') + 1)..].Split(' ', StringSplitOptions.RemoveEmptyEntries).Select(int.Parse).ToArray();
    }
}

/// <summary>A fact that is skipped, with the reason, when ../shared/models is missing.</summary>
public sealed class RequiresSharedModelsFactAttribute : FactAttribute
{
    public RequiresSharedModelsFactAttribute()
    {
        if (SharedModels.Dir is null) Skip = SharedModels.MissingReason;
    }
}

/// <summary>A theory that is skipped, with the reason, when ../shared/models is missing.</summary>
public sealed class RequiresSharedModelsTheoryAttribute : TheoryAttribute
{
    public RequiresSharedModelsTheoryAttribute()
    {
        if (SharedModels.Dir is null) Skip = SharedModels.MissingReason;
    }
}
