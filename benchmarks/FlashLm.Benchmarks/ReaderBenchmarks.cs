using BenchmarkDotNet.Attributes;
using FlashLm.Runtime.Io;

namespace FlashLm.Benchmarks;

/// <summary>
/// One O_DIRECT positioned read through <see cref="DirectFile"/> at a random 4096-aligned offset of a 1 GiB
/// file: one 24 KiB bundle (Llama-7B F16) and one 1 MiB coalesced range. Single reader: this is the latency
/// side; `flashlm tune` measures parallel readers. The file is created in $FLASHLM_BENCH_DIR (default: the
/// current folder, so the disk measured is the one you run from) and deleted afterwards.
/// </summary>
[ThroughputUnit("MB/s")]
public unsafe class ReaderBenchmarks : IBytesPerOperation
{
    private const long FileBytes = 1L << 30;
    private const int Bundle = 24 * 1024, Coalesced = 1 << 20;

    private string _path = "";
    private DirectFile _file = null!;
    private AlignedBuffer _buffer = null!;
    private ulong _rng = 0x2545F4914F6CDD1DUL;

    public long BytesPerOperation(string method) => method == nameof(BundleRead) ? Bundle : Coalesced;

    [GlobalSetup]
    public void Setup()
    {
        var dir = Environment.GetEnvironmentVariable("FLASHLM_BENCH_DIR") ?? Directory.GetCurrentDirectory();
        _path = Path.Combine(dir, $"flashlm-bench-{Environment.ProcessId}.bin");
        DiskTuner.CreateTestFile(_path, FileBytes);
        _file = new DirectFile(_path);
        _buffer = new AlignedBuffer(Coalesced);
        Console.WriteLine($"// reader file {_path}: {(_file.IsDirect ? "O_DIRECT" : "buffered (O_DIRECT refused: page cache figures)")}");
    }

    private long NextOffset(int length)
    {
        _rng ^= _rng >> 12; _rng ^= _rng << 25; _rng ^= _rng >> 27;
        long slots = (FileBytes - length) / AlignedBuffer.Alignment + 1;
        return (long)((_rng * 0x2545F4914F6CDD1DUL) % (ulong)slots) * AlignedBuffer.Alignment;
    }

    [Benchmark(Description = "24 KiB bundle")]
    public void BundleRead() => _file.Read(NextOffset(Bundle), _buffer.Pointer, Bundle);

    [Benchmark(Description = "1 MiB coalesced range")]
    public void CoalescedRead() => _file.Read(NextOffset(Coalesced), _buffer.Pointer, Coalesced);

    [GlobalCleanup]
    public void Cleanup()
    {
        _buffer?.Dispose();
        _file?.Dispose();
        if (_path.Length > 0) File.Delete(_path);
    }
}
