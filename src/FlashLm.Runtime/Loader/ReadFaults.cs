using Microsoft.Win32.SafeHandles;

namespace FlashLm.Runtime.Loader;

/// <summary>
/// Test hook: faults a reader injects into its own reads, at the four points where real storage fails.
/// Every method runs on the reader's thread, once per attempt (<see cref="FlashLoader.ReadRequest.Attempt"/>);
/// the defaults inject nothing. Not part of the public API: tests reach it through InternalsVisibleTo.
/// </summary>
internal abstract class ReadFaults
{
    /// <summary>Before the read: may throw an <see cref="IOException"/> (EIO) or sleep (a slow device).</summary>
    public virtual void Before(FlashLoader.ReadRequest request)
    {
    }

    /// <summary>
    /// One pread call of the read (DirectFile loops until the range is full): may return fewer bytes than asked
    /// (a short read), 0 (an early end of file) or throw. The default reads.
    /// </summary>
    public virtual int Pread(FlashLoader.ReadRequest request, SafeFileHandle handle, Span<byte> buffer, long fileOffset) =>
        RandomAccess.Read(handle, buffer, fileOffset);

    /// <summary>After the bytes landed, before they are checked: may flip bits. <paramref name="landed"/> holds the file's bytes
    /// from <paramref name="fileOffset"/> on: the whole range (direct: in the rows; staged: in the staging buffer), or for a
    /// scatter read one call per wanted bundle, in its row.</summary>
    public virtual void Landed(FlashLoader.ReadRequest request, Span<byte> landed, long fileOffset)
    {
    }

    /// <summary>
    /// After the check, before the reply: true kills the reader mid-read (it throws <see cref="ReaderKilledException"/>,
    /// its supervisor restarts it and the read is retried, as for any crash).
    /// </summary>
    public virtual bool Kill(FlashLoader.ReadRequest request) => false;
}

/// <summary>A reader killed mid-read by <see cref="ReadFaults.Kill"/>.</summary>
internal sealed class ReaderKilledException(string message) : Exception(message);

/// <summary>A bundle whose bytes do not match ffn.sums; the message names the file, layer, neuron and offset.</summary>
public sealed class BundleChecksumException(string message) : IOException(message);
