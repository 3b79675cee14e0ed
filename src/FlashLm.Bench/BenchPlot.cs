using System.Globalization;
using ScottPlot;
using SkiaSharp;

namespace FlashLm.Bench;

/// <summary>
/// One bar of the bench figure: a rung (or llama.cpp) with its wall time per token and the parts of it spent
/// computing, managing memory and predicting. The rest of the wall time is drawn as waiting for flash.
/// </summary>
public sealed record BenchPlotBar(string Name, double MsPerToken, double ComputeMs, double MemMs, double PredictMs = 0);

/// <summary>
/// The per-token latency breakdown as a PNG, like the figure in "LLM in a flash": one stacked bar per rung, in the
/// given order, with compute, memory management and waiting for flash (the token's wall time less the other two,
/// never below zero), each bar labelled with its total ms per token. The axis is linear: on a log axis the heights of
/// stacked segments would not add up to their bar.
/// </summary>
internal static class BenchPlot
{
    /// <summary>The image's size in pixels.</summary>
    private const int Width = 1000, Height = 600;

    /// <summary>
    /// The one font of the figure: DejaVu Sans embedded in this assembly (Fonts/, with its licence), served to ScottPlot
    /// under a name of its own. ScottPlot ships no font and the Linux SkiaSharp build without dependencies finds no
    /// system font (no fontconfig), so without it the figure would have no text on such a machine.
    /// </summary>
    private const string FontName = "FlashLm DejaVu Sans";

    private static readonly Lazy<string> EmbeddedFont = new(() =>
    {
        lock (Fonts.FontResolvers) Fonts.FontResolvers.Insert(0, new EmbeddedFontResolver());
        return FontName;
    });

    private static readonly Color ComputeColor = Color.FromHex("#4C72B0");
    private static readonly Color MemColor = Color.FromHex("#DD8452");
    private static readonly Color WaitColor = Color.FromHex("#C44E52");
    private static readonly Color PredictColor = Color.FromHex("#55A868");
    private static readonly Color TotalColor = Color.FromHex("#8C8C8C");

    /// <summary>
    /// Writes the figure to <paramref name="path"/> (PNG, 1000 x 600 pixels), replacing any file there. A bar whose
    /// compute and memory times are both 0 (llama.cpp, measured only as a total) is drawn as one grey segment,
    /// "total (no breakdown)", rather than as waiting for flash. Where compute and memory add up to more than the
    /// total (bench reports their means against a median total), the bar is their sum, without a waiting segment, and is
    /// still labelled with the total.
    /// </summary>
    /// <exception cref="ArgumentException">No bars, a bar without a name, a negative, NaN or infinite time, or a
    /// path that is empty or whose folder does not exist.</exception>
    public static void Write(string path, IReadOnlyList<BenchPlotBar> bars, string title)
    {
        ArgumentNullException.ThrowIfNull(bars);
        string full = CheckPath(path);
        Check(bars);

        string font = EmbeddedFont.Value;
        var plot = new Plot();
        try
        {
            Draw(plot, bars, title, font);
            plot.SavePng(full, Width, Height);
        }
        finally
        {
            plot.Dispose();
        }
    }

    /// <summary>Checks that a figure can be written at <paramref name="path"/>; returns the full path.</summary>
    /// <exception cref="ArgumentException">An empty path, a folder, or a path whose folder does not exist.</exception>
    public static string CheckPath(string path)
    {
        if (string.IsNullOrWhiteSpace(path)) throw new ArgumentException("the plot's path is empty", nameof(path));
        string full;
        try
        {
            full = Path.GetFullPath(path);
        }
        catch (Exception e) when (e is ArgumentException or NotSupportedException or PathTooLongException)
        {
            throw new ArgumentException($"the plot's path '{path}' is not a valid path: {e.Message}", nameof(path), e);
        }
        if (Directory.Exists(full)) throw new ArgumentException($"the plot's path '{path}' is a folder, not a file", nameof(path));
        string? dir = Path.GetDirectoryName(full);
        if (dir is null || !Directory.Exists(dir))
            throw new ArgumentException($"the folder of the plot's path '{path}' does not exist ({dir})", nameof(path));
        return full;
    }

    private static void Check(IReadOnlyList<BenchPlotBar> bars)
    {
        if (bars.Count == 0) throw new ArgumentException("no bars to plot: the list is empty", nameof(bars));
        for (int i = 0; i < bars.Count; i++)
        {
            var b = bars[i] ?? throw new ArgumentException($"bar {i} is null", nameof(bars));
            if (string.IsNullOrWhiteSpace(b.Name)) throw new ArgumentException($"bar {i} has no name", nameof(bars));
            CheckValue(b.Name, nameof(BenchPlotBar.MsPerToken), b.MsPerToken);
            CheckValue(b.Name, nameof(BenchPlotBar.ComputeMs), b.ComputeMs);
            CheckValue(b.Name, nameof(BenchPlotBar.MemMs), b.MemMs);
            CheckValue(b.Name, nameof(BenchPlotBar.PredictMs), b.PredictMs);
        }
    }

    private static void CheckValue(string bar, string field, double value)
    {
        if (double.IsNaN(value)) throw new ArgumentException($"bar '{bar}': {field} is NaN", "bars");
        if (double.IsInfinity(value)) throw new ArgumentException($"bar '{bar}': {field} is infinite", "bars");
        if (value < 0) throw new ArgumentException($"bar '{bar}': {field} is negative ({value.ToString(CultureInfo.InvariantCulture)})", "bars");
    }

    private static void Draw(Plot plot, IReadOnlyList<BenchPlotBar> bars, string title, string font)
    {
        var segments = new List<Bar>();
        double top = 0;
        bool anyBreakdown = false, anyTotalOnly = false;
        for (int i = 0; i < bars.Count; i++)
        {
            var b = bars[i];
            if (b.ComputeMs == 0 && b.MemMs == 0 && b.PredictMs == 0)
            {
                anyTotalOnly = true;
                segments.Add(Segment(i, 0, b.MsPerToken, TotalColor));
                top = Math.Max(top, b.MsPerToken);
                continue;
            }
            anyBreakdown = true;
            double wait = Math.Max(0, b.MsPerToken - b.ComputeMs - b.MemMs - b.PredictMs);
            double y = 0;
            foreach (var (ms, color) in new[] { (b.ComputeMs, ComputeColor), (b.MemMs, MemColor), (b.PredictMs, PredictColor), (wait, WaitColor) })
            {
                if (ms > 0) segments.Add(Segment(i, y, y + ms, color));
                y += ms;
            }
            top = Math.Max(top, Math.Max(y, b.MsPerToken));
        }
        plot.Add.Bars(segments);

        // Each bar's total above it.
        if (top == 0) top = 1;
        for (int i = 0; i < bars.Count; i++)
        {
            var b = bars[i];
            double barTop = Math.Max(b.MsPerToken, b.ComputeMs + b.MemMs + b.PredictMs);
            var text = plot.Add.Text(Total(b.MsPerToken), i, barTop + top * 0.01);
            text.LabelAlignment = Alignment.LowerCenter;
            text.LabelFontSize = 14;
            text.LabelFontColor = Colors.Black;
            text.LabelFontName = font;
        }

        plot.Axes.Bottom.SetTicks(Enumerable.Range(0, bars.Count).Select(i => (double)i).ToArray(), bars.Select(b => b.Name).ToArray());
        plot.Axes.Bottom.MajorTickStyle.Length = 0;
        plot.Axes.Bottom.TickLabelStyle.FontSize = bars.Count > 5 ? 12 : 14;
        plot.Axes.Left.TickLabelStyle.FontSize = 13;
        plot.Axes.Left.TickGenerator = new ScottPlot.TickGenerators.NumericAutomatic { TickDensity = 0.5 };
        plot.Axes.SetLimitsX(-0.6, bars.Count - 0.4);
        plot.Axes.SetLimitsY(0, top * 1.12);
        plot.Axes.Left.Label.Text = "ms per token";
        plot.Axes.Left.Label.FontSize = 15;
        plot.Grid.XAxisStyle.MajorLineStyle.Width = 0;
        if (!string.IsNullOrWhiteSpace(title)) plot.Title(title, 17);

        var legend = new List<LegendItem>();
        if (anyBreakdown)
        {
            legend.Add(new LegendItem { LabelText = "compute", FillColor = ComputeColor });
            legend.Add(new LegendItem { LabelText = "memory management", FillColor = MemColor });
            if (bars.Any(b => b.PredictMs > 0)) legend.Add(new LegendItem { LabelText = "predictor", FillColor = PredictColor });
            legend.Add(new LegendItem { LabelText = "waiting for flash", FillColor = WaitColor });
        }
        if (anyTotalOnly) legend.Add(new LegendItem { LabelText = "total (no breakdown)", FillColor = TotalColor });
        // Outside the data area, under the bars, so that it never hides one.
        plot.Legend.ManualItems.AddRange(legend);
        plot.Legend.Orientation = Orientation.Horizontal;
        plot.Legend.FontSize = 13;
        plot.Legend.FontName = font;
        plot.ShowLegend(Edge.Bottom);
        plot.Font.Set(font);
    }

    private static Bar Segment(int position, double from, double to, Color color) => new()
    {
        Position = position,
        ValueBase = from,
        Value = to,
        FillColor = color,
        LineWidth = 0,
        Size = 0.6,
    };

    private static string Total(double ms) => ms.ToString(ms >= 100 ? "F0" : "F1", CultureInfo.InvariantCulture) + " ms";

    /// <summary>Serves the embedded DejaVu Sans for <see cref="FontName"/> (any weight or slant); other names are left to the next resolver.</summary>
    private sealed class EmbeddedFontResolver : IFontResolver
    {
        private readonly byte[] _ttf = Load();

        private static byte[] Load()
        {
            const string resource = "FlashLm.Bench.Fonts.DejaVuSans.ttf";
            using var stream = typeof(BenchPlot).Assembly.GetManifestResourceStream(resource)
                ?? throw new InvalidOperationException($"the embedded font {resource} is missing from the assembly");
            using var copy = new MemoryStream();
            stream.CopyTo(copy);
            return copy.ToArray();
        }

        public SKTypeface? CreateTypeface(string fontName, bool bold, bool italic) => Create(fontName);

        public SKTypeface? CreateTypeface(string fontName, FontWeight weight, FontSlant slant, FontSpacing width) => Create(fontName);

        private SKTypeface? Create(string fontName)
        {
            if (fontName != FontName) return null;
            using var data = SKData.CreateCopy(_ttf);
            return SKTypeface.FromData(data) ?? throw new InvalidOperationException("SkiaSharp could not load the embedded DejaVu Sans");
        }
    }
}
