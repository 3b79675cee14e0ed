using Akka.Actor;

namespace FlashLm.Runtime;

/// <summary>
/// A stateless pipeline stage (layer compute, the predictor): counts what it handles, and turns an exception in a step
/// into a failure of the one session the step ran for, naming the stage and the step. Nothing else is touched, so the
/// stage goes on serving the other sessions as if nothing had happened (its supervisor never restarts it).
/// </summary>
internal abstract class StageActor(string stage, MessageCount? messages) : ReceiveActor
{
    /// <summary>What a message asks of the stage, for the error ("the FFN of layer 3").</summary>
    protected abstract string Describe(object message);

    /// <summary>The session a message's failure belongs to (forward-path messages carry their route; else the sender).</summary>
    protected abstract IActorRef SessionOf(object message);

    protected sealed override bool AroundReceive(Receive receive, object message)
    {
        messages?.Add();
        try
        {
            return base.AroundReceive(receive, message);
        }
        catch (Exception e)
        {
            SessionOf(message).Tell(new Status.Failure(new PipelineException(stage, $"{Describe(message)} failed: {e.Message}", e)));
            return true;
        }
    }
}
