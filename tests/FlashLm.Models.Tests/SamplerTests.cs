using FlashLm.Models.Sampling;
using Xunit;

namespace FlashLm.Tests;

public class SamplerTests
{
    private sealed class FixedRandom(params float[] values) : IRandomSource
    {
        private int _i;
        public float NextFloat() => values[_i++ % values.Length];
    }

    private static float[] Logits() => [0.1f, 2.0f, -1.0f, 1.5f, 0.0f];

    [Fact]
    public void Temperature_zero_is_argmax_and_consumes_no_randomness()
    {
        var s = new Sampler(5, SamplingOptions.Greedy, new FixedRandom(float.NaN));
        Assert.Equal(1, s.Sample(Logits()));
    }

    [Fact]
    public void XorShift_matches_run_c_first_values_for_seed_42()
    {
        // run.c: state ^= state >> 12; state ^= state << 25; state ^= state >> 27; (state * 0x2545F4914F6CDD1D) >> 32
        ulong state = 42;
        var expected = new uint[4];
        for (int i = 0; i < 4; i++)
        {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            expected[i] = (uint)((state * 0x2545F4914F6CDD1DUL) >> 32);
        }
        var rng = new XorShiftRandom(42);
        Assert.Equal(expected, Enumerable.Range(0, 4).Select(_ => rng.NextUInt()).ToArray());
        Assert.NotEqual(expected[0], expected[1]);
    }

    [Fact]
    public void Top_k_one_always_picks_the_best_token()
    {
        var s = new Sampler(5, new SamplingOptions(1.0f, 0f, 1, 0), new FixedRandom(0.0f, 0.5f, 0.999f));
        for (int i = 0; i < 3; i++) Assert.Equal(1, s.Sample(Logits()));
    }

    [Fact]
    public void Top_p_keeps_only_the_nucleus()
    {
        // probabilities of Logits(): token 1 ~0.515, token 3 ~0.312; top-p 0.7 keeps tokens 1 and 3 only (cumulative 0.828).
        var s = new Sampler(5, new SamplingOptions(1.0f, 0.7f, 0, 0), new FixedRandom(0.0f, 0.3f, 0.7f, 0.999f));
        var picks = Enumerable.Range(0, 4).Select(_ => s.Sample(Logits())).ToArray();
        Assert.Equal(new[] { 1, 1, 3, 3 }, picks);
    }

    [Fact]
    public void Multinomial_sampling_follows_the_cumulative_distribution()
    {
        var s = new Sampler(5, new SamplingOptions(1.0f, 1.0f, 0, 0), new FixedRandom(0.0f, 0.9999f));
        Assert.Equal(0, s.Sample(Logits()));
        Assert.Equal(4, s.Sample(Logits()));
    }

    [Theory]
    [InlineData(-1f, 0.9f, 0)]
    [InlineData(1f, 1.5f, 0)]
    [InlineData(1f, 0.9f, -2)]
    public void Bad_options_are_refused(float t, float p, int k)
    {
        Assert.Throws<ArgumentException>(() => new Sampler(5, new SamplingOptions(t, p, k, 0), new XorShiftRandom(1)));
    }
}
