using System.Runtime.InteropServices;

namespace FlashLm.Runtime.Io;

/// <summary>
/// A minimal io_uring (Linux 5.6+) for positioned reads, through the raw system calls (no liburing needed): one submission
/// queue written by a single submitting thread and one completion queue drained by a single reaping thread, which io_uring
/// allows side by side. Reads are IORING_OP_READ on a file descriptor; each carries a caller's 64-bit tag back in its
/// completion. Not thread-safe beyond that one-submitter, one-reaper split.
/// </summary>
internal sealed unsafe partial class IoUring : IDisposable
{
    private const long SysSetup = 425, SysEnter = 426;         // the same numbers on x86-64 and arm64
    private const uint EnterGetEvents = 1;
    private const uint FeatSingleMmap = 1;
    private const long OffSqRing = 0, OffSqes = 0x10000000;
    private const int ProtRead = 1, ProtWrite = 2, MapShared = 1, MapPopulate = 0x8000;
    private const byte OpRead = 22;                            // IORING_OP_READ (5.6)
    private const byte OpReadv = 1;                            // IORING_OP_READV (5.1)
    private const int EINTR = 4, EAGAIN = 11, EBUSY = 16;

    [StructLayout(LayoutKind.Sequential)]
    private struct SqOffsets { public uint Head, Tail, RingMask, RingEntries, Flags, Dropped, Array, Resv1; public ulong UserAddr; }

    [StructLayout(LayoutKind.Sequential)]
    private struct CqOffsets { public uint Head, Tail, RingMask, RingEntries, Overflow, Cqes, Flags, Resv1; public ulong UserAddr; }

    [StructLayout(LayoutKind.Sequential)]
    private struct Params
    {
        public uint SqEntries, CqEntries, Flags, SqThreadCpu, SqThreadIdle, Features, WqFd, Resv0, Resv1, Resv2;
        public SqOffsets Sq;
        public CqOffsets Cq;
    }

    [LibraryImport("libc", EntryPoint = "syscall", SetLastError = true)]
    private static partial long Syscall3(long number, long a, long b);

    [LibraryImport("libc", EntryPoint = "syscall", SetLastError = true)]
    private static partial long Syscall6(long number, long a, long b, long c, long d, long e);

    [LibraryImport("libc", EntryPoint = "mmap", SetLastError = true)]
    private static partial nint Mmap(nint addr, nuint length, int prot, int flags, int fd, long offset);

    [LibraryImport("libc", EntryPoint = "munmap")]
    private static partial int Munmap(nint addr, nuint length);

    [LibraryImport("libc", EntryPoint = "close")]
    private static partial int Close(int fd);

    private readonly int _fd;
    private readonly nint _ring, _sqes;
    private readonly nuint _ringBytes, _sqeBytes;
    private readonly uint* _sqHead, _sqTail, _sqArray, _cqHead, _cqTail;
    private readonly uint _sqMask, _cqMask;
    private readonly byte* _cqes;
    private uint _localTail;
    private int _disposed;

    /// <summary>Submission queue entries (reads in flight at most).</summary>
    public int Entries { get; }

    private IoUring(int entries)
    {
        var p = new Params();
        long fd = Syscall3(SysSetup, entries, (long)(&p));
        if (fd < 0) throw new IOException($"io_uring_setup({entries}) failed: errno {Marshal.GetLastPInvokeError()}");
        _fd = (int)fd;
        try
        {
            if ((p.Features & FeatSingleMmap) == 0) throw new IOException("io_uring without IORING_FEAT_SINGLE_MMAP (Linux before 5.4) is not supported");
            Entries = (int)p.SqEntries;
            _ringBytes = (nuint)Math.Max(p.Sq.Array + p.SqEntries * 4, p.Cq.Cqes + p.CqEntries * 16);
            _ring = Mmap(0, _ringBytes, ProtRead | ProtWrite, MapShared | MapPopulate, _fd, OffSqRing);
            if (_ring == -1) throw new IOException($"io_uring ring mmap failed: errno {Marshal.GetLastPInvokeError()}");
            _sqeBytes = (nuint)(p.SqEntries * 64);
            _sqes = Mmap(0, _sqeBytes, ProtRead | ProtWrite, MapShared | MapPopulate, _fd, OffSqes);
            if (_sqes == -1)
            {
                Munmap(_ring, _ringBytes);
                throw new IOException($"io_uring entries mmap failed: errno {Marshal.GetLastPInvokeError()}");
            }
            var ring = (byte*)_ring;
            _sqHead = (uint*)(ring + p.Sq.Head);
            _sqTail = (uint*)(ring + p.Sq.Tail);
            _sqMask = *(uint*)(ring + p.Sq.RingMask);
            _sqArray = (uint*)(ring + p.Sq.Array);
            _cqHead = (uint*)(ring + p.Cq.Head);
            _cqTail = (uint*)(ring + p.Cq.Tail);
            _cqMask = *(uint*)(ring + p.Cq.RingMask);
            _cqes = ring + p.Cq.Cqes;
            _localTail = *_sqTail;
        }
        catch
        {
            Close(_fd);
            throw;
        }
    }

    /// <summary>A ring of at least <paramref name="entries"/> entries, or null with the reason where the kernel refuses one
    /// (not Linux, a kernel before 5.6, or io_uring disabled: seccomp, kernel.io_uring_disabled).</summary>
    public static IoUring? TryCreate(int entries, out string? reason)
    {
        reason = null;
        if (!OperatingSystem.IsLinux())
        {
            reason = "io_uring needs Linux";
            return null;
        }
        try
        {
            var ring = new IoUring(entries);
            if (!ring.Probe(out reason))
            {
                ring.Dispose();
                return null;
            }
            return ring;
        }
        catch (Exception e) when (e is IOException or EntryPointNotFoundException or DllNotFoundException)
        {
            reason = e.Message;
            return null;
        }
    }

    /// <summary>IORING_OP_READ exists from Linux 5.6: read 0 bytes from fd -1 and expect EBADF (not EINVAL, an unknown opcode).</summary>
    private bool Probe(out string? reason)
    {
        reason = null;
        Prepare(-1, 0, 0, 0, ulong.MaxValue);
        Submit(1, wait: 1);
        if (!TryReap(out var tag, out int res) || tag != ulong.MaxValue)
        {
            reason = "io_uring gave no completion for a probe read";
            return false;
        }
        if (res == -22) reason = "io_uring has no IORING_OP_READ (Linux before 5.6)";
        return res != -22;
    }

    /// <summary>Queues one read of <paramref name="length"/> bytes at <paramref name="offset"/> of <paramref name="fd"/> into
    /// <paramref name="buffer"/>; the completion carries <paramref name="tag"/>. Call <see cref="Submit"/> to start it. The
    /// caller keeps at most <see cref="Entries"/> reads queued or in flight.</summary>
    public void Prepare(int fd, long offset, nint buffer, int length, ulong tag)
    {
        uint index = _localTail & _sqMask;
        var sqe = (byte*)_sqes + index * 64;
        new Span<byte>(sqe, 64).Clear();
        sqe[0] = OpRead;
        *(int*)(sqe + 4) = fd;
        *(long*)(sqe + 8) = offset;
        *(long*)(sqe + 16) = buffer;
        *(uint*)(sqe + 24) = (uint)length;
        *(ulong*)(sqe + 32) = tag;
        _sqArray[index] = index;
        _localTail++;
        Volatile.Write(ref *_sqTail, _localTail);
    }

    /// <summary>Queues one vectored read at <paramref name="offset"/> of <paramref name="fd"/> into the <paramref name="count"/>
    /// buffers of the iovec array at <paramref name="iovecs"/> (struct iovec: address, length), which must stay valid until the
    /// read completes.</summary>
    public void PrepareVectored(int fd, long offset, nint iovecs, int count, ulong tag)
    {
        Prepare(fd, offset, iovecs, count, tag);
        ((byte*)_sqes + ((_localTail - 1) & _sqMask) * 64)[0] = OpReadv;
    }

    /// <summary>Queues a no-op whose completion carries <paramref name="tag"/> (wakes the reaping thread).</summary>
    public void PrepareNop(ulong tag)
    {
        Prepare(-1, 0, 0, 0, tag);
        ((byte*)_sqes + ((_localTail - 1) & _sqMask) * 64)[0] = 0; // IORING_OP_NOP
    }

    /// <summary>Hands up to <paramref name="count"/> queued reads to the kernel (stopping early when none is left queued), and
    /// waits for <paramref name="wait"/> completions.</summary>
    public void Submit(int count, int wait = 0)
    {
        while (true)
        {
            long r = Syscall6(SysEnter, _fd, count, wait, wait > 0 ? EnterGetEvents : 0, 0);
            if (r >= 0)
            {
                if (r >= count || r == 0) return; // all of them, or nothing more is queued
                count -= (int)r; // the rest stays queued (the kernel took fewer): submit it again
                continue;
            }
            int errno = Marshal.GetLastPInvokeError();
            if (errno is EINTR or EAGAIN or EBUSY) { Thread.Yield(); continue; }
            throw new IOException($"io_uring_enter failed: errno {errno}");
        }
    }

    /// <summary>Blocks until at least one completion is ready (or the wait is interrupted).</summary>
    public void Wait()
    {
        if (Volatile.Read(ref *_cqTail) != *_cqHead) return;
        long r = Syscall6(SysEnter, _fd, 0, 1, EnterGetEvents, 0);
        if (r < 0)
        {
            int errno = Marshal.GetLastPInvokeError();
            if (errno is not (EINTR or EAGAIN or EBUSY)) throw new IOException($"io_uring_enter (wait) failed: errno {errno}");
        }
    }

    /// <summary>The next completion: its tag and result (bytes read, or -errno).</summary>
    public bool TryReap(out ulong tag, out int result)
    {
        uint head = *_cqHead;
        if (head == Volatile.Read(ref *_cqTail))
        {
            tag = 0;
            result = 0;
            return false;
        }
        var cqe = _cqes + (head & _cqMask) * 16;
        tag = *(ulong*)cqe;
        result = *(int*)(cqe + 8);
        Volatile.Write(ref *_cqHead, head + 1);
        return true;
    }

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        Munmap(_sqes, _sqeBytes);
        Munmap(_ring, _ringBytes);
        Close(_fd);
    }
}
