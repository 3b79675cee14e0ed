using System.Diagnostics;
using System.Threading.Channels;
using Akka.Actor;
using FlashLm.Formats;
using FlashLm.Models;
using FlashLm.Models.Sampling;
using FlashLm.Runtime.Cache;
using FlashLm.Runtime.Compute;
using FlashLm.Runtime.Predict;

namespace FlashLm.Runtime.Session;

/// <summary>
/// One generation: starts each layer on its forward path (<see cref="LayerPath"/>: attention on the compute actor,
/// the active set from the predictor, rows from the cache manager, the FFN back on the compute actor, without
/// returning here in between) and hears back once per layer (<see cref="LayerCompute.LayerDone"/>, with what the
/// layer measured), runs the head,
/// samples, and writes one <see cref="TokenEvent"/> per position to a bounded channel (back-pressure:
/// the next position starts only when the consumer has room). llama2.c's loop: the prompt is fed
/// first, generation stops at BOS or after the requested positions.
/// </summary>
internal static class SessionActor
{
    public sealed record Start;

    /// <param name="FixedBytes">DRAM the runtime holds outside the cache manager (weights, predictors, KV caches), for the statistics.</param>
    /// <param name="StallTimeout">Fail the session when no answer comes for this long (null: wait forever).</param>
    /// <param name="Hook">Test hook called as each position starts, with the position (e.g. to throw).</param>
    /// <param name="Messages">The runtime's message count, for <see cref="TokenStats.Messages"/>.</param>
    internal sealed record Parts(IActorRef Compute, IActorRef Predictor, IActorRef Cache, long FixedBytes, TimeSpan? StallTimeout = null,
        Action<int>? Hook = null, MessageCount? Messages = null);

    /// <summary>Where a turn ended: the next free position and the last token produced (not yet fed).</summary>
    public sealed record Finished(int Position, int Pending);

    /// <param name="start">Position at which prompt[0] is fed (0 for a new sequence; later turns continue the KV cache).</param>
    /// <param name="limit">Positions end here (exclusive): run.c's steps for a first turn.</param>
    /// <param name="finished">Completed when the turn ends (not when it fails).</param>
    /// <param name="prefill">How many of the prompt's tokens are prefill (read with large sequential reads, reported as
    /// prefill); the rest are fed one per step as forced decode steps (benchmarks follow a fixed text this way).
    /// Default: the whole prompt.</param>
    public static Props Props(Parts parts, ITransformer model, ITextTokenizer tokenizer, InferenceState state, int[] prompt, int start, int limit,
        Sampler sampler, ChannelWriter<TokenEvent> output, CancellationToken cancellation, TaskCompletionSource<Finished>? finished = null, int? prefill = null) =>
        Akka.Actor.Props.Create(() => new Actor(parts, model, tokenizer, state, prompt, start, limit, sampler, output, cancellation, finished, prefill ?? prompt.Length));

    private sealed class Continue
    {
        public static readonly Continue Instance = new();
    }

    private sealed class Actor : ReceiveActor
    {
        private readonly Parts _p;
        private readonly ITextTokenizer _tok;
        private readonly InferenceState _s;
        private readonly int[] _prompt;
        private readonly int _start, _steps, _prefill;
        private readonly TaskCompletionSource<Finished>? _finished;
        private readonly Sampler _sampler;
        private readonly ChannelWriter<TokenEvent> _out;
        private readonly CancellationToken _ct;
        private readonly int _layers;
        private readonly int _expertNeurons; // mixture of experts: neurons per expert (0: a dense FFN)

        private int _pos, _token, _layer;
        private long _tokenStart, _computeTicks, _waitTicks;
        private long _attnIoTicks, _attnBytes, _predictTicks; // streamed attention (the naive baseline): reads done inside the attention step
        private int _attnReads;
        private int _next;
        private int _predicted, _truth, _fp, _fn;
        private int _guessed, _guessHits, _guessTruth, _guessLayers;
        private long[] _ffnEnd = [];  // (layers) when each layer's FFN compute finished, this token
        private bool _measured;
        private LayerPath.Route? _route; // this position's forward path
        private long _messagesAtStart;
        // What the session waits for now, for the stall error: the stage and the step.
        private (string Stage, string Step) _awaiting = ("session", "start");

        public Actor(Parts p, ITransformer model, ITextTokenizer tok, InferenceState s, int[] prompt, int start, int steps, Sampler sampler,
            ChannelWriter<TokenEvent> output, CancellationToken ct, TaskCompletionSource<Finished>? finished, int prefill)
        {
            _prefill = Math.Clamp(prefill, 1, prompt.Length);
            _start = start;
            _finished = finished;
            _p = p;
            _tok = tok;
            _s = s;
            _prompt = prompt;
            _steps = steps;
            _sampler = sampler;
            _out = output;
            _ct = ct;
            _layers = model.Config.Layers;
            _expertNeurons = model.Config.MoE ? model.Config.HiddenDim : 0;
            _ffnEnd = new long[_layers];
            Become(Idle);
        }

        // The protocol, one behaviour per thing the session waits for; each names the stage a stall is blamed on:
        //   Idle --Start--> InLayers --LayerDone (last layer)--> AwaitingHead --HeadDone--> AwaitingStats
        //   --TokenCacheStats--> (room in the channel) InLayers of the next position, or AwaitingConsumer --Continue--> InLayers.
        // A failure (Status.Failure, AcquireFailed), the stall timeout, or a message the state does not expect ends the session.

        private void Idle()
        {
            _awaiting = ("session", "start");
            Receive<Start>(_ =>
            {
                _p.Predictor.Tell(new Predictor.Reset()); // a turn is a new actor: nothing of an earlier one to look back on
                _pos = _start;
                _token = _prompt[0];
                BeginPosition();
            });
            Failures();
        }

        private void InLayers()
        {
            Receive<LayerCompute.LayerDone>(d =>
            {
                // The layer ran forward (attention, prediction, rows, FFN) without this actor; what it measured comes with it.
                var t = d.Tally;
                _computeTicks += t.ComputeTicks;
                _waitTicks += t.WaitTicks;
                _predictTicks += t.PredictTicks;
                _attnIoTicks += t.AttnIoTicks;
                _attnBytes += t.AttnBytes;
                _attnReads += t.AttnReads;
                if (t.Quality is { } q)
                {
                    _measured = true;
                    _predicted += q.Predicted;
                    _truth += q.TrulyActive;
                    _fp += q.FalsePositive;
                    _fn += q.FalseNegative;
                }
                if (t.Guess is { } g)
                {
                    _guessLayers++;
                    _guessed += g.Predicted;
                    _guessHits += g.Predicted - g.FalsePositive;
                    _guessTruth += g.TrulyActive;
                }
                _ffnEnd[d.Layer] = d.FfnEnd;
                // Layer boundary: nothing is pinned now, so a cancelled session stops here cleanly.
                if (_ct.IsCancellationRequested)
                {
                    Fail(new OperationCanceledException(_ct));
                    return;
                }
                if (++_layer < _layers) Attend();
                else
                {
                    _awaiting = ("compute", "the LM head");
                    _p.Compute.Tell(new LayerCompute.RunHead(_s));
                    Become(AwaitingHead);
                }
            });
            Failures();
        }

        private void AwaitingHead()
        {
            Receive<LayerCompute.HeadDone>(h =>
            {
                _computeTicks += h.Ticks;
                _next = _pos - _start < _prompt.Length - 1 ? _prompt[_pos - _start + 1] : _sampler.Sample(h.Logits);
                _awaiting = ("cache manager", "the token's statistics");
                _p.Cache.Tell(new CacheManager.TokenDone(_pos));
                Become(AwaitingStats);
            });
            Failures();
        }

        private void AwaitingStats()
        {
            Receive<CacheManager.TokenCacheStats>(OnTokenDone);
            Failures();
        }

        private void AwaitingConsumer()
        {
            Receive<Continue>(_ =>
            {
                if (_p.StallTimeout is { } stall) Context.SetReceiveTimeout(stall);
                BeginPosition();
            });
            Failures();
        }

        /// <summary>What every state handles: failures, the stall timeout, and anything it does not expect.</summary>
        private void Failures()
        {
            Receive<CacheManager.AcquireFailed>(f => Fail(new PipelineException("loader", f.Error, new IOException(f.Error))));
            Receive<Status.Failure>(f => Fail(f.Cause));
            Receive<ReceiveTimeout>(_ => Fail(new PipelineException(_awaiting.Stage,
                $"no progress for {_p.StallTimeout?.TotalSeconds:0.###} s (flashlm.session-stall-timeout) while the session waited for {_awaiting.Step} at position {_pos}",
                new TimeoutException())));
            ReceiveAny(m => Fail(new PipelineException("session",
                $"position {_pos}: {m.GetType().Name} arrived while the session waited for {_awaiting.Step} (a protocol error)",
                new InvalidOperationException(m.GetType().FullName))));
        }

        protected override void PreStart()
        {
            if (_p.StallTimeout is { } stall) Context.SetReceiveTimeout(stall);
        }

        /// <summary>Anything this actor's own steps throw (sampling, the tokenizer, a hook) fails this session only.</summary>
        protected override bool AroundReceive(Receive receive, object message)
        {
            _p.Messages?.Add();
            try
            {
                return base.AroundReceive(receive, message);
            }
            catch (Exception e)
            {
                Fail(new PipelineException("session", $"position {_pos}: handling {message.GetType().Name} failed: {e.Message}", e));
                return true;
            }
        }

        /// <summary>Starts the layer on its forward path; it answers with <see cref="LayerCompute.LayerDone"/>.</summary>
        private void Attend()
        {
            // The session does not see the layer's inner steps: a stall names the layer's first stage and what follows it.
            _awaiting = ("compute", $"attention of layer {_layer} (then its active set, rows and FFN)");
            _p.Compute.Tell(new LayerCompute.RunLayer(_route!, _layer, _token));
            if (_layer == 0) Become(InLayers);
        }

        private bool IsPrefill => _pos - _start < _prefill - 1;

        private void BeginPosition()
        {
            if (_ct.IsCancellationRequested)
            {
                Fail(new OperationCanceledException(_ct));
                return;
            }
            if (_pos >= _steps)
            {
                Complete();
                return;
            }
            _layer = 0;
            _computeTicks = _waitTicks = _attnIoTicks = _attnBytes = _predictTicks = 0;
            _attnReads = 0;
            _predicted = _truth = _fp = _fn = 0;
            _guessed = _guessHits = _guessTruth = _guessLayers = 0;
            _measured = false;
            _tokenStart = Stopwatch.GetTimestamp();
            _messagesAtStart = _p.Messages?.Value ?? 0;
            _p.Hook?.Invoke(_pos);
            _route = new LayerPath.Route(Self, _p.Compute, _p.Predictor, _p.Cache, _s, _pos, IsPrefill);
            Attend();
        }

        private void OnTokenDone(CacheManager.TokenCacheStats c)
        {
            double Ms(long ticks) => ticks * 1000.0 / Stopwatch.Frequency;
            double wait = Ms(_waitTicks + _attnIoTicks); // streamed attention reads block the step: all wait
            double io = c.IoMs + Ms(_attnIoTicks);
            var stats = new TokenStats
            {
                TokenIndex = _pos,
                Prefill = IsPrefill,
                BytesRead = c.BytesRead + _attnBytes,
                Reads = c.Reads + _attnReads,
                NeuronsActive = c.NeuronsActive,
                NeuronsLoaded = c.NeuronsLoaded,
                NeuronsPinnedHit = c.PinnedHits,
                NeuronsWindowHit = c.WindowHits,
                NeuronsEvicted = c.NeuronsEvicted,
                CachedRows = c.CachedRows,
                IoMs = io,
                MemMs = c.MemMs,
                ComputeMs = Ms(_computeTicks),
                WaitMs = wait,
                PredictMs = Ms(_predictTicks),
                OverlapMs = Math.Max(0, io - wait),
                TotalMs = Ms(Stopwatch.GetTimestamp() - _tokenStart),
                DramBytes = c.DramBytes + _p.FixedBytes,
                Predicted = _measured ? _predicted : null,
                TrulyActive = _measured ? _truth : null,
                FalsePositive = _measured ? _fp : null,
                FalseNegative = _measured ? _fn : null,
                LookaheadGuessed = _guessLayers > 0 ? _guessed : null,
                LookaheadGuessHits = _guessLayers > 0 ? _guessHits : null,
                LookaheadGuessTruth = _guessLayers > 0 ? _guessTruth : null,
                FirstReadTicks = c.ReadStartTicks,
                Messages = (int)Math.Min(int.MaxValue, (_p.Messages?.Value ?? 0) - _messagesAtStart),
            };
            int lookaheadLayers = 0, overlapped = 0;
            for (int l = 1; l < _layers; l++)
            {
                long start = c.PrefetchStartTicks[l];
                if (start == 0) continue;
                lookaheadLayers++;
                if (start < _ffnEnd[l - 1]) overlapped++;
            }
            stats = stats with { LookaheadLayers = lookaheadLayers, LookaheadOverlapped = overlapped };
            if (_expertNeurons > 0)
            {
                double e = _expertNeurons;
                stats = stats with
                {
                    ExpertsUsed = c.NeuronsActive / e, ExpertsHit = (c.WindowHits + c.PinnedHits) / e, ExpertsRead = c.NeuronsLoaded / e,
                    ExpertsPrefetchedUsed = _guessLayers > 0 ? _guessHits / e : 0,
                };
            }
            bool fromPrompt = IsPrefill;
            int next = _next;
            int prev = _token;
            _pos++;
            if (next == _tok.BosId)
            {
                _token = next;
                Complete();
                return;
            }
            var ev = new TokenEvent(_pos - 1, next, _tok.Piece(prev, next), fromPrompt, stats);
            _token = next;
            // Back-pressure: wait for room in the consumer's channel before the next position.
            Become(AwaitingConsumer);
            if (_out.TryWrite(ev)) Self.Tell(Continue.Instance);
            else
            {
                var self = Self;
                Context.SetReceiveTimeout(null); // waiting for the consumer is not a stall
                _awaiting = ("session", "the consumer to take a token");
                _out.WriteAsync(ev, _ct).AsTask().ContinueWith(t =>
                {
                    if (t.IsCompletedSuccessfully) self.Tell(Continue.Instance);
                    else self.Tell(new Status.Failure(t.Exception?.GetBaseException() ?? new OperationCanceledException()));
                });
            }
        }

        private void Complete()
        {
            _finished?.TrySetResult(new Finished(_pos, _token));
            _out.TryComplete();
            Context.Stop(Self);
        }

        private void Fail(Exception e)
        {
            Context.SetReceiveTimeout(null);
            _finished?.TrySetException(e);
            _out.TryComplete(e);
            Context.Stop(Self);
        }
    }
}
