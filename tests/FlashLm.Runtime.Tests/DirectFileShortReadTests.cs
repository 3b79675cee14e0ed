using FlashLm.Runtime.Io;
using Xunit;

namespace FlashLm.Tests.Runtime;

/// <summary>DirectFile.Read under short reads and early ends of file (faults injected through its pread hook).</summary>
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

    public void Dispose() => _dir.Dispose();
}
