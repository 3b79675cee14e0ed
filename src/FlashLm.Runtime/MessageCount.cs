namespace FlashLm.Runtime;

/// <summary>
/// Messages handled by one runtime's actors (sessions, predictor, cache manager, compute; each finished read counts for the
/// reader's request and its answer). A session reports the difference over each position as TokenStats.Messages: exact
/// with one session, the whole pipeline's traffic during the position when sessions overlap. Thread-safe.
/// </summary>
internal sealed class MessageCount
{
    private long _value;

    public long Value => Interlocked.Read(ref _value);

    public void Add(int n = 1) => Interlocked.Add(ref _value, n);
}
