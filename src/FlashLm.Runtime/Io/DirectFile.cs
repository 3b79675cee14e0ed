using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace FlashLm.Runtime.Io;

/// <summary>
/// A read-only file opened with O_DIRECT on Linux, so reads bypass the page cache and the DRAM budget
/// stays real. FileOptions cannot ask for O_DIRECT, so the file is opened through libc.
/// Contract: every read's offset, length and buffer address are multiples of 4096.
/// Where the file system refuses O_DIRECT (e.g. tmpfs) the file is opened buffered and
/// <see cref="IsDirect"/> says so.
/// </summary>
public sealed partial class DirectFile : IDisposable
{
    private const int O_RDONLY = 0, O_DIRECT_X64 = 0x4000, O_DIRECT_ARM64 = 0x10000, O_CLOEXEC = 0x80000;

    [LibraryImport("libc", EntryPoint = "open", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    private static partial int Open(string path, int flags);

    [LibraryImport("libc", EntryPoint = "preadv", SetLastError = true)]
    private static unsafe partial nint Preadv(int fd, IoSegment* iov, int count, long offset);

    /// <summary>Most buffers one vectored read may name (Linux's IOV_MAX).</summary>
    public const int MaxSegments = 1024;

    public string Path { get; }
    public SafeFileHandle Handle { get; }
    public long Length { get; }
    public bool IsDirect { get; }

    public DirectFile(string path, bool direct = true)
    {
        Path = path;
        if (!File.Exists(path)) throw new FileNotFoundException($"{path}: no such file", path);
        Length = new FileInfo(path).Length;
        if (direct && OperatingSystem.IsLinux())
        {
            int flag = RuntimeInformation.ProcessArchitecture == Architecture.Arm64 ? O_DIRECT_ARM64 : O_DIRECT_X64;
            int fd = Open(path, O_RDONLY | flag | O_CLOEXEC);
            if (fd >= 0)
            {
                Handle = new SafeFileHandle(fd, ownsHandle: true);
                IsDirect = true;
                return;
            }
        }
        Handle = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.Read, FileOptions.RandomAccess);
    }

    /// <summary>One positioned read call: bytes read into <paramref name="buffer"/> from <paramref name="offset"/> (0 = end of file).</summary>
    internal delegate int Pread(SafeFileHandle handle, Span<byte> buffer, long offset);

    /// <summary>Consecutive short reads that end inside a 4096-byte block (no aligned progress) before the read fails.</summary>
    private const int MaxStalls = 8;

    /// <summary>
    /// Reads [offset, offset + length) into <paramref name="destination"/> (all 4096-aligned when direct).
    /// Bytes past the end of the file (as it was when opened) read as zero. Throws IOException naming the file and offset.
    /// </summary>
    public unsafe void Read(long offset, byte* destination, int length) => Read(offset, destination, length, null);

    /// <summary>
    /// As <see cref="Read(long, byte*, int)"/>, each read call made through <paramref name="pread"/> (a test hook injecting
    /// faults; null = the operating system). A short read is continued: with O_DIRECT from the last whole 4096-byte block
    /// it delivered (the next call must stay aligned), failing after <see cref="MaxStalls"/> calls without progress. An end of
    /// file before <see cref="Length"/> (the file shrank, or the device lied) is an IOException, not zeros.
    /// </summary>
    internal unsafe void Read(long offset, byte* destination, int length, Pread? pread)
    {
        if (IsDirect && ((offset | (long)length | (long)destination) & (AlignedBuffer.Alignment - 1)) != 0)
            throw new ArgumentException($"{Path}: O_DIRECT read at offset {offset}, length {length} is not 4096-aligned");
        int done = 0, stalls = 0;
        while (done < length)
        {
            int n;
            var buffer = new Span<byte>(destination + done, length - done);
            try
            {
                n = pread is null ? RandomAccess.Read(Handle, buffer, offset + done) : pread(Handle, buffer, offset + done);
            }
            catch (IOException e)
            {
                throw new IOException($"{Path}: read error at offset {offset + done}: {e.Message}", e);
            }
            if (n < 0 || n > buffer.Length)
                throw new IOException($"{Path}: read at offset {offset + done} returned {n} bytes for a {buffer.Length}-byte request");
            long at = offset + done;
            if (n == 0 || at + n >= Length)
            {
                // End of file: expected only at Length (page-rounded reads of the last bundles run past it); zeros beyond.
                if (at + n < Length)
                    throw new IOException($"{Path}: read at offset {at} hit the end of the file, but the file is {Length} bytes (truncated while open?)");
                new Span<byte>(destination + done + n, length - done - n).Clear();
                return;
            }
            int next = done + n;
            // O_DIRECT: the next call must start on a block boundary; re-read the partial block.
            if (IsDirect) next = (int)AlignedBuffer.AlignDown(next);
            if (next == done)
            {
                if (++stalls >= MaxStalls)
                    throw new IOException($"{Path}: {stalls} short reads at offset {at} delivered less than one {AlignedBuffer.Alignment}-byte block each; giving up");
                continue;
            }
            stalls = 0;
            done = next;
        }
    }

    /// <summary>
    /// Reads [offset, offset + total of the segments' lengths) into the segments in order (a scatter read: one system call,
    /// one file range, many buffers; all 4096-aligned when direct). A short read is continued segment by segment through
    /// <see cref="Read(long, byte*, int, Pread?)"/>, which owns the end-of-file rules; so is every read made through a test
    /// hook (<paramref name="pread"/>).
    /// </summary>
    internal unsafe void ReadScatter(long offset, IoSegment[] segments, Pread? pread = null)
    {
        long total = 0;
        foreach (var g in segments)
        {
            if (IsDirect && (((long)g.Address | (long)g.Length) & (AlignedBuffer.Alignment - 1)) != 0)
                throw new ArgumentException($"{Path}: O_DIRECT scatter read at offset {offset}: a {g.Length}-byte buffer at {g.Address:x} is not 4096-aligned");
            total += g.Length;
        }
        if (IsDirect && (offset & (AlignedBuffer.Alignment - 1)) != 0)
            throw new ArgumentException($"{Path}: O_DIRECT read at offset {offset} is not 4096-aligned");
        long done = 0;
        if (pread is null && OperatingSystem.IsLinux() && segments.Length <= MaxSegments)
        {
            nint n;
            fixed (IoSegment* iov = segments) n = Preadv((int)Handle.DangerousGetHandle(), iov, segments.Length, offset);
            if (n < 0)
                throw new IOException($"{Path}: read error at offset {offset} ({segments.Length} buffers, {total} bytes): errno {Marshal.GetLastPInvokeError()}");
            if (n == total) return;
            done = IsDirect ? AlignedBuffer.AlignDown(n) : n;
        }
        ContinueScatter(offset, segments, done, pread);
    }

    /// <summary>The rest of a scatter read from byte <paramref name="done"/> of the range on, one segment at a time.</summary>
    internal unsafe void ContinueScatter(long offset, IoSegment[] segments, long done, Pread? pread = null)
    {
        long at = 0;
        foreach (var g in segments)
        {
            long end = at + g.Length;
            if (end > done)
            {
                long skip = Math.Max(0, done - at);
                Read(offset + at + skip, (byte*)g.Address + skip, (int)(g.Length - skip), pread);
            }
            at = end;
        }
    }

    public void Dispose() => Handle.Dispose();
}

/// <summary>One buffer of a scatter read, laid out as struct iovec (address, length).</summary>
[StructLayout(LayoutKind.Sequential)]
public readonly struct IoSegment(nint address, long length)
{
    public nint Address { get; } = address;
    private readonly nint _length = (nint)length;
    public int Length => (int)_length;
}
