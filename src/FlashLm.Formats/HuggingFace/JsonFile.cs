using System.Text.Json;

namespace FlashLm.Formats.HuggingFace;

/// <summary>A small JSON file (config.json, index, tokenizer metadata) whose errors name the file and key.</summary>
internal sealed class JsonFile : IDisposable
{
    private readonly JsonDocument _doc;
    public string Path { get; }
    public JsonElement Root => _doc.RootElement;

    private JsonFile(string path, JsonDocument doc)
    {
        Path = path;
        _doc = doc;
    }

    /// <param name="what">What the file is, for the "missing" message.</param>
    public static JsonFile Open(string path, string what)
    {
        if (!File.Exists(path)) throw new ModelFormatException(path, $"{what} not found");
        return Parse(path, File.ReadAllBytes(path));
    }

    public static JsonFile Parse(string path, byte[] bytes)
    {
        try
        {
            var doc = JsonDocument.Parse(bytes);
            if (doc.RootElement.ValueKind != JsonValueKind.Object)
            {
                doc.Dispose();
                throw new ModelFormatException(path, "the JSON root is not an object", offset: 0);
            }
            return new JsonFile(path, doc);
        }
        catch (JsonException e)
        {
            throw new ModelFormatException(path, $"not valid JSON: {e.Message}", offset: e.LineNumber == 0 ? e.BytePositionInLine : null, inner: e);
        }
    }

    public bool Has(string key) => Root.TryGetProperty(key, out var v) && v.ValueKind != JsonValueKind.Null;

    public int Int(string key, int? fallback = null)
    {
        if (!Root.TryGetProperty(key, out var v) || v.ValueKind == JsonValueKind.Null)
            return fallback ?? throw new ModelFormatException(Path, "required key is missing", key);
        if (v.ValueKind != JsonValueKind.Number || !v.TryGetInt32(out var i))
            throw new ModelFormatException(Path, $"expected an integer, got {Raw(v)}", key);
        return i;
    }

    public float Float(string key, float? fallback = null)
    {
        if (!Root.TryGetProperty(key, out var v) || v.ValueKind == JsonValueKind.Null)
            return fallback ?? throw new ModelFormatException(Path, "required key is missing", key);
        if (v.ValueKind != JsonValueKind.Number || !v.TryGetDouble(out var d))
            throw new ModelFormatException(Path, $"expected a number, got {Raw(v)}", key);
        return (float)d;
    }

    public bool Bool(string key, bool? fallback = null)
    {
        if (!Root.TryGetProperty(key, out var v) || v.ValueKind == JsonValueKind.Null)
            return fallback ?? throw new ModelFormatException(Path, "required key is missing", key);
        return v.ValueKind switch
        {
            JsonValueKind.True => true,
            JsonValueKind.False => false,
            _ => throw new ModelFormatException(Path, $"expected true or false, got {Raw(v)}", key),
        };
    }

    public string? String(string key)
    {
        if (!Root.TryGetProperty(key, out var v) || v.ValueKind == JsonValueKind.Null) return null;
        return v.ValueKind == JsonValueKind.String ? Text(v, key) : throw new ModelFormatException(Path, $"expected a string, got {Raw(v)}", key);
    }

    /// <summary>A JSON value quoted in a message: escaped and cut short (a corrupt file can make it megabytes of anything).</summary>
    public static string Raw(JsonElement v)
    {
        try
        {
            return ModelFormatException.Printable(v.GetRawText(), 40);
        }
        catch (InvalidOperationException)
        {
            return $"a {v.ValueKind.ToString().ToLowerInvariant()} that is not valid UTF-8";
        }
    }

    /// <summary>A string value; invalid UTF-8 (which JsonDocument only finds when the string is read) is a format error naming the key.</summary>
    public string Text(JsonElement v, string key)
    {
        try
        {
            return v.GetString()!;
        }
        catch (InvalidOperationException e)
        {
            throw new ModelFormatException(Path, $"string value is not valid UTF-8: {e.Message}", key, inner: e);
        }
    }

    public void Dispose() => _doc.Dispose();
}
