using System.Runtime.InteropServices;
using FlashLm.Formats;
using FlashLm.Models;
using FlashLm.Models.Llama;
using FlashLm.Runtime.Cache;
using FlashLm.Runtime.Compute;
using FlashLm.Runtime.Io;
using FlashLm.Runtime.Predict;
using FlashLm.Runtime.Session;
using Xunit;
using Architecture = FlashLm.Formats.Architecture;

namespace FlashLm.Tests.Runtime;

/// <summary>The sparse FFN over bundle rows in any order equals the dense SwiGLU FFN over the same weights.</summary>
public sealed class LayerComputeTests : Akka.TestKit.Xunit2.TestKit, IClassFixture<StoriesFlashFixture>
{
    private readonly StoriesFlashFixture _f;

    public LayerComputeTests(StoriesFlashFixture f) : base(RuntimeTestConfig.Hocon) => _f = f;

    private ModelConfig Config => _f.Source.Config;

    /// <summary>Rows holding the neurons' bundles (copied from ffn.bin) in a shuffled order, as a lease.</summary>
    private sealed class Rows : IDisposable
    {
        public AlignedBuffer Memory { get; }
        public Dictionary<int, nint> Address { get; } = new();

        public unsafe Rows(StoriesFlashFixture f, int layer, int[] neurons, Random rng)
        {
            long stride = f.Ffn.BundleStride;
            Memory = new AlignedBuffer(Math.Max(1, neurons.Length) * stride);
            var slots = Enumerable.Range(0, neurons.Length).OrderBy(_ => rng.Next()).ToArray();
            for (int i = 0; i < neurons.Length; i++)
            {
                nint a = (nint)(Memory.Pointer + slots[i] * stride);
                var bytes = f.Bundle(layer, neurons[i]);
                Marshal.Copy(bytes, 0, a, bytes.Length);
                Address[neurons[i]] = a;
            }
        }

        public CacheManager.Lease Lease(int layer, int[] neurons, int[] remaining, bool first) =>
            new(1, layer, Enumerable.Range(0, neurons.Length).ToArray(), neurons.Select(n => Address[n]).ToArray(), neurons, remaining, first);

        public void Dispose() => Memory.Dispose();
    }

    private float[] RandomInput(Random rng) => Enumerable.Range(0, Config.Dim).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();

    private float[] Dense(int layer, float[] x, float[]? thresholds)
    {
        var dense = new DenseSwiGlu(_f.Source, thresholds);
        var y = new float[Config.Dim];
        dense.Compute(layer, x, y, new InferenceState(Config, 1));
        return y;
    }

    private static void AssertClose(float[] expected, float[] actual, string what)
    {
        Assert.Equal(expected.Length, actual.Length);
        for (int i = 0; i < expected.Length; i++)
            Assert.True(Math.Abs(expected[i] - actual[i]) <= 1e-5 * Math.Max(1, Math.Abs(expected[i])), $"{what}: element {i} is {actual[i]}, dense {expected[i]}");
    }

    /// <summary>Thresholds near the median |silu(gate . x)| of a probe input, so about half the neurons are cut.</summary>
    private float[] Thresholds(Random rng)
    {
        var x = RandomInput(rng);
        return Enumerable.Range(0, Config.Layers).Select(l =>
        {
            var g = _f.Source.Read(TensorNames.Block(l, TensorNames.FfnGate)).F32!;
            return Enumerable.Range(0, Config.HiddenDim).Select(i =>
            {
                float dot = 0;
                for (int j = 0; j < Config.Dim; j++) dot += g[i * Config.Dim + j] * x[j];
                return MathF.Abs(dot / (1 + MathF.Exp(-dot)));
            }).Order().ElementAt(Config.HiddenDim / 2);
        }).ToArray();
    }

    [Fact]
    public void Sparse_ffn_over_all_rows_in_shuffled_order_equals_the_dense_ffn()
    {
        var rng = new Random(31);
        var spec = new SparseFfnSpec(_f.Ffn, _f.Source.Config, null, null, null);
        var state = new InferenceState(Config, 1);
        var all = Enumerable.Range(0, Config.HiddenDim).ToArray();
        for (int l = 0; l < Config.Layers; l++)
        {
            var order = all.OrderBy(_ => rng.Next()).ToArray();
            using var rows = new Rows(_f, l, order, rng);
            var x = RandomInput(rng);
            x.CopyTo(state.Xb, 0);
            Array.Fill(state.Xb2, 123f); // the first batch must start from zero
            spec.Accumulate(state, rows.Lease(l, order, [], first: true));
            AssertClose(Dense(l, x, null), state.Xb2, $"layer {l}");
        }
    }

    [Fact]
    public void Sparse_ffn_with_thresholds_over_the_active_set_in_two_batches_equals_the_thresholded_dense_ffn()
    {
        var rng = new Random(32);
        var thr = Thresholds(rng);
        var spec = new SparseFfnSpec(_f.Ffn, _f.Source.Config, thr, null, null);
        var state = new InferenceState(Config, 1);
        for (int l = 0; l < Config.Layers; l++)
        {
            var x = RandomInput(rng);
            var expected = Dense(l, x, thr);
            Assert.NotEqual(Dense(l, x, null), expected); // the thresholds do cut neurons

            // Every neuron: the kernel applies the threshold itself.
            var all = Enumerable.Range(0, Config.HiddenDim).OrderBy(_ => rng.Next()).ToArray();
            using (var rows = new Rows(_f, l, all, rng))
            {
                x.CopyTo(state.Xb, 0);
                spec.Accumulate(state, rows.Lease(l, all, [], first: true));
                AssertClose(expected, state.Xb2, $"layer {l}, all rows");
            }

            // Only the active neurons, shuffled, in two batches (First, then a follow-up that accumulates).
            var g = _f.Source.Read(TensorNames.Block(l, TensorNames.FfnGate)).F32!;
            var active = Enumerable.Range(0, Config.HiddenDim).Where(i =>
            {
                float dot = System.Numerics.Tensors.TensorPrimitives.Dot(g.AsSpan(i * Config.Dim, Config.Dim), x);
                return MathF.Abs(dot * (1.0f / (1.0f + MathF.Exp(-dot)))) >= thr[l] * 0.999f;
            }).OrderBy(_ => rng.Next()).ToArray();
            Assert.InRange(active.Length, 2, Config.HiddenDim - 1);
            using (var rows = new Rows(_f, l, active, rng))
            {
                int half = active.Length / 2;
                x.CopyTo(state.Xb, 0);
                Array.Fill(state.Xb2, -7f);
                spec.Accumulate(state, rows.Lease(l, active[..half], active[half..], first: true));
                spec.Accumulate(state, rows.Lease(l, active[half..], [], first: false));
                AssertClose(expected, state.Xb2, $"layer {l}, active rows in two batches");
            }
        }
    }

    [Fact]
    public void A_forward_layer_goes_attention_to_predictor_then_leased_ffn_to_cache_and_session_adding_the_ffn_on_the_last_part_only()
    {
        var rng = new Random(33);
        var model = new LlamaModel(_f.Source); // its own dense FFN is not used by the leased FFN
        var spec = new SparseFfnSpec(_f.Ffn, _f.Source.Config, null, null, null);
        var compute = Sys.ActorOf(LayerCompute.Props(model, spec));
        var predictor = CreateTestProbe();
        var state = new InferenceState(Config, 1);
        const int layer = 3;
        // TestActor is both the session and the cache manager: it sees the releases, the follow-up acquire and LayerDone in order.
        var route = new LayerPath.Route(TestActor, compute, predictor.Ref, TestActor, state, Position: 0, Prefill: false);
        var wait = TimeSpan.FromSeconds(10);

        compute.Tell(new LayerCompute.RunLayer(route, layer, TokenId: 1), TestActor);
        var predict = predictor.ExpectMsg<Predictor.PredictFor>(wait);
        Assert.Equal(layer, predict.Layer);
        Assert.Same(route, predict.Route);
        Assert.True(predict.Tally.ComputeTicks > 0, "attention's compute time is carried to the predictor");

        var all = Enumerable.Range(0, Config.HiddenDim).OrderBy(_ => rng.Next()).ToArray();
        using var rows = new Rows(_f, layer, all, rng);
        var x = RandomInput(rng);
        var residual = RandomInput(rng);
        x.CopyTo(state.Xb, 0);
        residual.CopyTo(state.X, 0);

        var first = rows.Lease(layer, all[..100], all[100..], first: true);
        long sent = System.Diagnostics.Stopwatch.GetTimestamp();
        compute.Tell(new LayerCompute.RunLeasedFfn(route, first, predict.Tally, sent), TestActor);
        var release = ExpectMsg<CacheManager.Release>(wait);
        Assert.Same(first, release.Lease);
        Assert.Equal(TestActor, release.Session); // released for the session, not for compute
        var rest = ExpectMsg<CacheManager.AcquireFor>(wait);
        Assert.Equal(all[100..], rest.Neurons);
        Assert.False(rest.First);
        Assert.True(rest.Tally.ComputeTicks > predict.Tally.ComputeTicks && rest.Tally.WaitTicks > 0, "FFN compute and wait are added");
        Assert.Equal(residual, state.X); // not the last part: the residual is untouched

        var last = rows.Lease(layer, all[100..], [], first: false);
        compute.Tell(new LayerCompute.RunLeasedFfn(route, last, rest.Tally, rest.Sent), TestActor);
        Assert.Same(last, ExpectMsg<CacheManager.Release>(wait).Lease);
        var done = ExpectMsg<LayerCompute.LayerDone>(wait);
        Assert.Equal(layer, done.Layer);
        Assert.True(done.Tally.ComputeTicks > rest.Tally.ComputeTicks && done.FfnEnd > sent);
        var dense = Dense(layer, x, null);
        AssertClose(residual.Zip(dense, (r, d) => r + d).ToArray(), state.X, "residual + FFN");
    }

    [Fact]
    public void A_lease_handed_over_for_a_session_that_stopped_is_only_released()
    {
        var rng = new Random(34);
        var model = new LlamaModel(_f.Source);
        var spec = new SparseFfnSpec(_f.Ffn, _f.Source.Config, null, null, null);
        var compute = Sys.ActorOf(LayerCompute.Props(model, spec));
        var session = CreateTestProbe();
        var predictor = CreateTestProbe();
        var state = new InferenceState(Config, 1);
        const int layer = 1;
        var route = new LayerPath.Route(session.Ref, compute, predictor.Ref, TestActor, state, Position: 0, Prefill: false);
        compute.Tell(new LayerCompute.RunLayer(route, layer, TokenId: 1), TestActor);
        var predict = predictor.ExpectMsg<Predictor.PredictFor>(TimeSpan.FromSeconds(10));
        Watch(session.Ref);
        Sys.Stop(session.Ref);
        ExpectTerminated(session.Ref);

        var all = Enumerable.Range(0, Config.HiddenDim).ToArray();
        using var rows = new Rows(_f, layer, all, rng);
        var lease = rows.Lease(layer, all, [], first: true);
        // Compute sees the session stop asynchronously: retry until the lease is only released (no FFN, no LayerDone).
        AwaitAssert(() =>
        {
            var before = state.X.ToArray();
            compute.Tell(new LayerCompute.RunLeasedFfn(route, lease, predict.Tally, 0), TestActor);
            Assert.Same(lease, ExpectMsg<CacheManager.Release>(TimeSpan.FromSeconds(10)).Lease);
            Assert.Equal(before, state.X);
        }, TimeSpan.FromSeconds(10));
        ExpectNoMsg(TimeSpan.FromMilliseconds(200));
    }
}
