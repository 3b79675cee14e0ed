namespace FlashLm.Formats;

/// <summary>
/// A model, tokenizer or layout file is malformed, truncated or inconsistent.
/// The message always names the file and, where known, the tensor or key and the byte offset.
/// </summary>
public sealed class ModelFormatException : Exception
{
    /// <summary>The file (or folder) that is wrong.</summary>
    public string FilePath { get; }

    /// <summary>The tensor name or metadata key involved, if any.</summary>
    public string? Key { get; }

    /// <summary>The byte offset in <see cref="FilePath"/> where the problem was found, if known.</summary>
    public long? Offset { get; }

    public ModelFormatException(string filePath, string problem, string? key = null, long? offset = null, Exception? inner = null)
        : base(Compose(filePath, problem, key, offset), inner)
    {
        FilePath = filePath;
        Key = key;
        Offset = offset;
    }

    private static string Compose(string filePath, string problem, string? key, long? offset)
    {
        var where = filePath;
        if (key is not null) where += $", '{key}'";
        if (offset is not null) where += $", offset {offset}";
        return $"{where}: {problem}";
    }
}
