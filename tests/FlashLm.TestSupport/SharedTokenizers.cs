using Xunit;

namespace FlashLm.Tests;

/// <summary>
/// Locates ../shared/tokenizers (llama.cpp's tokenizer test suite: ggml-vocab-NAME.gguf with .inp test strings and
/// .out expected ids) beside the repository; tests that need it skip when it is absent.
/// </summary>
public static class SharedTokenizers
{
    public const string MissingReason = "../shared/tokenizers is not present beside the repository: this test needs llama.cpp's vocabulary-only GGUF files and their expected ids";

    /// <summary>The tokenizer families the suite holds.</summary>
    public static readonly string[] Families = ["llama-spm", "gpt-2", "falcon", "deepseek-llm", "mpt"];

    public static TheoryData<string> FamilyData => new(Families);

    /// <summary>The shared tokenizers folder, or null when it cannot be found.</summary>
    public static string? Dir { get; } = Find();

    private static string? Find()
    {
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null; d = d.Parent)
        {
            var candidate = Path.Combine(d.FullName, "shared", "tokenizers");
            if (File.Exists(Path.Combine(candidate, "ggml-vocab-gpt-2.gguf"))) return candidate;
        }
        return null;
    }

    public static string Gguf(string family) =>
        Path.Combine(Dir ?? throw new InvalidOperationException(MissingReason), $"ggml-vocab-{family}.gguf");

    /// <summary>
    /// The test strings and their expected ids: the .inp file's strings are separated by lines reading exactly
    /// __ggml_vocab_test__ (a string's own trailing newline is part of it), one .out line per string.
    /// </summary>
    public static (string Text, int[] Ids)[] Cases(string family)
    {
        var gguf = Gguf(family);
        var texts = File.ReadAllText(gguf + ".inp").Split("\n__ggml_vocab_test__\n");
        var lines = File.ReadAllLines(gguf + ".out");
        return lines.Select((line, i) => (texts[i], line.Split(' ', StringSplitOptions.RemoveEmptyEntries).Select(int.Parse).ToArray())).ToArray();
    }
}

/// <summary>A theory that is skipped, with the reason, when ../shared/tokenizers is missing.</summary>
public sealed class RequiresSharedTokenizersTheoryAttribute : TheoryAttribute
{
    public RequiresSharedTokenizersTheoryAttribute()
    {
        if (SharedTokenizers.Dir is null) Skip = SharedTokenizers.MissingReason;
    }
}
