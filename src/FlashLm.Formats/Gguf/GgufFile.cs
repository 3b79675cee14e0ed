using System.Buffers.Binary;
using System.Text;

namespace FlashLm.Formats.Gguf;

/// <summary>GGUF metadata value types (the on-disk uint32 tags).</summary>
public enum GgufValueType : uint
{
    UInt8 = 0, Int8 = 1, UInt16 = 2, Int16 = 3, UInt32 = 4, Int32 = 5, Float32 = 6, Bool = 7,
    String = 8, Array = 9, UInt64 = 10, Int64 = 11, Float64 = 12,
}

/// <summary>ggml tensor element types (the on-disk uint32 tags); only some are readable here.</summary>
public enum GgmlType : uint
{
    F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8, Q8_1 = 9,
    Q2_K = 10, Q3_K = 11, Q4_K = 12, Q5_K = 13, Q6_K = 14, Q8_K = 15,
    IQ2_XXS = 16, IQ2_XS = 17, IQ3_XXS = 18, IQ1_S = 19, IQ4_NL = 20, IQ3_S = 21, IQ2_S = 22, IQ4_XS = 23,
    I8 = 24, I16 = 25, I32 = 26, I64 = 27, F64 = 28, IQ1_M = 29, BF16 = 30,
    TQ1_0 = 34, TQ2_0 = 35, MXFP4 = 39,
}

/// <summary>
/// One metadata value. Scalars are boxed .NET values (byte, sbyte, ushort, short, uint, int, float,
/// bool, string, ulong, long, double); arrays are typed .NET arrays of those (string[] for strings).
/// </summary>
public sealed record GgufValue(GgufValueType Type, object Value, GgufValueType ElementType, long Offset)
{
    public bool IsArray => Type == GgufValueType.Array;
}

/// <summary>
/// One tensor info entry. <see cref="Ne"/> is ggml's order: ne[0] is the innermost (fastest) dimension,
/// so the row-major shape is ne reversed. <see cref="DataOffset"/> is absolute in the file.
/// </summary>
public sealed record GgufTensorInfo(string Name, ulong[] Ne, GgmlType Type, ulong RelativeOffset, long DataOffset, long InfoOffset)
{
    public long[] RowMajorShape
    {
        get
        {
            var s = new long[Ne.Length];
            for (int i = 0; i < Ne.Length; i++) s[i] = (long)Ne[Ne.Length - 1 - i];
            return s;
        }
    }

    public long Elements
    {
        get
        {
            long n = 1;
            foreach (var d in Ne) n = checked(n * (long)d);
            return n;
        }
    }
}

/// <summary>
/// Low-level GGUF v2/v3 parser (little-endian): header, metadata and tensor infos, read through a
/// buffered stream so that multi-gigabyte files are never loaded. Every count, length, dimension and
/// offset is checked against the file size before it is used.
/// </summary>
public sealed class GgufFile
{
    public const uint Magic = 0x46554747; // "GGUF" read as little-endian uint32
    public const int DefaultAlignment = 32;

    public string Path { get; }
    public uint Version { get; }
    public long FileSize { get; }
    public IReadOnlyDictionary<string, GgufValue> Metadata { get; }
    /// <summary>Tensor infos in file order.</summary>
    public IReadOnlyList<GgufTensorInfo> TensorInfos { get; }
    public int Alignment { get; }
    /// <summary>Absolute offset of the (aligned) tensor data section.</summary>
    public long DataOffset { get; }

    public GgufFile(string path)
    {
        Path = path;
        if (!File.Exists(path)) throw new ModelFormatException(path, "file not found");
        try
        {
            using var fs = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16, FileOptions.SequentialScan);
            FileSize = fs.Length;
            var r = new Reader(fs, path, FileSize);
            uint magic = r.U32("magic");
            if (magic != Magic)
                throw new ModelFormatException(path, $"not a GGUF file: magic 0x{magic:X8}, expected \"GGUF\"", "magic", 0);
            Version = r.U32("version");
            if (Version is not (2 or 3))
                throw new ModelFormatException(path, $"unsupported GGUF version {Version} (supported: 2, 3)", "version", 4);
            long tensorCount = r.Count("tensor_count", 8 + 4 + 8 + 4 + 8); // name length, n_dims, one dim, type, offset
            long kvCount = r.Count("metadata_kv_count", 8 + 4);
            var meta = new Dictionary<string, GgufValue>(StringComparer.Ordinal);
            for (long i = 0; i < kvCount; i++)
            {
                long at = r.Position;
                string key = r.String($"metadata key #{i}");
                var type = (GgufValueType)r.U32(key);
                var v = ReadValue(r, key, type, at);
                if (!meta.TryAdd(key, v))
                    throw new ModelFormatException(path, "duplicate metadata key", key, at);
            }
            Metadata = meta;

            Alignment = DefaultAlignment;
            if (meta.TryGetValue("general.alignment", out var al))
            {
                long a = AsInteger(al, "general.alignment");
                if (a <= 0 || a > 1 << 20 || (a & (a - 1)) != 0)
                    throw new ModelFormatException(path, $"alignment {a} is not a power of two in 1..2^20", "general.alignment", al.Offset);
                Alignment = (int)a;
            }

            var infos = new List<GgufTensorInfo>((int)Math.Min(tensorCount, 1 << 16));
            var names = new HashSet<string>(StringComparer.Ordinal);
            for (long i = 0; i < tensorCount; i++)
            {
                long at = r.Position;
                string name = r.String($"tensor info #{i} name");
                uint nDims = r.U32(name);
                if (nDims is 0 or > 4)
                    throw new ModelFormatException(path, $"tensor has {nDims} dimensions (ggml allows 1..4)", name, r.Position - 4);
                var ne = new ulong[nDims];
                for (int d = 0; d < nDims; d++)
                {
                    ne[d] = r.U64(name);
                    if (ne[d] == 0 || ne[d] > (ulong)FileSize * 8)
                        throw new ModelFormatException(path, $"dimension ne[{d}] = {ne[d]} is not plausible for a {FileSize}-byte file", name, r.Position - 8);
                }
                long typeAt = r.Position;
                var type = (GgmlType)r.U32(name);
                // ggml stores whole blocks per row: a row that ends inside a block has no defined size.
                if (GgmlTypes.Block(type) is { } block && ne[0] % (ulong)block.Elements != 0)
                    throw new ModelFormatException(path,
                        $"{GgmlTypes.Name(type)} tensor's inner dimension ne[0] = {ne[0]} is not a multiple of its block size {block.Elements}",
                        name, typeAt);
                ulong rel = r.U64(name);
                if (rel % (ulong)Alignment != 0)
                    throw new ModelFormatException(path, $"tensor data offset {rel} is not a multiple of the alignment {Alignment}", name, r.Position - 8);
                if (!names.Add(name))
                    throw new ModelFormatException(path, "duplicate tensor name", name, at);
                infos.Add(new GgufTensorInfo(name, ne, type, rel, -1, at));
            }
            long headerEnd = r.Position;
            DataOffset = (headerEnd + Alignment - 1) / Alignment * Alignment;
            // Check in data order so that a cut file names the tensor the cut falls in.
            GgufTensorInfo? previous = null;
            long previousEnd = 0;
            foreach (var t in infos.OrderBy(t => t.RelativeOffset))
            {
                long? bytes = DataBytes(t.Type, t.Elements);
                if (t.RelativeOffset > (ulong)FileSize || DataOffset + (long)t.RelativeOffset + (bytes ?? 0) > FileSize)
                    throw new ModelFormatException(path,
                        $"model is corrupted or incomplete: {GgmlTypes.Name(t.Type)} tensor data [{DataOffset} + {t.RelativeOffset}, +{bytes?.ToString() ?? "?"} bytes) lies beyond the end of the file ({FileSize} bytes)",
                        t.Name, t.InfoOffset);
                if (previous is not null && (long)t.RelativeOffset < previousEnd)
                    throw new ModelFormatException(path,
                        $"tensor data at {DataOffset} + {t.RelativeOffset} overlaps tensor '{ModelFormatException.Printable(previous.Name)}', which ends at {DataOffset} + {previousEnd}",
                        t.Name, t.InfoOffset);
                previous = t;
                previousEnd = (long)t.RelativeOffset + (bytes ?? 0);
            }
            for (int i = 0; i < infos.Count; i++) infos[i] = infos[i] with { DataOffset = DataOffset + (long)infos[i].RelativeOffset };
            TensorInfos = infos;
        }
        catch (ModelFormatException) { throw; }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or OverflowException or OutOfMemoryException or DecoderFallbackException)
        {
            throw new ModelFormatException(path, $"cannot read GGUF header: {e.Message}", null, null, e);
        }
    }

    /// <summary>
    /// Stored bytes of <paramref name="elements"/> elements of any type ggml defines (whole blocks; the inner
    /// dimension is a multiple of the block size, checked when the header is read); null for an unknown type id.
    /// </summary>
    public static long? DataBytes(GgmlType type, long elements) =>
        GgmlTypes.Block(type) is { } b ? checked((elements + b.Elements - 1) / b.Elements * b.Bytes) : null;

    private GgufValue ReadValue(Reader r, string key, GgufValueType type, long at)
    {
        if (type != GgufValueType.Array)
            return new GgufValue(type, ReadScalar(r, key, type), type, at);
        var et = (GgufValueType)r.U32(key);
        if (et == GgufValueType.Array)
            throw new ModelFormatException(Path, "nested arrays are not supported", key, r.Position - 4);
        long n = r.Count(key, et == GgufValueType.String ? 8 : ScalarSize(et, key, r.Position - 4));
        Array arr = et switch
        {
            GgufValueType.UInt8 => new byte[n],
            GgufValueType.Int8 => new sbyte[n],
            GgufValueType.UInt16 => new ushort[n],
            GgufValueType.Int16 => new short[n],
            GgufValueType.UInt32 => new uint[n],
            GgufValueType.Int32 => new int[n],
            GgufValueType.Float32 => new float[n],
            GgufValueType.Bool => new bool[n],
            GgufValueType.String => new string[n],
            GgufValueType.UInt64 => new ulong[n],
            GgufValueType.Int64 => new long[n],
            GgufValueType.Float64 => new double[n],
            _ => throw new ModelFormatException(Path, $"unknown array element type {(uint)et}", key, r.Position - 12),
        };
        // Typed loops: boxing each element (Array.SetValue) would allocate ~24 bytes per stored byte.
        switch (arr)
        {
            case string[] s: for (long i = 0; i < n; i++) s[i] = r.String(key); break;
            case float[] f: for (long i = 0; i < n; i++) f[i] = BitConverter.Int32BitsToSingle((int)r.U32(key)); break;
            case int[] x: for (long i = 0; i < n; i++) x[i] = (int)r.U32(key); break;
            case uint[] x: for (long i = 0; i < n; i++) x[i] = r.U32(key); break;
            case byte[] x: for (long i = 0; i < n; i++) x[i] = r.U8(key); break;
            case sbyte[] x: for (long i = 0; i < n; i++) x[i] = (sbyte)r.U8(key); break;
            case bool[] x: for (long i = 0; i < n; i++) x[i] = r.U8(key) != 0; break;
            case ushort[] x: for (long i = 0; i < n; i++) x[i] = (ushort)(r.U8(key) | r.U8(key) << 8); break;
            case short[] x: for (long i = 0; i < n; i++) x[i] = (short)(r.U8(key) | r.U8(key) << 8); break;
            case ulong[] x: for (long i = 0; i < n; i++) x[i] = r.U64(key); break;
            case long[] x: for (long i = 0; i < n; i++) x[i] = (long)r.U64(key); break;
            case double[] x: for (long i = 0; i < n; i++) x[i] = BitConverter.Int64BitsToDouble((long)r.U64(key)); break;
        }
        return new GgufValue(type, arr, et, at);
    }

    private int ScalarSize(GgufValueType t, string key, long at) => t switch
    {
        GgufValueType.UInt8 or GgufValueType.Int8 or GgufValueType.Bool => 1,
        GgufValueType.UInt16 or GgufValueType.Int16 => 2,
        GgufValueType.UInt32 or GgufValueType.Int32 or GgufValueType.Float32 => 4,
        GgufValueType.UInt64 or GgufValueType.Int64 or GgufValueType.Float64 => 8,
        _ => throw new ModelFormatException(Path, $"unknown metadata value type {(uint)t}", key, at),
    };

    private object ReadScalar(Reader r, string key, GgufValueType t) => t switch
    {
        GgufValueType.UInt8 => r.U8(key),
        GgufValueType.Int8 => (sbyte)r.U8(key),
        GgufValueType.UInt16 => (ushort)(r.U8(key) | r.U8(key) << 8),
        GgufValueType.Int16 => (short)(r.U8(key) | r.U8(key) << 8),
        GgufValueType.UInt32 => r.U32(key),
        GgufValueType.Int32 => (int)r.U32(key),
        GgufValueType.Float32 => BitConverter.Int32BitsToSingle((int)r.U32(key)),
        GgufValueType.Bool => r.U8(key) != 0,
        GgufValueType.String => r.String(key),
        GgufValueType.UInt64 => r.U64(key),
        GgufValueType.Int64 => (long)r.U64(key),
        GgufValueType.Float64 => BitConverter.Int64BitsToDouble((long)r.U64(key)),
        _ => throw new ModelFormatException(Path, $"unknown metadata value type {(uint)t}", key, r.Position - 4),
    };

    // ---- typed metadata access (all failures name the key) ----

    public bool Has(string key) => Metadata.ContainsKey(key);

    public GgufValue Get(string key) =>
        Metadata.TryGetValue(key, out var v) ? v : throw new ModelFormatException(Path, "required metadata key is missing", key);

    public string GetString(string key)
    {
        var v = Get(key);
        return v.Value as string ?? throw new ModelFormatException(Path, $"expected a string, found {v.Type}", key, v.Offset);
    }

    public string? GetStringOrNull(string key) => Has(key) ? GetString(key) : null;

    public long GetInteger(string key) => AsInteger(Get(key), key);

    public long GetInteger(string key, long fallback) => Has(key) ? GetInteger(key) : fallback;

    public float GetFloat(string key)
    {
        var v = Get(key);
        return v.Value switch
        {
            float f => f,
            double d => (float)d,
            _ when !v.IsArray && v.Type != GgufValueType.String && v.Type != GgufValueType.Bool => AsInteger(v, key),
            _ => throw new ModelFormatException(Path, $"expected a number, found {v.Type}", key, v.Offset),
        };
    }

    public float GetFloat(string key, float fallback) => Has(key) ? GetFloat(key) : fallback;

    public bool GetBool(string key, bool fallback)
    {
        if (!Has(key)) return fallback;
        var v = Get(key);
        return v.Value as bool? ?? throw new ModelFormatException(Path, $"expected a bool, found {v.Type}", key, v.Offset);
    }

    public T[] GetArray<T>(string key)
    {
        var v = Get(key);
        return v.Value as T[] ?? throw new ModelFormatException(Path,
            $"expected an array of {typeof(T).Name}, found {(v.IsArray ? "an array of " + v.ElementType : v.Type.ToString())}", key, v.Offset);
    }

    /// <summary>An integer array of any integer element type, as int.</summary>
    public int[] GetIntArray(string key)
    {
        var v = Get(key);
        if (!v.IsArray || v.Value is string[] or float[] or double[] or bool[])
            throw new ModelFormatException(Path, $"expected an integer array, found {v.Type} of {v.ElementType}", key, v.Offset);
        var a = (Array)v.Value;
        var r = new int[a.Length];
        for (int i = 0; i < r.Length; i++)
        {
            long x = a.GetValue(i) switch { ulong u => u > int.MaxValue ? long.MaxValue : (long)u, var o => Convert.ToInt64(o) };
            if (x is < int.MinValue or > int.MaxValue)
                throw new ModelFormatException(Path, $"element {i} = {a.GetValue(i)} does not fit a 32-bit integer", key, v.Offset);
            r[i] = (int)x;
        }
        return r;
    }

    private long AsInteger(GgufValue v, string key) => v.Value switch
    {
        byte b => b, sbyte b => b, ushort s => s, short s => s, uint u => u, int i => i, long l => l,
        ulong u => u <= long.MaxValue ? (long)u : throw new ModelFormatException(Path, $"value {u} is too large", key, v.Offset),
        _ => throw new ModelFormatException(Path, $"expected an integer, found {(v.IsArray ? "an array" : v.Type.ToString())}", key, v.Offset),
    };

    /// <summary>Sequential little-endian reader over a buffered stream that knows the file size.</summary>
    private sealed class Reader(Stream s, string path, long size)
    {
        private readonly byte[] _buf = new byte[8];
        private byte[] _scratch = new byte[256];
        public long Position { get; private set; }

        private void Fill(int n, string what)
        {
            if (Position + n > size)
                throw new ModelFormatException(path, $"model is corrupted or incomplete: file ends at {size} while reading {n} bytes", what, Position);
            s.ReadExactly(_buf, 0, n);
            Position += n;
        }

        public byte U8(string what) { Fill(1, what); return _buf[0]; }
        public uint U32(string what) { Fill(4, what); return BinaryPrimitives.ReadUInt32LittleEndian(_buf); }
        public ulong U64(string what) { Fill(8, what); return BinaryPrimitives.ReadUInt64LittleEndian(_buf); }

        /// <summary>A uint64 count whose <paramref name="minBytesEach"/>-byte items must fit in the rest of the file.</summary>
        public long Count(string what, long minBytesEach)
        {
            long at = Position;
            ulong n = U64(what);
            if (n > (ulong)(size - Position) / (ulong)Math.Max(1, minBytesEach))
                throw new ModelFormatException(path, $"count {n} cannot fit in the {size - Position} bytes left in the file", what, at);
            return (long)n;
        }

        public string String(string what)
        {
            long at = Position;
            ulong len = U64(what);
            if (len > (ulong)(size - Position))
                throw new ModelFormatException(path, $"model is corrupted or incomplete: string length {len} runs past the end of the file ({size} bytes)", what, at);
            if (len > 1 << 30)
                throw new ModelFormatException(path, $"string length {len} is too large", what, at);
            // One scratch buffer for every string: a vocabulary is tens of thousands of them.
            if ((long)len > _scratch.Length) _scratch = new byte[Math.Max((long)len, Math.Min(2L * _scratch.Length, 1 << 16))];
            s.ReadExactly(_scratch, 0, (int)len);
            Position += (long)len;
            return Utf8Text.Decode(_scratch.AsSpan(0, (int)len));
        }
    }
}
