using System.Diagnostics;
using Akka.Actor;
using FlashLm.Models;
using FlashLm.Runtime.Cache;
using FlashLm.Runtime.Compute;

namespace FlashLm.Runtime.Session;

/// <summary>What one position of a stage produced: the hidden state after the stage's last layer, or the logits when the
/// stage ran the head; with what the position read and how long it took.</summary>
/// <param name="Output">The residual stream (dim) after the stage's layers, or the logits (vocab) after the head.</param>
public sealed record StageOutput(float[] Output, long BytesRead, int NeuronsActive, int NeuronsHit, double TotalMs, double ComputeMs);

/// <summary>
/// A session's positions through a runtime's layers as a stage of a pipeline across nodes (<see cref="FlashRuntime.RunStageAsync"/>):
/// one actor per session for as long as it stages, so the predictor's and the cache's memory of the session (the previous
/// position's active sets, for lookahead) carries from position to position as in a whole turn. Each <see cref="Run"/>
/// takes the token (the first stage embeds it) or the hidden state the previous stage produced; each layer runs on its
/// forward path (<see cref="LayerPath"/>) as in <see cref="SessionActor"/>; the output is the hidden state after the last
/// layer, or the logits when this stage also runs the head. Positions run one at a time, in the order they came. A failure
/// or stall fails the position's task and stops the actor (what it held is released; the next position starts a new one).
/// </summary>
internal static class StepActor
{
    /// <param name="Token">The token at <paramref name="Position"/>, embedded by the first layer; -1 when <paramref name="Hidden"/> is the input.</param>
    public sealed record Run(int Position, int Token, float[]? Hidden, bool Head, bool Prefill, TaskCompletionSource<StageOutput> Done, CancellationToken Cancellation);

    public static Props Props(SessionActor.Parts parts, InferenceState state, int layers) =>
        Akka.Actor.Props.Create(() => new Actor(parts, state, layers));

    private sealed class Actor : ReceiveActor, IWithUnboundedStash
    {
        private readonly SessionActor.Parts _p;
        private readonly InferenceState _s;
        private readonly int _layers;
        private Run? _run; // the position in progress
        private LayerPath.Route? _route;
        private long _start, _computeTicks;
        private float[]? _output;
        private int _layer;
        private string _awaiting = "start";
        private bool _reset;

        public IStash Stash { get; set; } = null!;

        public Actor(SessionActor.Parts p, InferenceState s, int layers)
        {
            _p = p;
            _s = s;
            _layers = layers;
            Receive<Run>(r =>
            {
                if (_run is not null)
                {
                    Stash.Stash();
                    return;
                }
                Begin(r);
            });
            Receive<LayerCompute.LayerDone>(d =>
            {
                if (_run is not { } r) return;
                _computeTicks += d.Tally.ComputeTicks;
                if (r.Cancellation.IsCancellationRequested)
                {
                    Fail(new OperationCanceledException(r.Cancellation));
                    return;
                }
                if (++_layer < _layers) Attend();
                else if (r.Head)
                {
                    _awaiting = "the LM head";
                    _p.Compute.Tell(new LayerCompute.RunHead(_s));
                }
                else
                {
                    _output = _s.X.ToArray();
                    Finish();
                }
            });
            Receive<LayerCompute.HeadDone>(h =>
            {
                if (_run is null) return;
                _computeTicks += h.Ticks;
                _output = h.Logits.ToArray();
                Finish();
            });
            Receive<CacheManager.TokenCacheStats>(c =>
            {
                if (_run is not { } r) return;
                Context.SetReceiveTimeout(null);
                double Ms(long ticks) => ticks * 1000.0 / Stopwatch.Frequency;
                r.Done.TrySetResult(new StageOutput(_output!, c.BytesRead, c.NeuronsActive, c.WindowHits + c.PinnedHits,
                    Ms(Stopwatch.GetTimestamp() - _start), Ms(_computeTicks)));
                _run = null;
                Stash.Unstash();
            });
            Receive<CacheManager.AcquireFailed>(f => Fail(new PipelineException("loader", f.Error, new IOException(f.Error))));
            Receive<Status.Failure>(f => Fail(f.Cause));
            Receive<ReceiveTimeout>(_ => Fail(new PipelineException("stage",
                $"no progress for {_p.StallTimeout?.TotalSeconds:0.###} s (flashlm.session-stall-timeout) while the stage waited for {_awaiting} at position {_route?.Position}",
                new TimeoutException())));
            ReceiveAny(m => Fail(new PipelineException("stage", $"position {_route?.Position}: {m.GetType().Name} arrived while the stage waited for {_awaiting} (a protocol error)",
                new InvalidOperationException(m.GetType().FullName))));
        }

        protected override bool AroundReceive(Receive receive, object message)
        {
            _p.Messages?.Add();
            try
            {
                return base.AroundReceive(receive, message);
            }
            catch (Exception e)
            {
                Fail(new PipelineException("stage", $"position {_route?.Position}: handling {message.GetType().Name} failed: {e.Message}", e));
                return true;
            }
        }

        /// <summary>However the actor stops (a failure, the session closing, the system shutting down), no position waits on it.</summary>
        protected override void PostStop()
        {
            var stopped = new PipelineException("stage", "the session's stage stopped before the position finished", new OperationCanceledException());
            _run?.Done.TrySetException(stopped);
            foreach (var envelope in Stash.ClearStash())
                if (envelope.Message is Run waiting) waiting.Done.TrySetException(stopped);
        }

        private void Begin(Run r)
        {
            if (!_reset)
            {
                _p.Predictor.Tell(new Predict.Predictor.Reset()); // nothing of another session to look back on
                _reset = true;
            }
            _run = r;
            _start = Stopwatch.GetTimestamp();
            _computeTicks = 0;
            _output = null;
            _layer = 0;
            if (r.Hidden is not null) r.Hidden.AsSpan().CopyTo(_s.X);
            _route = new LayerPath.Route(Self, _p.Compute, _p.Predictor, _p.Cache, _s, r.Position, r.Prefill);
            if (_p.StallTimeout is { } stall) Context.SetReceiveTimeout(stall);
            Attend();
        }

        private void Attend()
        {
            _awaiting = $"attention of layer {_layer} (then its active set, rows and FFN)";
            // The first stage's layer 0 embeds the token; a later stage's input is already in the residual stream.
            _p.Compute.Tell(new LayerCompute.RunLayer(_route!, _layer, _layer == 0 ? _run!.Token : -1));
        }

        private void Finish()
        {
            _awaiting = "the position's cache statistics";
            _p.Cache.Tell(new CacheManager.TokenDone(_route!.Position));
        }

        private void Fail(Exception e)
        {
            Context.SetReceiveTimeout(null);
            _run?.Done.TrySetException(e);
            _run = null;
            Context.Stop(Self); // what it held (leases, the predictor's memory of it) is released when it is gone
        }
    }
}
