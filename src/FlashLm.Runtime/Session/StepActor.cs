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
/// One position through a runtime's layers as a stage of a pipeline across nodes (<see cref="FlashRuntime.RunStageAsync"/>):
/// the input is the token (the first stage embeds it) or the hidden state the previous stage produced; each layer runs on
/// its forward path (<see cref="LayerPath"/>) as in <see cref="SessionActor"/>; the output is the hidden state after the last
/// layer, or the logits when this stage also runs the head. Stops after the position; a failure or stall fails the task.
/// </summary>
internal static class StepActor
{
    public sealed record Start;

    /// <param name="token">The token at <paramref name="position"/>, embedded by the first layer; -1 when
    /// <paramref name="hidden"/> is the input.</param>
    public static Props Props(SessionActor.Parts parts, InferenceState state, int layers, int position, int token, float[]? hidden, bool head, bool prefill,
        TaskCompletionSource<StageOutput> done, CancellationToken cancellation) =>
        Akka.Actor.Props.Create(() => new Actor(parts, state, layers, position, token, hidden, head, prefill, done, cancellation));

    private sealed class Actor : ReceiveActor
    {
        private readonly SessionActor.Parts _p;
        private readonly InferenceState _s;
        private readonly int _layers, _token;
        private readonly bool _head;
        private readonly TaskCompletionSource<StageOutput> _done;
        private readonly CancellationToken _ct;
        private readonly LayerPath.Route _route;
        private readonly long _start = Stopwatch.GetTimestamp();
        private long _computeTicks;
        private float[]? _output;
        private int _layer;
        private string _awaiting = "start";

        public Actor(SessionActor.Parts p, InferenceState s, int layers, int position, int token, float[]? hidden, bool head, bool prefill,
            TaskCompletionSource<StageOutput> done, CancellationToken ct)
        {
            _p = p;
            _s = s;
            _layers = layers;
            _token = token;
            _head = head;
            _done = done;
            _ct = ct;
            if (hidden is not null) hidden.AsSpan().CopyTo(s.X);
            _route = new LayerPath.Route(Self, p.Compute, p.Predictor, p.Cache, s, position, prefill);
            Receive<Start>(_ => Attend());
            Receive<LayerCompute.LayerDone>(d =>
            {
                _computeTicks += d.Tally.ComputeTicks;
                if (_ct.IsCancellationRequested)
                {
                    Fail(new OperationCanceledException(_ct));
                    return;
                }
                if (++_layer < _layers) Attend();
                else if (_head)
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
                _computeTicks += h.Ticks;
                _output = h.Logits.ToArray();
                Finish();
            });
            Receive<CacheManager.TokenCacheStats>(c =>
            {
                Context.SetReceiveTimeout(null);
                double Ms(long ticks) => ticks * 1000.0 / Stopwatch.Frequency;
                _done.TrySetResult(new StageOutput(_output!, c.BytesRead, c.NeuronsActive, c.WindowHits + c.PinnedHits,
                    Ms(Stopwatch.GetTimestamp() - _start), Ms(_computeTicks)));
                Context.Stop(Self);
            });
            Receive<CacheManager.AcquireFailed>(f => Fail(new PipelineException("loader", f.Error, new IOException(f.Error))));
            Receive<Status.Failure>(f => Fail(f.Cause));
            Receive<ReceiveTimeout>(_ => Fail(new PipelineException("stage",
                $"no progress for {_p.StallTimeout?.TotalSeconds:0.###} s (flashlm.session-stall-timeout) while the stage waited for {_awaiting} at position {_route.Position}",
                new TimeoutException())));
            ReceiveAny(m => Fail(new PipelineException("stage", $"position {_route.Position}: {m.GetType().Name} arrived while the stage waited for {_awaiting} (a protocol error)",
                new InvalidOperationException(m.GetType().FullName))));
        }

        protected override void PreStart()
        {
            if (_p.StallTimeout is { } stall) Context.SetReceiveTimeout(stall);
        }

        /// <summary>However the actor stops (its system shutting down, say), the step's task ends.</summary>
        protected override void PostStop() =>
            _done.TrySetException(new PipelineException("stage", $"position {_route.Position}: the step stopped before it finished", new OperationCanceledException()));

        protected override bool AroundReceive(Receive receive, object message)
        {
            _p.Messages?.Add();
            try
            {
                return base.AroundReceive(receive, message);
            }
            catch (Exception e)
            {
                Fail(new PipelineException("stage", $"position {_route.Position}: handling {message.GetType().Name} failed: {e.Message}", e));
                return true;
            }
        }

        private void Attend()
        {
            _awaiting = $"attention of layer {_layer} (then its active set, rows and FFN)";
            // The first stage's layer 0 embeds the token; a later stage's input is already in the residual stream.
            _p.Compute.Tell(new LayerCompute.RunLayer(_route, _layer, _layer == 0 ? _token : -1));
        }

        private void Finish()
        {
            _awaiting = "the position's cache statistics";
            _p.Cache.Tell(new CacheManager.TokenDone(_route.Position));
        }

        private void Fail(Exception e)
        {
            Context.SetReceiveTimeout(null);
            _done.TrySetException(e);
            Context.Stop(Self);
        }
    }
}
