using System.Collections.Concurrent;
using FlashLm.Formats.FlashLayout;
using FlashLm.Runtime.Loader;
using Microsoft.Win32.SafeHandles;

namespace FlashLm.Tests.Runtime;

/// <summary>The faults <see cref="SeededReadFaults"/> injects.</summary>
public enum FaultKind
{
    Eio,
    ShortRead,
    Delay,
    FlippedBit,
    KilledReader,
}

/// <summary>
/// Test harness: injects faults into the flash readers' reads, decided per read from a seed (so a run is repeatable).
/// Transient: a chosen read fails on its first attempt only (the retry must make it invisible). Persistent: every
/// attempt of every read that covers one target bundle fails (the session must fail, naming that bundle).
/// Counts what it injected, by kind.
/// </summary>
internal sealed class SeededReadFaults : ReadFaults
{
    private readonly FfnLayout _layout;
    private readonly ulong _seed;
    private readonly double _rate;
    private readonly FaultKind[] _kinds;
    private readonly long? _target;
    private readonly ConcurrentDictionary<FaultKind, int> _injected = new();

    private SeededReadFaults(FfnLayout layout, ulong seed, double rate, FaultKind[] kinds, long? target)
    {
        _layout = layout;
        _seed = seed;
        _rate = rate;
        _kinds = kinds;
        _target = target;
    }

    /// <summary>Each read, with probability <paramref name="rate"/>, gets one fault of <paramref name="kinds"/> on attempt 1 only.</summary>
    public static SeededReadFaults Transient(FfnLayout layout, ulong seed, double rate, params FaultKind[] kinds) => new(layout, seed, rate, kinds, null);

    /// <summary>Every attempt of every read covering bundle (layer, neuron) gets a fault of <paramref name="kind"/>.</summary>
    public static SeededReadFaults Persistent(FfnLayout layout, ulong seed, int layer, int neuron, FaultKind kind) =>
        new(layout, seed, 1, [kind], layout.BundleOffset(layer, neuron));

    /// <summary>Faults injected so far, by kind.</summary>
    public IReadOnlyDictionary<FaultKind, int> Injected => _injected;

    public int Total => _injected.Values.Sum();

    /// <summary>A number in [0, 1) from the seed, the read and a salt: the same read gets the same decision in every run.</summary>
    private double Uniform(FlashLoader.ReadRequest r, ulong salt)
    {
        ulong x = _seed ^ (ulong)r.FileOffset * 0x9E3779B97F4A7C15UL ^ (ulong)r.Length * 0xBF58476D1CE4E5B9UL ^ salt * 0x94D049BB133111EBUL;
        x ^= x >> 31;
        x *= 0xD6E8FEB86AB7E9D5UL;
        x ^= x >> 29;
        return (x >> 11) * (1.0 / (1UL << 53));
    }

    /// <summary>The fault this attempt gets, or null.</summary>
    private FaultKind? Fault(FlashLoader.ReadRequest r)
    {
        if (r.File.Path != _layout.FilePath) return null;
        if (_target is { } t)
        {
            // Persistent: reads whose bundles include the target, every attempt.
            bool covers = r.Copies is { Length: > 0 } copies
                ? copies.Any(c => r.FileOffset + c.SourceOffset == t)
                : t >= r.FileOffset && t < r.FileOffset + r.Length;
            return covers ? _kinds[0] : null;
        }
        if (r.Attempt != 1 || Uniform(r, 1) >= _rate) return null;
        return _kinds[(int)(Uniform(r, 2) * _kinds.Length)];
    }

    private void Count(FaultKind k) => _injected.AddOrUpdate(k, 1, (_, v) => v + 1);

    public override void Before(FlashLoader.ReadRequest r)
    {
        switch (Fault(r))
        {
            case FaultKind.Eio:
                Count(FaultKind.Eio);
                throw new IOException("Input/output error (injected EIO)");
            case FaultKind.Delay:
                Count(FaultKind.Delay);
                Thread.Sleep((int)(Uniform(r, 3) * 100)); // up to 100 ms
                break;
        }
    }

    public override int Pread(FlashLoader.ReadRequest r, SafeFileHandle handle, Span<byte> buffer, long fileOffset)
    {
        if (Fault(r) != FaultKind.ShortRead) return base.Pread(r, handle, buffer, fileOffset);
        bool first = fileOffset == r.FileOffset;
        if (first) Count(FaultKind.ShortRead); // one count per read, not per call
        // Transient: the first call delivers about half, not a whole number of blocks; the reader must continue.
        // Persistent: 512 bytes every call, never a whole 4096-byte block (an O_DIRECT read makes no progress and fails).
        if (_target is null && !first) return base.Pread(r, handle, buffer, fileOffset);
        // As a device does it: the (aligned) read runs, fewer bytes are reported.
        int got = base.Pread(r, handle, buffer, fileOffset);
        int n = _target is null ? Math.Max(1, buffer.Length / 2 + 100) : 512;
        return Math.Min(got, n);
    }

    public override void Landed(FlashLoader.ReadRequest r, Span<byte> landed, long fileOffset)
    {
        if (Fault(r) != FaultKind.FlippedBit) return;
        // Inside a bundle the read was for (the checked bytes): the target, or the first needed bundle; a scatter read lands
        // bundle by bundle, so only the call that holds that bundle flips.
        long bundle = _target ?? (r.Copies is { Length: > 0 } c ? r.FileOffset + c[0].SourceOffset : r.FileOffset);
        if (bundle < fileOffset || bundle + _layout.BundleBytes > fileOffset + landed.Length) return;
        Count(FaultKind.FlippedBit);
        int at = (int)(bundle - fileOffset + (long)(Uniform(r, 4) * _layout.BundleBytes));
        landed[at] ^= (byte)(1 << (int)(Uniform(r, 5) * 8));
    }

    public override bool Kill(FlashLoader.ReadRequest r)
    {
        if (Fault(r) != FaultKind.KilledReader) return false;
        Count(FaultKind.KilledReader);
        return true;
    }
}
