using System.Globalization;

namespace FlashLm.Formats;

/// <summary>
/// A range of a model's layers, [From, To): what one node of a pipeline across machines holds. Written "4-8" (From-To,
/// To exclusive), as the --layers option and cluster roles spell it.
/// </summary>
public readonly record struct LayerRange(int From, int To)
{
    /// <summary>Layers in the range.</summary>
    public int Count => To - From;

    /// <summary>True when <paramref name="layer"/> is in the range.</summary>
    public bool Contains(int layer) => layer >= From && layer < To;

    /// <summary>"From-To".</summary>
    public override string ToString() => $"{From}-{To}";

    /// <summary>Parses "From-To" (0 &lt;= From &lt; To); throws <see cref="FormatException"/> naming the text otherwise.</summary>
    public static LayerRange Parse(string text)
    {
        int dash = text.IndexOf('-');
        if (dash > 0
            && int.TryParse(text.AsSpan(0, dash), NumberStyles.None, CultureInfo.InvariantCulture, out int from)
            && int.TryParse(text.AsSpan(dash + 1), NumberStyles.None, CultureInfo.InvariantCulture, out int to)
            && from < to)
            return new LayerRange(from, to);
        throw new FormatException($"'{ModelFormatException.Printable(text, 40)}' is not a layer range FROM-TO with FROM < TO (TO exclusive), e.g. 0-4");
    }

    /// <summary>Splits a "blk.N.rest" tensor name into its layer and the rest; false for tensors outside the blocks.</summary>
    public static bool BlockOf(string name, out int layer, out string rest)
    {
        layer = -1;
        rest = "";
        if (!name.StartsWith("blk.", StringComparison.Ordinal)) return false;
        int dot = name.IndexOf('.', 4);
        if (dot < 0 || !int.TryParse(name.AsSpan(4, dot - 4), NumberStyles.None, CultureInfo.InvariantCulture, out layer)) return false;
        rest = name[(dot + 1)..];
        return true;
    }
}
