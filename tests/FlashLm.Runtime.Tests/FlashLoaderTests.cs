using System.Collections.Concurrent;
using Akka.Actor;
using FlashLm.Runtime.Config;
using FlashLm.Runtime.Io;
using FlashLm.Runtime.Loader;
using Xunit;
using static FlashLm.Runtime.Loader.FlashLoader;

namespace FlashLm.Tests.Runtime;

/// <summary>The flash loader pool: bytes land where asked, failed reads are retried after a restart, every request is answered once.</summary>
public sealed class FlashLoaderTests : Akka.TestKit.Xunit2.TestKit, IClassFixture<StoriesFlashFixture>
{
    private static readonly TimeSpan Wait = TimeSpan.FromSeconds(10);
    private readonly StoriesFlashFixture _f;

    public FlashLoaderTests(StoriesFlashFixture f) : base(RuntimeTestConfig.Hocon) => _f = f;

    private static LoaderSettings Settings(int readers = 4, int maxAttempts = 3) =>
        new(readers, 4, 32 * 1024, 1 << 20, DirectIo: true, maxAttempts, DebugDelayMs: 0);

    private IActorRef Pool(LoaderSettings s, ReadHook? hook = null) => Sys.ActorOf(FlashLoader.Pool(s, RuntimeTestConfig.IoDispatcher, hook));

    [Fact]
    public void Direct_read_lands_the_file_bytes_in_the_destination()
    {
        using var file = new DirectFile(_f.Ffn.FilePath);
        using var dest = new AlignedBuffer(2 * 4096);
        long offset = _f.Ffn.LayerOffset(1);
        Pool(Settings()).Tell(new ReadRequest(7, file, offset, 8192, Addr(dest), null, null, TestActor));

        var done = ExpectMsg<ReadDone>(Wait);
        Assert.Equal(7, done.Id);
        Assert.Equal(8192, done.Bytes);
        Assert.Equal(1, done.Attempts);
        Assert.True(done.EndTicks >= done.StartTicks);
        Assert.Equal(_f.FileRange(offset, 8192), RuntimeTestConfig.Copy(Addr(dest), 8192));
        ExpectNoMsg(TimeSpan.FromMilliseconds(100));
    }

    [Fact]
    public void Staged_read_copies_each_bundle_to_its_destination()
    {
        var ffn = _f.Ffn;
        using var file = new DirectFile(ffn.FilePath);
        int bundle = (int)ffn.BundleBytes;
        // Neurons 5 and 9 of layer 2 lie in one page-aligned range; they go to unaligned, out-of-order destinations.
        long start = AlignedBuffer.AlignDown(ffn.BundleOffset(2, 5));
        int length = (int)(AlignedBuffer.AlignUp(ffn.BundleOffset(2, 9) + bundle) - start);
        using var staging = new AlignedBuffer(length);
        using var dest = new AlignedBuffer(3 * bundle + 64);
        nint d9 = Addr(dest) + 8, d5 = d9 + bundle + 40;
        var copies = new[] { new Copy(ffn.BundleOffset(2, 9) - start, d9, bundle), new Copy(ffn.BundleOffset(2, 5) - start, d5, bundle) };
        Pool(Settings()).Tell(new ReadRequest(3, file, start, length, 0, staging, copies, TestActor));

        var done = ExpectMsg<ReadDone>(Wait);
        Assert.Equal(3, done.Id);
        Assert.Equal(length, done.Bytes);
        Assert.Equal(_f.Bundle(2, 9), RuntimeTestConfig.Copy(d9, bundle));
        Assert.Equal(_f.Bundle(2, 5), RuntimeTestConfig.Copy(d5, bundle));
    }

    [Fact]
    public void Reader_that_fails_once_is_restarted_and_the_read_retried_with_one_answer()
    {
        using var file = new DirectFile(_f.Ffn.FilePath);
        using var dest = new AlignedBuffer(4096);
        long offset = _f.Ffn.LayerOffset(3) + 4096;
        var attempts = new ConcurrentQueue<int>();
        ReadHook hook = r =>
        {
            attempts.Enqueue(r.Attempt);
            if (r.Attempt == 1) throw new IOException("simulated flash error");
        };
        Pool(Settings(readers: 1), hook).Tell(new ReadRequest(11, file, offset, 4096, Addr(dest), null, null, TestActor));

        var done = ExpectMsg<ReadDone>(Wait);
        Assert.Equal(11, done.Id);
        Assert.Equal(2, done.Attempts);
        ExpectNoMsg(TimeSpan.FromMilliseconds(300)); // no ReadFailed, no second ReadDone
        Assert.Equal([1, 2], attempts.ToArray());
        Assert.Equal(_f.FileRange(offset, 4096), RuntimeTestConfig.Copy(Addr(dest), 4096));
    }

    [Fact]
    public void Read_that_always_fails_is_reported_once_after_max_attempts_naming_file_and_offset()
    {
        using var file = new DirectFile(_f.Ffn.FilePath);
        using var dest = new AlignedBuffer(4096);
        long offset = _f.Ffn.LayerOffset(4);
        int calls = 0;
        ReadHook hook = _ =>
        {
            Interlocked.Increment(ref calls);
            throw new IOException("simulated dead sector");
        };
        Pool(Settings(readers: 2, maxAttempts: 4), hook).Tell(new ReadRequest(21, file, offset, 4096, Addr(dest), null, null, TestActor));

        var failed = ExpectMsg<ReadFailed>(Wait);
        Assert.Equal(21, failed.Id);
        Assert.Contains(_f.Ffn.FilePath, failed.Error);
        Assert.Contains($"offset {offset}", failed.Error);
        Assert.Contains("simulated dead sector", failed.Error);
        ExpectNoMsg(TimeSpan.FromMilliseconds(300)); // no ReadDone, no second ReadFailed
        Assert.Equal(4, Volatile.Read(ref calls));
    }

    [Fact]
    public void Many_concurrent_requests_are_each_answered_exactly_once_with_the_right_bytes()
    {
        using var file = new DirectFile(_f.Ffn.FilePath);
        const int n = 300;
        long pages = AlignedBuffer.AlignUp(_f.FfnBytes.Length) / 4096;
        using var dest = new AlignedBuffer(n * 4096L);
        var rng = new Random(1234);
        var offsets = new long[n];
        // Some first attempts fail too: retries must not lose or duplicate answers.
        ReadHook hook = r =>
        {
            if (r.Attempt == 1 && r.Id % 7 == 0) throw new IOException("simulated transient error");
        };
        var pool = Pool(Settings(readers: 8), hook);
        for (int i = 0; i < n; i++)
        {
            offsets[i] = rng.NextInt64(pages) * 4096;
            pool.Tell(new ReadRequest(i, file, offsets[i], 4096, Addr(dest) + i * 4096, null, null, TestActor));
        }

        var answers = ReceiveN(n, TimeSpan.FromSeconds(30));
        ExpectNoMsg(TimeSpan.FromMilliseconds(300));
        var done = answers.Select(a => Assert.IsType<ReadDone>(a)).ToList();
        Assert.Equal(Enumerable.Range(0, n).Select(i => (long)i), done.Select(d => d.Id).Order());
        foreach (var d in done) Assert.Equal(d.Id % 7 == 0 ? 2 : 1, d.Attempts);
        for (int i = 0; i < n; i++)
            Assert.True(_f.FileRange(offsets[i], 4096).AsSpan().SequenceEqual(RuntimeTestConfig.Copy(Addr(dest) + i * 4096, 4096)), $"request {i} at {offsets[i]}");
    }

    private static unsafe nint Addr(AlignedBuffer b) => (nint)b.Pointer;
}
