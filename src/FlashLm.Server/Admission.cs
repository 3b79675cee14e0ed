namespace FlashLm.Server;

/// <summary>
/// Admission in front of the runtime: as many requests run as the runtime has sessions (flashlm.max-sessions); up to
/// flashlm.server.queue-limit more wait, in arrival order, at most flashlm.server.queue-timeout; the rest are refused
/// (the caller answers 429). The runtime itself then never waits for a session.
/// </summary>
internal sealed class Admission(int slots, int queueLimit, TimeSpan timeout)
{
    private readonly SemaphoreSlim _slots = new(slots, slots);
    private int _queued;

    /// <summary>Requests waiting for a slot.</summary>
    public int Queued => Volatile.Read(ref _queued);

    /// <summary>Requests holding a slot.</summary>
    public int Running => slots - _slots.CurrentCount;

    public int Slots => slots;

    /// <summary>A slot (dispose it to give it back), or null when the queue is full or the wait timed out.</summary>
    public async Task<IDisposable?> EnterAsync(CancellationToken cancellation)
    {
        if (_slots.Wait(0)) return new Lease(_slots);
        if (Interlocked.Increment(ref _queued) > queueLimit)
        {
            Interlocked.Decrement(ref _queued);
            return null;
        }
        try
        {
            return await _slots.WaitAsync(timeout, cancellation).ConfigureAwait(false) ? new Lease(_slots) : null;
        }
        finally
        {
            Interlocked.Decrement(ref _queued);
        }
    }

    private sealed class Lease(SemaphoreSlim slots) : IDisposable
    {
        private int _done;

        public void Dispose()
        {
            if (Interlocked.Exchange(ref _done, 1) == 0) slots.Release();
        }
    }
}
