using System.Diagnostics;
using System.Text;
using FlashLm.Formats.Llama2c;
using Xunit;
using Xunit.Abstractions;

namespace FlashLm.Tests;

/// <summary>
/// The llama2.c tokenizer's merge loop (a priority queue over a linked list) must encode exactly as run.c's
/// quadratic rescan does, which <see cref="QuadraticReference"/> keeps verbatim, and must be near-linear.
/// </summary>
[Collection(TimingCollection.Name)]
public class Llama2cTokenizerMergeTests(ITestOutputHelper output)
{
    /// <summary>CPU time of this process: the timing tests run alone (see <see cref="TimingCollection"/>), so this is
    /// the encoder's time, unaffected by other processes competing for the cores.</summary>
    private static double CpuMs() => Process.GetCurrentProcess().TotalProcessorTime.TotalMilliseconds;

    /// <summary>The encoder as it was before the priority queue (run.c's loop, one rescan per merge): test-only reference.</summary>
    private sealed class QuadraticReference
    {
        private readonly byte[][] _vocab;
        private readonly float[] _scores;
        private readonly int _maxTokenLength;
        private readonly Dictionary<string, int> _lookup = new(StringComparer.Ordinal);

        public QuadraticReference(byte[][] vocab, float[] scores, int maxTokenLength)
        {
            _vocab = vocab;
            _scores = scores;
            _maxTokenLength = maxTokenLength;
            for (int i = 0; i < vocab.Length; i++) _lookup.TryAdd(Encoding.Latin1.GetString(vocab[i]), i);
        }

        private int Lookup(ReadOnlySpan<byte> piece) => _lookup.TryGetValue(Encoding.Latin1.GetString(piece), out var id) ? id : -1;

        public int[] Encode(string text, bool addBos)
        {
            var tokens = new List<int>();
            if (addBos) tokens.Add(1);
            var utf8 = Encoding.UTF8.GetBytes(text);
            if (utf8.Length > 0)
            {
                int dummy = Lookup(" "u8);
                if (dummy >= 0) tokens.Add(dummy);
            }
            Span<byte> buf = stackalloc byte[8];
            int len = 0;
            for (int i = 0; i < utf8.Length; i++)
            {
                if ((utf8[i] & 0xC0) != 0x80) len = 0;
                buf[len++] = utf8[i];
                bool continues = i + 1 < utf8.Length && (utf8[i + 1] & 0xC0) == 0x80;
                if (continues && len < 4) continue;
                int id = Lookup(buf[..len]);
                if (id != -1) tokens.Add(id);
                else for (int j = 0; j < len; j++) tokens.Add(buf[j] + 3);
                len = 0;
            }
            var pair = new byte[2 * _maxTokenLength + 2];
            while (true)
            {
                float bestScore = -1e10f;
                int bestId = -1, bestIdx = -1;
                for (int i = 0; i < tokens.Count - 1; i++)
                {
                    var a = _vocab[tokens[i]];
                    var b = _vocab[tokens[i + 1]];
                    if (a.Length + b.Length > pair.Length) continue;
                    a.CopyTo(pair, 0);
                    b.CopyTo(pair, a.Length);
                    int id = Lookup(pair.AsSpan(0, a.Length + b.Length));
                    if (id != -1 && _scores[id] > bestScore)
                    {
                        bestScore = _scores[id];
                        bestId = id;
                        bestIdx = i;
                    }
                }
                if (bestIdx == -1) break;
                tokens[bestIdx] = bestId;
                tokens.RemoveAt(bestIdx + 1);
            }
            return tokens.ToArray();
        }
    }

    /// <summary>
    /// A vocabulary shaped like llama2.c's (specials, 256 byte tokens, then pieces) whose pieces are
    /// concatenations of earlier ones, so long merge chains happen; scores come from a handful of values so
    /// equal-score ties are frequent, and a few pieces are duplicates or score at/below -1e10.
    /// </summary>
    private static (byte[][] Vocab, float[] Scores, int MaxLen) RandomVocab(Random rng, int extra)
    {
        var vocab = new List<byte[]> { "<unk>"u8.ToArray(), "<s>"u8.ToArray(), "</s>"u8.ToArray() };
        for (int b = 0; b < 256; b++) vocab.Add(Encoding.ASCII.GetBytes($"<0x{b:X2}>"));
        foreach (var s in new[] { " ", "a", "b", "c", "d", "é", "\n" }) vocab.Add(Encoding.UTF8.GetBytes(s));
        int singles = vocab.Count;
        for (int i = 0; i < extra; i++)
        {
            var left = vocab[rng.Next(259, vocab.Count)];
            var right = vocab[rng.Next(259, rng.Next(3) == 0 ? singles : vocab.Count)];
            if (left.Length + right.Length > 12) continue;
            vocab.Add([.. left, .. right]);
        }
        float[] levels = [-1f, -2f, -2f, -3f, -5f, -1e10f, -2e10f, 0f, -0f, 1.5f, float.NaN, -0.5f];
        var scores = new float[vocab.Count];
        for (int i = 0; i < scores.Length; i++) scores[i] = i < 259 ? 0f : levels[rng.Next(levels.Length)];
        return (vocab.ToArray(), scores, vocab.Max(v => v.Length));
    }

    private static string RandomText(Random rng, int length)
    {
        string[] alphabet = ["a", "b", "c", "d", " ", "é", "\n", "z", "€", "ab", "ba", "cd"];
        var sb = new StringBuilder();
        while (sb.Length < length) sb.Append(alphabet[rng.Next(alphabet.Length)]);
        return sb.ToString();
    }

    [Fact]
    public void Priority_queue_merges_equal_the_quadratic_rescan_on_random_vocabularies_and_texts()
    {
        var rng = new Random(20261129);
        int cases = 0;
        for (int v = 0; v < 40; v++)
        {
            var (vocab, scores, maxLen) = RandomVocab(rng, rng.Next(5, 200));
            var fast = new Llama2cTokenizer(vocab, scores, maxLen);
            var slow = new QuadraticReference(vocab, scores, maxLen);
            for (int t = 0; t < 25; t++)
            {
                var text = RandomText(rng, rng.Next(0, 300));
                bool bos = rng.Next(2) == 0;
                Assert.Equal(slow.Encode(text, bos), fast.Encode(text, bos));
                cases++;
            }
        }
        Assert.Equal(1000, cases);
    }

    [RequiresSharedModelsFact]
    public void Priority_queue_merges_equal_the_quadratic_rescan_with_tok512()
    {
        var tok = Llama2cTokenizer.Load(SharedModels.Tok512, 512);
        var export = tok.Export()[Llama2cTokenizer.FileName];
        var (vocab, scores) = Parse(export, 512);
        var slow = new QuadraticReference(vocab, scores, tok.MaxTokenLength);
        var rng = new Random(7);
        var words = vocab.Skip(259).Select(v => Encoding.UTF8.GetString(v)).ToArray();
        for (int t = 0; t < 100; t++)
        {
            var sb = new StringBuilder();
            int n = rng.Next(1, 80);
            for (int i = 0; i < n; i++) sb.Append(rng.Next(4) == 0 ? RandomText(rng, 3) : words[rng.Next(words.Length)]);
            var text = sb.ToString();
            Assert.Equal(slow.Encode(text, true), tok.Encode(text, true));
        }
    }

    [RequiresSharedModelsFact]
    public void Tok512_encodes_864_KB_of_story_text_in_seconds_not_minutes()
    {
        var tok = Llama2cTokenizer.Load(SharedModels.Tok512, 512);
        var rng = new Random(1);
        string[] words = ["once", "upon", "a", "time", "there", "was", "little", "girl", "named", "Lily.", "She", "loved", "to", "play", "with", "her", "toys", "and", "friends", "every", "day."];
        var sb = new StringBuilder();
        while (sb.Length < 864 * 1024) sb.Append(words[rng.Next(words.Length)]).Append(' ');
        var text = sb.ToString();
        var eighth = text[..(text.Length / 8)];
        tok.Encode(eighth, true); // warm-up
        double t0 = CpuMs();
        tok.Encode(eighth, true);
        double tEighth = CpuMs() - t0;
        t0 = CpuMs();
        var ids = tok.Encode(text, true);
        double tAll = CpuMs() - t0;
        output.WriteLine($"tok512 CPU: {eighth.Length / 1024} KB in {tEighth:F0} ms, {text.Length / 1024} KB -> {ids.Length} tokens in {tAll:F0} ms");
        // The quadratic loop did not finish 864 KB in 120 s. Wall-clock bounds are loose (a loaded 2-core machine
        // runs other tests beside this one); the ratio is the check of the growth: 8x the text, far from 64x.
        Assert.True(tAll < 60_000, $"{tAll:F0} ms");
        Assert.True(tAll < Math.Max(30 * tEighth, 1000), $"{eighth.Length / 1024} KB {tEighth:F0} ms, {text.Length / 1024} KB {tAll:F0} ms: superlinear");
        Assert.True(ids.Length > text.Length / 8, "story words should not merge into fewer tokens than this");
    }

    private static (byte[][] Vocab, float[] Scores) Parse(byte[] bin, int vocabSize)
    {
        var vocab = new byte[vocabSize][];
        var scores = new float[vocabSize];
        int at = 4;
        for (int i = 0; i < vocabSize; i++)
        {
            scores[i] = BitConverter.ToSingle(bin, at);
            int len = BitConverter.ToInt32(bin, at + 4);
            vocab[i] = bin.AsSpan(at + 8, len).ToArray();
            at += 8 + len;
        }
        return (vocab, scores);
    }

    [Fact]
    public void Encoding_is_near_linear_in_the_text_length()
    {
        var rng = new Random(3);
        var (vocab, scores, maxLen) = RandomVocab(rng, 400);
        var tok = new Llama2cTokenizer(vocab, scores, maxLen);
        var small = RandomText(rng, 50_000);
        var large = string.Concat(Enumerable.Repeat(small, 8));
        tok.Encode(small, true); // warm-up: JIT
        double t0 = CpuMs();
        tok.Encode(small, true);
        double tSmall = CpuMs() - t0;
        t0 = CpuMs();
        tok.Encode(large, true);
        double tLarge = CpuMs() - t0;
        output.WriteLine($"CPU: 50 KB {tSmall:F1} ms, 400 KB {tLarge:F1} ms");
        // 8x the text: a linear-ish encoder takes ~8-11x (n log n); the quadratic one took ~64x. The
        // absolute bound keeps the test meaningful on a loaded machine, where ratios of small times jitter.
        Assert.True(tLarge < 20_000, $"400 KB took {tLarge:F0} ms");
        Assert.True(tLarge < Math.Max(30 * tSmall, 500), $"50 KB {tSmall:F1} ms, 400 KB {tLarge:F1} ms: superlinear");
    }
}

/// <summary>Tests that time something: run after the parallel ones, alone in the process.</summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class TimingCollection
{
    public const string Name = "timing (not parallel)";
}
