using FlashLm.Runtime.Io;
using Xunit;

namespace FlashLm.Tests.Runtime;

/// <summary>DirectFile.Read and its scatter read under short reads and early ends of file (faults injected through its pread hook).</summary>
public sealed unsafe class DirectFileShortReadTests : IDisposable
{
    private const int Length = 8 * 4096;
    private readonly TempDir _dir = new();
    private readonly string _path;
    private readonly byte[] _bytes = new byte[Length + 1000]; // not a whole number of pages: a tail past the last page

    public DirectFileShortReadTests()
    {
        new Random(3).NextBytes(_bytes);
        _path = _dir.File("data.bin");
        File.WriteAllBytes(_path, _bytes);
    }

    private byte[] Read(DirectFile f, long offset, int length, DirectFile.Pread? pread)
    {
        using var buf = new AlignedBuffer(length);
        f.Read(offset, buf.Pointer, length, pread);
        return buf.Span(0, length).ToArray();
    }

    [Fact]
    public void Short_reads_of_any_size_are_continued_until_the_range_is_full()
    {
        using var f = new DirectFile(_path);
        var rng = new Random(5);
        int calls = 0;
        // Each call delivers a random part of what was asked, often not a whole block.
        DirectFile.Pread shortReads = (h, buffer, offset) =>
        {
            calls++;
            // As a device does it: the (aligned) read runs, fewer bytes are reported.
            int got = RandomAccess.Read(h, buffer, offset);
            // Every other call is short by a random amount (often not a whole block); the others deliver all.
            return calls % 2 == 0 ? got : Math.Min(got, Math.Max(1, rng.Next(buffer.Length)));
        };
        Assert.Equal(_bytes.AsSpan(4096, 4 * 4096).ToArray(), Read(f, 4096, 4 * 4096, shortReads));
        Assert.True(calls > 1);
    }

    [Fact]
    public void Short_reads_that_never_deliver_a_whole_block_fail_naming_the_file_and_offset()
    {
        using var f = new DirectFile(_path);
        if (!f.IsDirect) return; // only O_DIRECT needs block-aligned progress; buffered reads continue byte by byte
        DirectFile.Pread stuck = (h, buffer, offset) => Math.Min(512, RandomAccess.Read(h, buffer, offset));
        var e = Assert.Throws<IOException>(() => Read(f, 8192, 4096, stuck));
        Assert.Contains(_path, e.Message);
        Assert.Contains("offset 8192", e.Message);
    }

    [Fact]
    public void An_end_of_file_before_the_files_length_is_an_error_not_zeros()
    {
        using var f = new DirectFile(_path);
        DirectFile.Pread early = (_, _, _) => 0;
        var e = Assert.Throws<IOException>(() => Read(f, 4096, 4096, early));
        Assert.Contains("end of the file", e.Message);
        Assert.Contains("offset 4096", e.Message);
    }

    [Fact]
    public void Bytes_past_the_real_end_of_the_file_read_as_zero()
    {
        using var f = new DirectFile(_path);
        var got = Read(f, Length, 4096, null);
        Assert.Equal(_bytes.AsSpan(Length, 1000).ToArray(), got.AsSpan(0, 1000).ToArray());
        Assert.All(got.AsSpan(1000).ToArray(), b => Assert.Equal(0, b));
    }

    /// <summary>A scatter read: pages 1..7 into three buffers in scrambled places of one block (and past the end of the file).</summary>
    [Fact]
    public void A_scatter_read_lands_each_part_of_the_range_in_its_own_buffer_with_or_without_short_reads()
    {
        using var f = new DirectFile(_path);
        using var buf = new AlignedBuffer(16 * 4096);
        byte* p = buf.Pointer;
        // Pages 1-2 to buffer page 10, pages 3-5 to page 0, pages 6-8 (the last runs past the file's end) to page 4.
        IoSegment[] segments = [new((nint)(p + 10 * 4096), 2 * 4096), new((nint)p, 3 * 4096), new((nint)(p + 4 * 4096), 3 * 4096)];
        byte[] Expect(long from, int length)
        {
            var e = new byte[length];
            _bytes.AsSpan((int)from, (int)Math.Min(length, _bytes.Length - from)).CopyTo(e);
            return e;
        }
        void Check()
        {
            Assert.Equal(Expect(4096, 2 * 4096), buf.Span(10 * 4096, 2 * 4096).ToArray());
            Assert.Equal(Expect(3 * 4096, 3 * 4096), buf.Span(0, 3 * 4096).ToArray());
            Assert.Equal(Expect(6 * 4096, 3 * 4096), buf.Span(4 * 4096, 3 * 4096).ToArray());
        }
        f.ReadScatter(4096, segments);
        Check();
        buf.Span(0, 16 * 4096).Clear();
        var rng = new Random(9);
        int calls = 0;
        DirectFile.Pread shortReads = (h, buffer, offset) =>
        {
            calls++;
            int got = RandomAccess.Read(h, buffer, offset);
            return calls % 2 == 0 ? got : Math.Min(got, Math.Max(1, rng.Next(buffer.Length)));
        };
        f.ReadScatter(4096, segments, shortReads);
        Check();
        Assert.True(calls > 3);
        // Continued from the middle of the second buffer, as after a short vectored read.
        buf.Span(0, 16 * 4096).Clear();
        f.ContinueScatter(4096, segments, 3 * 4096);
        Assert.All(buf.Span(10 * 4096, 2 * 4096).ToArray(), b => Assert.Equal(0, b));
        Assert.Equal(Expect(4 * 4096, 2 * 4096), buf.Span(4096, 2 * 4096).ToArray());
        Assert.Equal(Expect(6 * 4096, 3 * 4096), buf.Span(4 * 4096, 3 * 4096).ToArray());
        if (f.IsDirect)
            Assert.Throws<ArgumentException>(() => f.ReadScatter(4096, [new((nint)(p + 100), 4096)]));
    }

    public void Dispose() => _dir.Dispose();
}
