using System.Threading.Channels;
using Akka.Actor;
using FlashLm.Formats;
using FlashLm.Models;
using FlashLm.Models.Sampling;
using FlashLm.Runtime;
using FlashLm.Runtime.Cache;
using FlashLm.Runtime.Compute;
using FlashLm.Runtime.Predict;
using FlashLm.Runtime.Session;
using Xunit;

namespace FlashLm.Tests.Runtime;

/// <summary>
/// The session's protocol, driven message by message with probes in place of the stages: each state takes only what it
/// waits for, and anything else ends the session with an error naming the message and what the session waited for.
/// </summary>
public sealed class SessionProtocolTests(SyntheticLayoutFixture layout) : Akka.TestKit.Xunit2.TestKit(RuntimeTestConfig.Hocon), IClassFixture<SyntheticLayoutFixture>
{
    private sealed record Harness(IActorRef Session, Akka.TestKit.TestProbe Compute, Akka.TestKit.TestProbe Predictor, Akka.TestKit.TestProbe Cache,
        Channel<TokenEvent> Output, InferenceState State);

    private Harness Start(int[] prompt, int limit)
    {
        using var source = ModelLoader.Open(layout.Gguf);
        var model = Transformers.Create(source);
        var compute = CreateTestProbe();
        var predictor = CreateTestProbe();
        var cache = CreateTestProbe();
        var state = new InferenceState(model.Config, limit);
        var output = Channel.CreateBounded<TokenEvent>(8);
        var parts = new SessionActor.Parts(compute, predictor, cache, 0);
        var session = Sys.ActorOf(SessionActor.Props(parts, model, source.Tokenizer, state, prompt, 0, limit,
            new Sampler(model.Config.VocabSize, SamplingOptions.Greedy, new XorShiftRandom(1)), output.Writer, CancellationToken.None));
        session.Tell(new SessionActor.Start());
        predictor.ExpectMsg<Predictor.Reset>();
        return new Harness(session, compute, predictor, cache, output, state);
    }

    private static async Task<Exception> FailureOf(Harness h)
    {
        var read = h.Output.Reader.Completion;
        var done = await Task.WhenAny(read, Task.Delay(TimeSpan.FromSeconds(10)));
        Assert.Same(read, done);
        return await Assert.ThrowsAnyAsync<Exception>(() => read);
    }

    [Fact]
    public async Task One_position_walks_every_state_in_order_and_emits_its_token()
    {
        int layers = SyntheticModels.StoriesShape.Layers;
        var h = Start([1, 7], limit: 2);
        var route = (LayerPath.Route)null!;
        for (int l = 0; l < layers; l++)
        {
            var run = h.Compute.ExpectMsg<LayerCompute.RunLayer>();
            Assert.Equal(l, run.Layer);
            route = run.Route;
            h.Session.Tell(new LayerCompute.LayerDone(l, new LayerPath.Tally(), 0));
        }
        h.Compute.ExpectMsg<LayerCompute.RunHead>();
        h.Session.Tell(new LayerCompute.HeadDone(new float[SyntheticModels.StoriesShape.VocabSize], 0));
        var done = h.Cache.ExpectMsg<CacheManager.TokenDone>();
        Assert.Equal(0, done.Position);
        Assert.NotNull(route);
        h.Session.Tell(new CacheManager.TokenCacheStats(0, 4096, 1, 3, 2, 0, 2, 0.5, 0.1, 1000, 0, new long[layers]));
        // The prompt's second token is forced: position 0 yields it, then position 1 starts at layer 0.
        var ev = await h.Output.Reader.ReadAsync().AsTask().WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Equal((0, 7, 4096L), (ev.Position, ev.Token, ev.Stats.BytesRead));
        var next = h.Compute.ExpectMsg<LayerCompute.RunLayer>();
        Assert.Equal((0, 7, 1L), (next.Layer, next.TokenId, next.Route.Position));
    }

    [Fact]
    public async Task A_head_result_in_the_middle_of_the_layers_fails_the_session_as_a_protocol_error()
    {
        var h = Start([1, 7], limit: 2);
        h.Compute.ExpectMsg<LayerCompute.RunLayer>();
        h.Session.Tell(new LayerCompute.HeadDone(new float[SyntheticModels.StoriesShape.VocabSize], 0));
        var e = await FailureOf(h);
        var p = Assert.IsType<PipelineException>(e);
        Assert.Equal("session", p.Stage);
        Assert.Contains("HeadDone arrived while the session waited for attention of layer 0", p.Message);
        Assert.Contains("protocol error", p.Message);
    }

    [Fact]
    public async Task A_layer_result_while_the_head_runs_fails_the_session_as_a_protocol_error()
    {
        int layers = SyntheticModels.StoriesShape.Layers;
        var h = Start([1, 7], limit: 2);
        for (int l = 0; l < layers; l++)
        {
            h.Compute.ExpectMsg<LayerCompute.RunLayer>();
            h.Session.Tell(new LayerCompute.LayerDone(l, new LayerPath.Tally(), 0));
        }
        h.Compute.ExpectMsg<LayerCompute.RunHead>();
        h.Session.Tell(new LayerCompute.LayerDone(0, new LayerPath.Tally(), 0));
        var p = Assert.IsType<PipelineException>(await FailureOf(h));
        Assert.Contains("LayerDone arrived while the session waited for the LM head", p.Message);
    }
}
