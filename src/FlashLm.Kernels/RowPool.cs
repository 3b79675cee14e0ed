using System.Diagnostics;

namespace FlashLm.Kernels;

/// <summary>Work split into numbered chunks for <see cref="RowPool"/>: <see cref="Run"/> may be called on any thread, each chunk once.</summary>
internal abstract class RowJob
{
    /// <summary>Runs chunk <paramref name="chunk"/> of the current job.</summary>
    public abstract void Run(int chunk);
}

/// <summary>
/// A fork/join for the many small products of one decode step (a Llama-1B token runs 150+ of them, a few tens of
/// microseconds each): background threads of its own (one per core besides the caller) that spin briefly between
/// jobs instead of going back to the thread pool, and chunks claimed one at a time, so a descheduled thread holds
/// up at most the chunk it is in. The caller works too. One job runs at a time; a caller that finds the pool busy
/// (another session computing) runs its job alone on its own thread, so nothing ever waits for a job it is not
/// part of (no deadlock) and results never depend on who ran which chunk (each chunk writes its own outputs).
/// </summary>
internal sealed class RowPool
{
    /// <summary>The process-wide pool: ProcessorCount - 1 workers, started on first use.</summary>
    public static RowPool Shared => s_shared.Value;
    private static readonly Lazy<RowPool> s_shared = new(() => new RowPool(Environment.ProcessorCount - 1));

    /// <summary>How long an idle worker spins for the next job before it blocks.</summary>
    private static readonly long SpinTicks = Stopwatch.Frequency / 5000; // 200 us

    private readonly object _owner = new();  // held by the caller whose job is running
    private readonly object _sleep = new();  // idle workers block here
    private int _sleepers;
    private RowJob? _job;
    // generation (24 bits) | chunk count (20 bits) | next chunk (20 bits): a claim checks all three at once,
    // so a worker that arrives late for a job can never claim a chunk of the next one by mistake.
    private long _ticket;
    private readonly PaddedCount _done = new(); // chunks finished in this generation (its own cache line: not the ticket's)
    private int _generation;
    private Exception? _error;               // the first a chunk of this job threw

    /// <summary>The most chunks one job may have.</summary>
    public const int MaxChunks = (1 << 20) - 1;
    private const int GenShift = 40, ChunkShift = 20, GenMask = (1 << 24) - 1;
    private static int Gen(long ticket) => (int)(ticket >>> GenShift);

    public int Workers { get; }

    public RowPool(int workers)
    {
        Workers = Math.Max(0, workers);
        for (int i = 0; i < Workers; i++)
            new Thread(Work) { IsBackground = true, Name = $"FlashLm row worker {i}" }.Start();
    }

    /// <summary>Runs chunks 0..chunks-1 of <paramref name="job"/>, on this thread and the workers; returns when all are done.</summary>
    public void Run(RowJob job, int chunks)
    {
        if (chunks <= 0) return;
        if (chunks > MaxChunks) throw new ArgumentOutOfRangeException(nameof(chunks), chunks, $"at most {MaxChunks} chunks");
        // Monitor is re-entrant: a job that ran another job from inside a chunk (none does today) runs it alone too.
        if (Workers == 0 || chunks == 1 || Monitor.IsEntered(_owner) || !Monitor.TryEnter(_owner))
        {
            for (int c = 0; c < chunks; c++) job.Run(c);
            return;
        }
        try
        {
            int gen = (_generation + 1) & GenMask;
            _job = job;
            _done.Value = 0;
            _generation = gen;
            Interlocked.Exchange(ref _ticket, ((long)gen << GenShift) | ((long)chunks << ChunkShift)); // publishes the fields above; full fence
            if (Volatile.Read(ref _sleepers) > 0)
                lock (_sleep) Monitor.PulseAll(_sleep);
            Claim(gen, job);
            var spin = new SpinWait();
            while (Volatile.Read(ref _done.Value) < chunks) spin.SpinOnce(-1); // only chunks a worker is inside remain
            if (Interlocked.Exchange(ref _error, null) is { } e) System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(e);
        }
        finally
        {
            _job = null;
            Monitor.Exit(_owner);
        }
    }

    /// <summary>Runs chunks of generation <paramref name="gen"/> until none is left to claim.</summary>
    private void Claim(int gen, RowJob job)
    {
        while (true)
        {
            long t = Volatile.Read(ref _ticket);
            if (Gen(t) != gen) return;
            int c = (int)(t & MaxChunks), chunks = (int)((t >> ChunkShift) & MaxChunks);
            if (c >= chunks) return;
            if (Interlocked.CompareExchange(ref _ticket, t + 1, t) != t) continue;
            try { job.Run(c); }
            catch (Exception e) { Interlocked.CompareExchange(ref _error, e, null); } // rethrown by the caller, once every chunk is done
            finally { Interlocked.Increment(ref _done.Value); }
        }
    }

    private void Work()
    {
        int seen = 0;
        while (true)
        {
            long start = Stopwatch.GetTimestamp();
            while (Gen(Volatile.Read(ref _ticket)) == seen)
            {
                if (Stopwatch.GetTimestamp() - start < SpinTicks) { Thread.SpinWait(32); continue; }
                lock (_sleep)
                {
                    Interlocked.Increment(ref _sleepers); // full fence: a caller that posts after this sees a sleeper
                    while (Gen(Volatile.Read(ref _ticket)) == seen) Monitor.Wait(_sleep);
                    Interlocked.Decrement(ref _sleepers);
                }
            }
            int gen = Gen(Volatile.Read(ref _ticket));
            seen = gen;
            // The job was written before the ticket and stays until every chunk of gen is done; a chunk is only run
            // after a successful claim in gen (which implies gen is not done), so a job read here that belongs to a
            // later generation is never run under gen's claim.
            var job = Volatile.Read(ref _job);
            if (job is null) continue;
            Claim(gen, job);
        }
    }


    /// <summary>A counter alone on its cache line.</summary>
    [System.Runtime.InteropServices.StructLayout(System.Runtime.InteropServices.LayoutKind.Explicit, Size = 192)]
    private sealed class PaddedCount
    {
        [System.Runtime.InteropServices.FieldOffset(64)] public int Value;
    }
}
