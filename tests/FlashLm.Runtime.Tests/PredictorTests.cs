using Akka.Actor;
using FlashLm.Formats;
using FlashLm.Models;
using FlashLm.Runtime.Cache;
using FlashLm.Runtime.Predict;
using Xunit;
using static FlashLm.Runtime.Predict.Predictor;

namespace FlashLm.Tests.Runtime;

/// <summary>The predictor actor: the oracle's exact set, and lookahead prefetches of the previous token's next-layer set.</summary>
public sealed class PredictorTests : Akka.TestKit.Xunit2.TestKit, IClassFixture<StoriesFlashFixture>
{
    private static readonly TimeSpan Wait = TimeSpan.FromSeconds(10);
    private readonly StoriesFlashFixture _f;

    public PredictorTests(StoriesFlashFixture f) : base(RuntimeTestConfig.Hocon) => _f = f;

    private int Layers => _f.Source.Config.Layers;

    private float[] Gate(int layer) => _f.Source.Read(TensorNames.Block(layer, TensorNames.FfnGate)).F32!; // (hidden, dim)

    /// <summary>|silu(gate . x)| per neuron, in double (the plain reference).</summary>
    private double[] Scores(int layer, float[] x)
    {
        var g = Gate(layer);
        int dim = x.Length, hidden = g.Length / dim;
        var r = new double[hidden];
        for (int i = 0; i < hidden; i++)
        {
            double dot = 0;
            for (int j = 0; j < dim; j++) dot += (double)g[i * dim + j] * x[j];
            r[i] = Math.Abs(dot / (1 + Math.Exp(-dot)));
        }
        return r;
    }

    private float[][][] Inputs(int tokens, int seed)
    {
        var rng = new Random(seed);
        int dim = _f.Source.Config.Dim;
        return Enumerable.Range(0, tokens).Select(_ => Enumerable.Range(0, Layers)
            .Select(_ => Enumerable.Range(0, dim).Select(_ => (float)(rng.NextDouble() * 4 - 2)).ToArray()).ToArray()).ToArray();
    }

    /// <summary>Per-layer thresholds at the median score of a calibration input, so sets hold about half the neurons.</summary>
    private float[] Thresholds(float[][] calibration) =>
        Enumerable.Range(0, Layers).Select(l => (float)Scores(l, calibration[l]).Order().ElementAt(_f.Source.Config.HiddenDim / 2)).ToArray();

    private IActorRef Start(float[] thresholds, IActorRef cache, bool lookahead)
    {
        var weights = Enumerable.Range(0, Layers).Select(l => Matrix.Load(_f.Source, TensorNames.Block(l, TensorNames.FfnGate))).ToArray();
        return Sys.ActorOf(Predictor.Props(new OraclePredictor(weights, null, thresholds), cache, lookahead));
    }

    /// <summary>Asks for layer <paramref name="layer"/>'s set on the forward path with <paramref name="x"/> as the FFN input; the
    /// probe is the session and the cache manager, so it sees the prefetch and the acquire on the session's behalf.</summary>
    private void Ask(Akka.TestKit.TestProbe probe, IActorRef predictor, int layer, float[] x, long position)
    {
        var state = new InferenceState(_f.Source.Config, 1);
        x.CopyTo(state.Xb, 0);
        var route = new FlashLm.Runtime.Session.LayerPath.Route(probe.Ref, probe.Ref, predictor, probe.Ref, state, position, Prefill: false);
        probe.Send(predictor, new PredictFor(route, layer, new FlashLm.Runtime.Session.LayerPath.Tally(), System.Diagnostics.Stopwatch.GetTimestamp()));
    }

    /// <summary>The set equals the reference's, except neurons within rounding of the threshold, which may go either way.</summary>
    private void AssertOracleSet(int layer, float[] x, float threshold, int[] set)
    {
        Assert.Equal(set.Order(), set);
        var scores = Scores(layer, x);
        var inSet = set.ToHashSet();
        for (int i = 0; i < scores.Length; i++)
        {
            if (Math.Abs(scores[i] - threshold) < 1e-5) continue;
            Assert.True(inSet.Contains(i) == scores[i] >= threshold, $"layer {layer} neuron {i}: |silu| {scores[i]} vs threshold {threshold}, in set: {inSet.Contains(i)}");
        }
        Assert.InRange(set.Length, 1, scores.Length - 1); // a real choice was made
    }

    [Fact]
    public void Prediction_is_the_oracle_set_and_lookahead_prefetches_the_previous_tokens_next_layer_before_replying()
    {
        var xs = Inputs(3, 5);
        var thr = Thresholds(xs[0]);
        // The probe is both the cache manager and the session, so it sees the order of Prefetch and the acquire.
        var probe = CreateTestProbe();
        var predictor = Start(thr, probe.Ref, lookahead: true);
        var sets = new int[3][][];
        for (int t = 0; t < 3; t++)
        {
            sets[t] = new int[Layers][];
            for (int l = 0; l < Layers; l++)
            {
                Ask(probe, predictor, l, xs[t][l], t);
                if (t > 0 && l + 1 < Layers)
                {
                    var prefetch = probe.ExpectMsg<CacheManager.Prefetch>(Wait);
                    Assert.Equal(l + 1, prefetch.Layer);
                    Assert.Equal(t, prefetch.Position);
                    Assert.Equal(sets[t - 1][l + 1], prefetch.Neurons);
                }
                var p = probe.ExpectMsg<CacheManager.AcquireFor>(Wait); // at token 0 and for the last layer: no prefetch first
                Assert.Equal(l, p.Layer);
                Assert.Equal(t, p.Route.Position);
                Assert.True(p.Tally.PredictTicks > 0, "the prediction time travels with the acquire");
                AssertOracleSet(l, xs[t][l], thr[l], p.Neurons);
                sets[t][l] = p.Neurons;
            }
        }
        probe.ExpectNoMsg(TimeSpan.FromMilliseconds(200));
        Assert.NotEqual(sets[0][1], sets[1][1]); // the inputs differ, so the prefetches did follow the tokens
    }

    [Fact]
    public void Without_lookahead_nothing_is_prefetched()
    {
        var xs = Inputs(3, 6);
        var thr = Thresholds(xs[0]);
        var probe = CreateTestProbe();
        var predictor = Start(thr, probe.Ref, lookahead: false);
        for (int t = 0; t < 3; t++)
            for (int l = 0; l < Layers; l++)
            {
                Ask(probe, predictor, l, xs[t][l], t);
                var p = probe.ExpectMsg<CacheManager.AcquireFor>(Wait);
                AssertOracleSet(l, xs[t][l], thr[l], p.Neurons);
            }
        probe.ExpectNoMsg(TimeSpan.FromMilliseconds(200));
    }

    [Fact]
    public void Reset_forgets_the_previous_sequence()
    {
        var xs = Inputs(3, 7);
        var thr = Thresholds(xs[0]);
        var probe = CreateTestProbe();
        var predictor = Start(thr, probe.Ref, lookahead: true);
        var first = new int[Layers][];
        for (int l = 0; l < Layers; l++)
        {
            Ask(probe, predictor, l, xs[0][l], 0);
            first[l] = probe.ExpectMsg<CacheManager.AcquireFor>(Wait).Neurons;
        }
        probe.Send(predictor, new Reset());
        // A new sequence: its first token prefetches nothing ...
        var second = new int[Layers][];
        for (int l = 0; l < Layers; l++)
        {
            Ask(probe, predictor, l, xs[1][l], 0);
            second[l] = probe.ExpectMsg<CacheManager.AcquireFor>(Wait).Neurons;
        }
        // ... and its second token prefetches its own first token's sets, not the old sequence's.
        Ask(probe, predictor, 0, xs[2][0], 1);
        var prefetch = probe.ExpectMsg<CacheManager.Prefetch>(Wait);
        Assert.Equal(1, prefetch.Layer);
        Assert.Equal(second[1], prefetch.Neurons);
        Assert.NotEqual(first[1], prefetch.Neurons);
        probe.ExpectMsg<CacheManager.AcquireFor>(Wait);
    }
}
