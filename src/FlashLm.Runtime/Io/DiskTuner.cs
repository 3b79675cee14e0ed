using System.Diagnostics;
using System.Runtime.InteropServices;
using FlashLm.Runtime.Tuning;

namespace FlashLm.Runtime.Io;

/// <summary>
/// Measures a disk the way the flash loader uses it (blocking positioned O_DIRECT reads from a pool of
/// reader threads) and turns the figures into loader settings (<see cref="TuneAdvisor"/>) and a HOCON
/// profile. `flashlm tune` is a thin driver over this.
/// </summary>
public static partial class DiskTuner
{
    /// <summary>Space left free on the file system when creating a test file.</summary>
    public const long FreeSpaceReserve = 1L << 30;

    private const int PosixFadvDontNeed = 4;

    [LibraryImport("libc", EntryPoint = "posix_fadvise")]
    private static partial int PosixFadvise(int fd, long offset, long length, int advice);

    /// <summary>
    /// Measures every (read size, reader count) in <paramref name="options"/> for a fixed time each: each
    /// reader thread reads at random 4096-aligned offsets into its own aligned buffer, back to back; then
    /// sequential reads, each reader streaming its own region of the file. Sizes run smallest first.
    /// </summary>
    /// <param name="progress">(points done, points in total), reported after each point.</param>
    public static TuneResult Measure(string path, TuneOptions options, IProgress<(long Done, long Total)>? progress = null, CancellationToken cancel = default)
    {
        options.Validate();
        using var file = new DirectFile(path);
        int largest = options.Sizes.Append(options.SequentialReadBytes).Max();
        int maxReaders = options.Parallelisms.Concat(options.SequentialParallelisms ?? []).Max();
        if (file.Length < 2L * largest)
            throw new ArgumentException($"{path}: the file holds {TuneReport.Size(file.Length)}, too small for {TuneReport.Size(largest)} random reads (needs at least {TuneReport.Size(2L * largest)})");
        var buffers = new AlignedBuffer[maxReaders];
        try
        {
            for (int i = 0; i < maxReaders; i++) buffers[i] = new AlignedBuffer(largest);
            var random = new List<TunePoint>();
            var sequential = new List<TunePoint>();
            long done = 0, total = options.Points;
            progress?.Report((0, total));
            foreach (int size in options.Sizes.Order())
            {
                foreach (int readers in options.Parallelisms.Order())
                {
                    random.Add(RunPoint(file, buffers, size, readers, options.SecondsPerPoint, sequential: false, cancel));
                    progress?.Report((++done, total));
                }
            }
            foreach (int readers in (options.SequentialParallelisms ?? []).Order())
            {
                sequential.Add(RunPoint(file, buffers, options.SequentialReadBytes, readers, options.SecondsPerPoint, sequential: true, cancel));
                progress?.Report((++done, total));
            }
            return new TuneResult(random, sequential, Path.GetFullPath(path), file.Length, file.IsDirect, options.SecondsPerPoint,
                DateTimeOffset.Now, Machine(path));
        }
        finally
        {
            foreach (var b in buffers) b?.Dispose();
        }
    }

    /// <summary>Loader settings for bundles of <paramref name="bundleBytes"/> (see <see cref="TuneAdvisor.Recommend"/>).</summary>
    public static TuneRecommendation Recommend(TuneResult result, long bundleBytes) => TuneAdvisor.Recommend(result, bundleBytes);

    /// <summary>Writes the HOCON profile for <paramref name="recommendation"/> to <paramref name="path"/> (folders created).</summary>
    /// <param name="bundleSource">Where the bundle size came from, for the profile's comments.</param>
    public static void WriteProfile(string path, TuneResult result, TuneRecommendation recommendation, string bundleSource)
    {
        var dir = Path.GetDirectoryName(Path.GetFullPath(path));
        if (!string.IsNullOrEmpty(dir)) Directory.CreateDirectory(dir);
        File.WriteAllText(path, TuneReport.Profile(result, recommendation, bundleSource));
    }

    /// <summary>
    /// Creates <paramref name="path"/> holding <paramref name="bytes"/> (rounded up to 1 MiB) of pseudo-random
    /// bytes (so no layer below can compress or deduplicate it), flushed to the device and dropped from the
    /// page cache. Refuses when the file system would be left with less than <see cref="FreeSpaceReserve"/>
    /// free; removes a partial file on failure or cancellation.
    /// </summary>
    public static void CreateTestFile(string path, long bytes, IProgress<(long Done, long Total)>? progress = null, CancellationToken cancel = default)
    {
        const int Chunk = 1 << 20;
        if (bytes < Chunk) throw new ArgumentException($"test file size {bytes} is below the 1 MiB minimum");
        bytes = (bytes + Chunk - 1) / Chunk * Chunk;
        var full = Path.GetFullPath(path);
        var dir = Path.GetDirectoryName(full)!;
        if (!Directory.Exists(dir)) throw new DirectoryNotFoundException($"{dir}: no such folder for the test file");
        long free = new DriveInfo(dir).AvailableFreeSpace;
        if (bytes + FreeSpaceReserve > free)
            throw new IOException($"{dir}: {TuneReport.Size(free)} free, not enough for a {TuneReport.Size(bytes)} test file plus {TuneReport.Size(FreeSpaceReserve)} to spare; pass a smaller --size or --file");
        try
        {
            using var fs = new FileStream(full, FileMode.CreateNew, FileAccess.Write, FileShare.Read, bufferSize: 0);
            var block = new byte[8 * Chunk];
            ulong state = 0x9E3779B97F4A7C15UL ^ (ulong)Environment.TickCount64;
            for (long written = 0; written < bytes;)
            {
                cancel.ThrowIfCancellationRequested();
                int n = (int)Math.Min(block.Length, bytes - written);
                Fill(MemoryMarshal.Cast<byte, ulong>(block.AsSpan(0, n)), ref state);
                fs.Write(block, 0, n);
                written += n;
                progress?.Report((written, bytes));
            }
            fs.Flush(flushToDisk: true);
            if (OperatingSystem.IsLinux()) PosixFadvise((int)fs.SafeFileHandle.DangerousGetHandle(), 0, 0, PosixFadvDontNeed);
        }
        catch
        {
            try { File.Delete(full); } catch (IOException) { } catch (UnauthorizedAccessException) { }
            throw;
        }
    }

    /// <summary>xorshift64*: fast enough to fill gigabytes, random enough to defeat compression.</summary>
    private static void Fill(Span<ulong> words, ref ulong state)
    {
        ulong x = state;
        for (int i = 0; i < words.Length; i++)
        {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            words[i] = x * 0x2545F4914F6CDD1DUL;
        }
        state = x;
    }

    /// <summary>Host, cores, RAM, OS, runtime and the file system of <paramref name="path"/>.</summary>
    public static string Machine(string path)
    {
        string fs = "";
        try
        {
            var d = new DriveInfo(Path.GetDirectoryName(Path.GetFullPath(path))!);
            fs = $", file system {d.DriveFormat} at {d.Name}";
        }
        catch (Exception e) when (e is IOException or ArgumentException or UnauthorizedAccessException) { }
        long ram = GC.GetGCMemoryInfo().TotalAvailableMemoryBytes;
        return $"{Environment.MachineName}, {Environment.ProcessorCount} cores, {TuneReport.Size(ram)} RAM, {RuntimeInformation.OSDescription}, {RuntimeInformation.FrameworkDescription}{fs}";
    }

    /// <summary>
    /// <paramref name="readers"/> threads read <paramref name="size"/>-byte blocks back to back until the time
    /// is up. Reads still in flight at the deadline complete and count; the elapsed time runs to the last one.
    /// </summary>
    private static unsafe TunePoint RunPoint(DirectFile file, AlignedBuffer[] buffers, int size, int readers, double seconds, bool sequential, CancellationToken cancel)
    {
        cancel.ThrowIfCancellationRequested();
        long slots = (file.Length - size) / AlignedBuffer.Alignment + 1; // random reads start at slot * 4096
        long region = AlignedBuffer.AlignDown(file.Length / readers); // sequential: reader i streams [i * region, (i + 1) * region)
        long reads = 0, lastEnd = 0;
        Exception? failure = null;
        using var start = new Barrier(readers + 1);
        long begin = 0, deadline = 0;
        var threads = new Thread[readers];
        for (int t = 0; t < readers; t++)
        {
            int id = t;
            threads[t] = new Thread(() =>
            {
                var rng = new Random(unchecked(id * 7919 + size));
                byte* dest = buffers[id].Pointer;
                long count = 0, pos = sequential ? id * region : 0;
                start.SignalAndWait();
                try
                {
                    long end = Volatile.Read(ref deadline);
                    while (Stopwatch.GetTimestamp() < end && !cancel.IsCancellationRequested)
                    {
                        long offset;
                        if (sequential)
                        {
                            if (pos + size > (id + 1) * region || pos + size > file.Length) pos = id * region;
                            offset = pos;
                            pos += size;
                        }
                        else offset = rng.NextInt64(slots) * AlignedBuffer.Alignment;
                        file.Read(offset, dest, size);
                        count++;
                    }
                }
                catch (Exception e)
                {
                    Interlocked.CompareExchange(ref failure, e, null);
                }
                Interlocked.Add(ref reads, count);
                long now = Stopwatch.GetTimestamp();
                long seen;
                do seen = Volatile.Read(ref lastEnd);
                while (now > seen && Interlocked.CompareExchange(ref lastEnd, now, seen) != seen);
            }, maxStackSize: 256 * 1024) { IsBackground = true, Name = $"tune-reader-{t}" };
            threads[t].Start();
        }
        begin = Stopwatch.GetTimestamp();
        Volatile.Write(ref deadline, begin + (long)(seconds * Stopwatch.Frequency));
        start.SignalAndWait();
        foreach (var th in threads) th.Join();
        if (failure is not null) throw failure is IOException io ? io : new IOException($"{file.Path}: read failed: {failure.Message}", failure);
        cancel.ThrowIfCancellationRequested();
        double elapsed = (double)(Math.Max(lastEnd, begin + 1) - begin) / Stopwatch.Frequency;
        return new TunePoint(size, readers, reads, elapsed);
    }
}
