using FlashLm.Runtime;
using FlashLm.Runtime.Session;

namespace FlashLm.Cluster;

/// <summary>
/// The sessions of one node's runtime, lent to the conversations it holds: a conversation keeps its session (its KV cache)
/// between turns while the node has room; when all flashlm.max-sessions are taken, the conversation idle the longest gives
/// its session up (its next turn restarts from the transcript), and when every session is generating a turn waits for one.
/// </summary>
internal sealed class SessionPool(FlashRuntime runtime)
{
    /// <summary>One conversation's claim on a session.</summary>
    internal sealed class Slot
    {
        public FlashSession? Session;
        public bool Busy;
        public bool Forgotten; // the conversation ended while a turn held the slot: the turn's end gives the session back
        public LinkedListNode<Slot>? Idle;
    }

    private readonly object _gate = new();
    private readonly LinkedList<Slot> _idle = new(); // least recently used first
    private readonly LinkedList<TaskCompletionSource> _waiting = new();
    private int _open;

    /// <summary>Sessions open on this node.</summary>
    public int Open
    {
        get
        {
            lock (_gate) return _open;
        }
    }

    /// <summary>
    /// The slot's session for a turn: its own when it still has it (Kept true), else a new one (taking the
    /// longest-idle conversation's session when the node is full), waiting up to <paramref name="wait"/> when every session
    /// is generating.
    /// </summary>
    public async Task<(FlashSession Session, bool Kept)> AcquireAsync(Slot slot, TimeSpan wait, CancellationToken cancellation)
    {
        var deadline = DateTime.UtcNow + wait;
        while (true)
        {
            TaskCompletionSource signal;
            FlashSession? evicted = null;
            lock (_gate)
            {
                if (slot.Busy) throw new InvalidOperationException("the conversation already holds its session for a turn");
                if (slot.Session is not null)
                {
                    if (slot.Idle is not null) _idle.Remove(slot.Idle);
                    slot.Idle = null;
                    slot.Busy = true;
                    return (slot.Session, true);
                }
                if (_open >= runtime.Settings.MaxSessions && _idle.First is { } lru)
                {
                    var victim = lru.Value;
                    _idle.RemoveFirst();
                    victim.Idle = null;
                    evicted = victim.Session;
                    victim.Session = null;
                    _open--;
                }
                if (_open < runtime.Settings.MaxSessions)
                {
                    _open++;
                    slot.Busy = true;
                    signal = null!;
                }
                else
                {
                    signal = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                    _waiting.AddLast(signal);
                }
            }
            evicted?.Dispose();
            if (signal is null)
            {
                try
                {
                    var created = await runtime.CreateSessionAsync(cancellation).ConfigureAwait(false);
                    lock (_gate)
                    {
                        if (!slot.Forgotten)
                        {
                            slot.Session = created;
                            return (created, false);
                        }
                    }
                    created.Dispose(); // the conversation ended meanwhile
                    throw new OperationCanceledException("the conversation ended while its session was being opened");
                }
                catch
                {
                    lock (_gate)
                    {
                        _open--;
                        slot.Busy = false;
                    }
                    Signal();
                    throw;
                }
            }
            var left = deadline - DateTime.UtcNow;
            try
            {
                if (left <= TimeSpan.Zero) throw new TimeoutException();
                await signal.Task.WaitAsync(left, cancellation).ConfigureAwait(false);
            }
            catch (TimeoutException)
            {
                lock (_gate) _waiting.Remove(signal);
                if (signal.Task.IsCompletedSuccessfully) Signal(); // woken as the wait ran out: pass the wake-up on
                throw new FlashLm.Server.ModelBusyException($"all {runtime.Settings.MaxSessions} sessions of this node (flashlm.max-sessions) stayed busy generating for {wait.TotalSeconds:0.#} s");
            }
            catch (OperationCanceledException)
            {
                lock (_gate) _waiting.Remove(signal);
                if (signal.Task.IsCompletedSuccessfully) Signal();
                throw;
            }
        }
    }

    /// <summary>The turn ended: the slot keeps its session (most recently used) unless <paramref name="drop"/>.</summary>
    public void Release(Slot slot, bool drop)
    {
        FlashSession? closed = null;
        lock (_gate)
        {
            if (!slot.Busy) return;
            slot.Busy = false;
            if ((drop || slot.Forgotten) && slot.Session is not null)
            {
                closed = slot.Session;
                slot.Session = null;
                _open--;
            }
            else if (slot.Session is not null) slot.Idle = _idle.AddLast(slot);
        }
        closed?.Dispose();
        Signal();
    }

    /// <summary>The conversation ended (passivated, handed off, stopped): its session goes back to the runtime.</summary>
    public void Forget(Slot slot)
    {
        FlashSession? closed;
        lock (_gate)
        {
            slot.Forgotten = true;
            if (slot.Busy) return; // the running turn's end gives the session back (Release)
            if (slot.Idle is not null) _idle.Remove(slot.Idle);
            slot.Idle = null;
            closed = slot.Session;
            slot.Session = null;
            if (closed is not null) _open--;
        }
        closed?.Dispose();
        Signal();
    }

    private void Signal()
    {
        TaskCompletionSource? next = null;
        lock (_gate)
        {
            if (_waiting.First is { } first)
            {
                next = first.Value;
                _waiting.RemoveFirst();
            }
        }
        next?.TrySetResult();
    }
}
