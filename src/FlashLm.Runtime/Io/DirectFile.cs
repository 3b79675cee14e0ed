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

    /// <summary>
    /// Reads [offset, offset + length) into <paramref name="destination"/> (all 4096-aligned when direct).
    /// Bytes past the end of the file read as zero. Throws IOException naming the file and offset.
    /// </summary>
    public unsafe void Read(long offset, byte* destination, int length)
    {
        if (IsDirect && ((offset | (long)length | (long)destination) & (AlignedBuffer.Alignment - 1)) != 0)
            throw new ArgumentException($"{Path}: O_DIRECT read at offset {offset}, length {length} is not 4096-aligned");
        int done = 0;
        while (done < length)
        {
            int n;
            try
            {
                n = RandomAccess.Read(Handle, new Span<byte>(destination + done, length - done), offset + done);
            }
            catch (IOException e)
            {
                throw new IOException($"{Path}: read error at offset {offset + done}: {e.Message}", e);
            }
            if (n == 0)
            {
                new Span<byte>(destination + done, length - done).Clear();
                return;
            }
            done += n;
        }
    }

    public void Dispose() => Handle.Dispose();
}
