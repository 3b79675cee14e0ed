using System.Runtime.InteropServices;

namespace FlashLm.Runtime.Io;

/// <summary>
/// Native memory aligned to <see cref="Alignment"/> bytes (O_DIRECT needs 4096-aligned buffers, offsets
/// and lengths). The owner frees it with Dispose; its size is counted in the DRAM budget by whoever holds it.
/// </summary>
public sealed unsafe class AlignedBuffer : IDisposable
{
    public const int Alignment = 4096;

    private void* _ptr;

    public long Length { get; }

    public AlignedBuffer(long length)
    {
        if (length <= 0) throw new ArgumentOutOfRangeException(nameof(length));
        Length = AlignUp(length);
        _ptr = NativeMemory.AlignedAlloc((nuint)Length, Alignment);
        NativeMemory.Clear(_ptr, (nuint)Length);
        NativeAccounting.Add(Length);
    }

    public byte* Pointer => _ptr != null ? (byte*)_ptr : throw new ObjectDisposedException(nameof(AlignedBuffer));

    public Span<byte> Span(long offset, int length)
    {
        if (offset < 0 || offset + length > Length) throw new ArgumentOutOfRangeException(nameof(offset), $"[{offset}, {offset + length}) is outside the {Length}-byte buffer");
        return new Span<byte>(Pointer + offset, length);
    }

    public static long AlignUp(long v) => (v + Alignment - 1) & ~(long)(Alignment - 1);
    public static long AlignDown(long v) => v & ~(long)(Alignment - 1);

    public void Dispose()
    {
        if (_ptr == null) return;
        NativeMemory.AlignedFree(_ptr);
        _ptr = null;
        NativeAccounting.Add(-Length);
    }
}

/// <summary>Process-wide count of native bytes held by <see cref="AlignedBuffer"/>s (for leak checks and stats).</summary>
public static class NativeAccounting
{
    private static long _bytes;

    public static long Bytes => Interlocked.Read(ref _bytes);

    internal static void Add(long delta) => Interlocked.Add(ref _bytes, delta);
}
