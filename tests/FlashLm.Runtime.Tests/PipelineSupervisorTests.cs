using Akka.Actor;
using FlashLm.Runtime;
using Xunit;

namespace FlashLm.Tests.Runtime;

/// <summary>The runtime's supervisor: an exception that escapes a stage stops it (never a restart) and stops the runtime, saying which.</summary>
public sealed class PipelineSupervisorTests : Akka.TestKit.Xunit2.TestKit
{
    public PipelineSupervisorTests() : base(RuntimeTestConfig.Hocon)
    {
    }

    private sealed class Throwing : ReceiveActor
    {
        public static int Started;

        public Throwing()
        {
            Interlocked.Increment(ref Started);
            ReceiveAny(_ => throw new InvalidOperationException("escaped"));
        }
    }

    [Fact]
    public void An_exception_that_escapes_a_stage_stops_it_without_a_restart_and_reports_the_stage()
    {
        var reasons = new System.Collections.Concurrent.ConcurrentQueue<string>();
        var supervisor = Sys.ActorOf(PipelineSupervisor.Props(reasons.Enqueue));
        int before = Volatile.Read(ref Throwing.Started);
        supervisor.Tell(new PipelineSupervisor.Spawn(Props.Create(() => new Throwing()), "stage", "compute"), TestActor);
        var stage = ExpectMsg<IActorRef>();
        Watch(stage);
        stage.Tell("anything");
        ExpectTerminated(stage);
        AwaitAssert(() => Assert.Equal(["the compute stopped unexpectedly"], reasons.ToArray()));
        Assert.Equal(before + 1, Volatile.Read(ref Throwing.Started)); // stopped, not restarted (a restart would construct it again)
    }

    [Fact]
    public void Stages_stopping_during_shutdown_are_expected()
    {
        var reasons = new System.Collections.Concurrent.ConcurrentQueue<string>();
        var supervisor = Sys.ActorOf(PipelineSupervisor.Props(reasons.Enqueue));
        supervisor.Tell(new PipelineSupervisor.Spawn(Props.Create(() => new Throwing()), "stage", "cache manager"), TestActor);
        var stage = ExpectMsg<IActorRef>();
        Watch(stage);
        supervisor.Tell(new PipelineSupervisor.ShuttingDown());
        Sys.Stop(stage);
        ExpectTerminated(stage);
        ExpectNoMsg(TimeSpan.FromMilliseconds(200));
        Assert.Empty(reasons);
    }
}
