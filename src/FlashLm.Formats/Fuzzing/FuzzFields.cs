using System.Buffers.Binary;
using System.Text.Json;

namespace FlashLm.Formats.Fuzzing;

/// <summary>How a located field is stored, which decides how a structure-aware mutation rewrites it.</summary>
public enum FieldKind
{
    /// <summary>A little-endian integer of <see cref="FuzzField.Width"/> bytes (4 or 8): counts, lengths, dims, offsets.</summary>
    Integer,
    /// <summary>A little-endian uint32 type tag (GGUF value and ggml types): small values are the interesting ones.</summary>
    TypeTag,
    /// <summary>A JSON token (number, string, literal, or a whole array/object) spanning <see cref="FuzzField.Width"/> bytes.</summary>
    JsonToken,
    /// <summary>A protobuf varint (tag, value or length prefix) of <see cref="FuzzField.Width"/> bytes, rewritten as a varint of any length.</summary>
    Varint,
}

/// <summary>A header field of a seed file: where it is, how wide, and what it holds.</summary>
public readonly record struct FuzzField(long Offset, int Width, FieldKind Kind);

/// <summary>
/// Finds the header fields of a valid seed file (counts, lengths, dims, offsets, type tags, JSON tokens), so that
/// structure-aware mutations hit the places a parser trusts rather than the tensor data that makes up most bytes.
/// </summary>
public static class FuzzFields
{
    /// <summary>Every count, length, type tag, dimension and offset in a GGUF v2/v3 header (arrays: the first 64 elements).</summary>
    public static List<FuzzField> Gguf(byte[] b)
    {
        var f = new List<FuzzField>();
        int at = 8; // magic, version
        void Int(int width) { f.Add(new(at, width, FieldKind.Integer)); at += width; }
        void Tag() { f.Add(new(at, 4, FieldKind.TypeTag)); at += 4; }
        ulong U64() => BinaryPrimitives.ReadUInt64LittleEndian(b.AsSpan(at));
        uint U32() => BinaryPrimitives.ReadUInt32LittleEndian(b.AsSpan(at));
        void Str() { int len = (int)U64(); Int(8); at += len; }
        int Size(uint t) => t switch { 0 or 1 or 7 => 1, 2 or 3 => 2, 4 or 5 or 6 => 4, _ => 8 };
        long tensors = (long)U64(); Int(8);
        long kvs = (long)U64(); Int(8);
        for (long i = 0; i < kvs; i++)
        {
            Str();
            uint type = U32(); Tag();
            if (type == 9)
            {
                uint et = U32(); Tag();
                long n = (long)U64(); Int(8);
                for (long k = 0; k < n; k++)
                {
                    if (et == 8)
                    {
                        if (k < 64) Str();
                        else at += 8 + (int)U64();
                    }
                    else at += Size(et);
                }
            }
            else if (type == 8) Str();
            else if (Size(type) is 4 or 8) Int(Size(type));
            else at += Size(type);
        }
        for (long i = 0; i < tensors; i++)
        {
            Str();
            uint dims = U32(); Int(4);
            for (int d = 0; d < dims; d++) Int(8);
            Tag();
            Int(8);
        }
        return f;
    }

    /// <summary>The seven int32 fields of a llama2.c checkpoint header.</summary>
    public static List<FuzzField> Llama2cModel(byte[] b) =>
        Enumerable.Range(0, 7).Select(i => new FuzzField(i * 4, 4, FieldKind.Integer)).ToList();

    /// <summary>A llama2.c tokenizer: max_token_length, then each token's score and length.</summary>
    public static List<FuzzField> Llama2cTokenizer(byte[] b)
    {
        var f = new List<FuzzField> { new(0, 4, FieldKind.Integer) };
        int at = 4;
        while (at + 8 <= b.Length)
        {
            f.Add(new(at, 4, FieldKind.Integer));
            f.Add(new(at + 4, 4, FieldKind.Integer));
            at += 8 + BinaryPrimitives.ReadInt32LittleEndian(b.AsSpan(at + 4));
        }
        return f;
    }

    /// <summary>Every JSON token of <paramref name="json"/> (values, and whole arrays and objects), shifted by <paramref name="baseOffset"/>.</summary>
    public static List<FuzzField> Json(ReadOnlySpan<byte> json, long baseOffset = 0)
    {
        var f = new List<FuzzField>();
        var starts = new Stack<long>();
        var r = new Utf8JsonReader(json, new JsonReaderOptions { CommentHandling = JsonCommentHandling.Skip });
        while (r.Read())
        {
            long start = r.TokenStartIndex;
            switch (r.TokenType)
            {
                case JsonTokenType.StartArray or JsonTokenType.StartObject:
                    starts.Push(start);
                    break;
                case JsonTokenType.EndArray or JsonTokenType.EndObject:
                    long s = starts.Pop();
                    f.Add(new(baseOffset + s, (int)(r.BytesConsumed - s), FieldKind.JsonToken));
                    break;
                case JsonTokenType.PropertyName:
                    break;
                default:
                    f.Add(new(baseOffset + start, (int)(r.BytesConsumed - start), FieldKind.JsonToken));
                    break;
            }
        }
        return f;
    }

    /// <summary>
    /// The varint tags, varint values and length prefixes of a protobuf message (SentencePiece's tokenizer.model),
    /// descending into length-delimited fields that parse as messages; at most 2000 fields.
    /// </summary>
    public static List<FuzzField> Protobuf(byte[] b)
    {
        var f = new List<FuzzField>();
        Walk(b, 0, b.Length, f, 0);
        return f;
    }

    private static bool Walk(byte[] b, int at, int end, List<FuzzField> f, int depth)
    {
        int mark = f.Count;
        while (at < end)
        {
            if (f.Count >= 2000) return true;
            int tagAt = at;
            if (!Varint(b, ref at, end, out ulong tag)) { f.RemoveRange(mark, f.Count - mark); return false; }
            f.Add(new(tagAt, at - tagAt, FieldKind.Varint));
            int valueAt = at;
            switch (tag & 7)
            {
                case 0:
                    if (!Varint(b, ref at, end, out _)) { f.RemoveRange(mark, f.Count - mark); return false; }
                    f.Add(new(valueAt, at - valueAt, FieldKind.Varint));
                    break;
                case 1: at += 8; break;
                case 5: at += 4; break;
                case 2:
                    if (!Varint(b, ref at, end, out ulong len) || len > (ulong)(end - at)) { f.RemoveRange(mark, f.Count - mark); return false; }
                    f.Add(new(valueAt, at - valueAt, FieldKind.Varint));
                    if (depth < 3) Walk(b, at, at + (int)len, f, depth + 1);
                    at += (int)len;
                    break;
                default:
                    f.RemoveRange(mark, f.Count - mark);
                    return false;
            }
        }
        if (at != end) { f.RemoveRange(mark, f.Count - mark); return false; }
        return true;
    }

    private static bool Varint(byte[] b, ref int at, int end, out ulong v)
    {
        v = 0;
        for (int shift = 0; shift < 64 && at < end; shift += 7)
        {
            byte x = b[at++];
            v |= (ulong)(x & 0x7F) << shift;
            if (x < 0x80) return true;
        }
        return false;
    }

    /// <summary>A safetensors file: the u64 header length, then every token of the JSON header.</summary>
    public static List<FuzzField> Safetensors(byte[] b)
    {
        int n = (int)BinaryPrimitives.ReadUInt64LittleEndian(b);
        var f = Json(b.AsSpan(8, n), 8);
        f.Add(new(0, 8, FieldKind.Integer));
        return f;
    }
}
