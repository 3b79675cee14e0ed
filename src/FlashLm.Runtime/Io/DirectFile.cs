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

    public void Dispose() => Handle.Dispose();
}
