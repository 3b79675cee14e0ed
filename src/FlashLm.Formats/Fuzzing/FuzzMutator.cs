using System.Buffers.Binary;
using System.Globalization;
using System.Text;

namespace FlashLm.Formats.Fuzzing;

/// <summary>
/// Mutates one seed file: generic byte mutations (bit flips, byte sets, truncations, splices, duplications,
/// deletions) and structure-aware ones on the fields <see cref="FuzzFields"/> located (huge, negative and
/// off-by-one counts, lengths, dims and offsets; wrong type tags; JSON tokens replaced by numbers out of
/// range, negative numbers or values of the wrong type). Deterministic for a given <see cref="Random"/>.
/// </summary>
public static class FuzzMutator
{
    private static readonly string[] JsonValues =
    [
        "-1", "0", "1", "2", "-2147483649", "2147483647", "2147483648", "4294967296", "1099511627776", "1e308", "-1e308", "1e-308",
        "0.5", "-0.0", "9223372036854775807", "9223372036854775808", "-9223372036854775808", "18446744073709551615",
        "\"\"", "\"x\"", "\"F32\"", "\"F16\"", "\"BF16\"", "\"I64\"", "\"llama\"", "\"opt\"", "\"../../etc/passwd\"", "\"\\u0000\"",
        "null", "true", "false", "[]", "{}", "[0]", "[-1]", "[1,1]", "[0,0]", "[1099511627776,1099511627776]", "[0,9223372036854775807]",
        "[\"a\"]", "[[1]]", "{\"a\":1}", "NaN", "",
    ];

    /// <summary>Applies one to three mutations to a copy of <paramref name="seed"/>; returns it and a one-line description.</summary>
    /// <param name="lengthPrefixedJson">True for safetensors: a JSON token replaced in the header also updates the u64 header length, so the case exercises the JSON, not only the length check.</param>
    public static (byte[] Bytes, string Description) Mutate(byte[] seed, IReadOnlyList<FuzzField> fields, bool lengthPrefixedJson, Random rng)
    {
        var b = new List<byte>(seed);
        var what = new List<string>();
        // The "hot" region is the header: most bytes of a model file are tensor data that any value is valid for.
        long hot = fields.Count == 0 ? seed.Length : Math.Min(seed.Length, fields.Max(f => f.Offset + f.Width) + 64);

        // Structure-aware mutations first, from the last field back, so earlier field offsets stay valid.
        int structural = fields.Count == 0 ? 0 : rng.Next(3) switch { 0 => 0, 1 => 1, _ => 1 + rng.Next(3) };
        // Fields may nest (a JSON object and its members): keep only picks that do not overlap an earlier one.
        var picked = new List<FuzzField>();
        for (int k = 0; k < structural; k++)
        {
            var f = fields[rng.Next(fields.Count)];
            if (picked.All(p => f.Offset + f.Width <= p.Offset || p.Offset + p.Width <= f.Offset)) picked.Add(f);
        }
        foreach (var f in picked.OrderByDescending(f => f.Offset))
        {
            switch (f.Kind)
            {
                case FieldKind.Integer:
                {
                    long old = f.Width == 4 ? BinaryPrimitives.ReadInt32LittleEndian(Slice(b, f.Offset, 4)) : BinaryPrimitives.ReadInt64LittleEndian(Slice(b, f.Offset, 8));
                    long v = InterestingInteger(old, seed.Length, rng);
                    WriteInteger(b, f.Offset, f.Width, v);
                    what.Add($"int{f.Width * 8}@{f.Offset} {old}->{(f.Width == 4 ? (int)v : v)}");
                    break;
                }
                case FieldKind.TypeTag:
                {
                    uint v = rng.Next(4) switch { 0 => uint.MaxValue, 1 => (uint)rng.Next(256), _ => (uint)rng.Next(41) };
                    WriteInteger(b, f.Offset, 4, v);
                    what.Add($"tag@{f.Offset}->{v}");
                    break;
                }
                case FieldKind.Varint:
                {
                    long v = rng.Next(3) == 0 ? rng.Next(64) : InterestingInteger(rng.Next(1 << 14), seed.Length, rng);
                    var bytes = new List<byte>();
                    ulong u = (ulong)v;
                    do
                    {
                        bytes.Add((byte)(u & 0x7F | (u > 0x7F ? 0x80u : 0)));
                        u >>= 7;
                    } while (u != 0);
                    b.RemoveRange((int)f.Offset, f.Width);
                    b.InsertRange((int)f.Offset, bytes);
                    what.Add($"varint@{f.Offset}->{(ulong)v}");
                    break;
                }
                case FieldKind.JsonToken:
                {
                    string old = Encoding.UTF8.GetString(Slice(b, f.Offset, f.Width));
                    string v = JsonValue(old, rng);
                    var bytes = Encoding.UTF8.GetBytes(v);
                    b.RemoveRange((int)f.Offset, f.Width);
                    b.InsertRange((int)f.Offset, bytes);
                    if (lengthPrefixedJson)
                    {
                        long n = BinaryPrimitives.ReadInt64LittleEndian(Slice(b, 0, 8));
                        WriteInteger(b, 0, 8, n + bytes.Length - f.Width);
                    }
                    what.Add($"json@{f.Offset} {Short(old)}->{Short(v)}");
                    break;
                }
            }
        }

        int generic = structural == 0 ? 1 + rng.Next(3) : rng.Next(2);
        for (int i = 0; i < generic; i++)
        {
            int Pos() => b.Count == 0 ? 0 : rng.Next(3) > 0 && hot > 0 ? rng.Next((int)Math.Min(hot, b.Count)) : rng.Next(b.Count);
            switch (rng.Next(7))
            {
                case 0:
                case 1:
                {
                    if (b.Count == 0) break;
                    int bits = 1 + rng.Next(rng.Next(4) == 0 ? 32 : 4);
                    int first = Pos();
                    for (int k = 0; k < bits; k++)
                    {
                        int at = rng.Next(2) == 0 ? Math.Min(b.Count - 1, first + rng.Next(8)) : Pos();
                        b[at] ^= (byte)(1 << rng.Next(8));
                    }
                    what.Add($"flip {bits} bits near {first}");
                    break;
                }
                case 2:
                {
                    if (b.Count == 0) break;
                    int at = Pos(), n = 1 + rng.Next(8);
                    byte[] choices = [0x00, 0xFF, 0x7F, 0x80, 0x20, (byte)'"', (byte)'{', (byte)'[', (byte)'-', (byte)'9', (byte)rng.Next(256)];
                    byte v = choices[rng.Next(choices.Length)];
                    for (int k = 0; k < n && at + k < b.Count; k++) b[at + k] = v;
                    what.Add($"set {n} bytes @{at}=0x{v:X2}");
                    break;
                }
                case 3:
                {
                    int keep = rng.Next(2) == 0 ? Pos() : rng.Next(b.Count + 1);
                    b.RemoveRange(keep, b.Count - keep);
                    what.Add($"truncate to {keep}");
                    break;
                }
                case 4:
                {
                    if (b.Count == 0) break;
                    int from = Pos(), n = Math.Min(b.Count - from, 1 + rng.Next(rng.Next(2) == 0 ? 16 : 4096)), to = Pos();
                    var range = b.GetRange(from, n);
                    if (rng.Next(2) == 0)
                    {
                        b.InsertRange(to, range);
                        what.Add($"duplicate [{from},+{n}) at {to}");
                    }
                    else
                    {
                        for (int k = 0; k < n && to + k < b.Count; k++) b[to + k] = range[k];
                        what.Add($"splice [{from},+{n}) over {to}");
                    }
                    break;
                }
                case 5:
                {
                    if (b.Count == 0) break;
                    int at = Pos(), n = Math.Min(b.Count - at, 1 + rng.Next(64));
                    b.RemoveRange(at, n);
                    what.Add($"delete [{at},+{n})");
                    break;
                }
                default:
                {
                    int at = Pos(), n = 1 + rng.Next(16);
                    var bytes = new byte[n];
                    rng.NextBytes(bytes);
                    b.InsertRange(at, bytes);
                    what.Add($"insert {n} random bytes @{at}");
                    break;
                }
            }
        }
        return (b.ToArray(), string.Join("; ", what));
    }

    private static byte[] Slice(List<byte> b, long at, int n) => b.GetRange((int)at, Math.Min(n, b.Count - (int)at)).ToArray();

    private static void WriteInteger(List<byte> b, long at, int width, long v)
    {
        for (int k = 0; k < width && at + k < b.Count; k++) b[(int)at + k] = (byte)(v >> (8 * k));
    }

    private static long InterestingInteger(long old, long fileSize, Random rng) => rng.Next(22) switch
    {
        0 => 0,
        1 => 1,
        2 => -1,
        3 => int.MaxValue,
        4 => int.MinValue,
        5 => uint.MaxValue,
        6 => 1L << 31,
        7 => 1L << 32,
        8 => 1L << 40,
        9 => long.MaxValue,
        10 => long.MinValue,
        11 => fileSize,
        12 => fileSize + 1,
        13 => fileSize - 1,
        14 => fileSize * 8,
        15 => -old,
        16 => old * 2,
        17 => old * 256,
        18 => old / 2,
        19 => 1L << rng.Next(64),
        20 => rng.NextInt64(),
        _ => old + rng.Next(-16, 17),
    };

    private static string JsonValue(string old, Random rng)
    {
        switch (rng.Next(6))
        {
            case 0 when long.TryParse(old, NumberStyles.Integer, CultureInfo.InvariantCulture, out var n):
                return rng.Next(4) switch
                {
                    0 => (n + rng.Next(-3, 4)).ToString(CultureInfo.InvariantCulture),
                    1 => (-n).ToString(CultureInfo.InvariantCulture),
                    2 => (n * 2).ToString(CultureInfo.InvariantCulture),
                    _ => (n * 65536).ToString(CultureInfo.InvariantCulture),
                };
            case 1:
                return rng.Next(3) switch
                {
                    0 => "\"" + new string('A', 1 << rng.Next(8, 17)) + "\"",
                    1 => new string('[', 1000) + new string(']', 1000),
                    _ => old + old,
                };
            default:
                return JsonValues[rng.Next(JsonValues.Length)];
        }
    }

    private static string Short(string s) => s.Length <= 24 ? s : s[..20] + $"..({s.Length})";
}
