using Akka.Actor;
using System.Runtime.Serialization;
using Akka.Serialization;
using FlashLm.Models.Sampling;

namespace FlashLm.Cluster;

/// <summary>
/// Writes <see cref="IClusterMessage"/>s as little-endian binary: a hidden state is its floats, a token an int, an actor its
/// serialized path. The per-hop bytes the cluster docs quote are this form's.
/// </summary>
public sealed class ClusterSerializer(ExtendedActorSystem system) : SerializerWithStringManifest(system)
{
    /// <summary>The serializer's id (Akka reserves 0-100).</summary>
    public override int Identifier => 7301;

    /// <summary>A short tag per message type.</summary>
    public override string Manifest(object o) => o switch
    {
        Turn => "T",
        TurnStarted => "TS",
        TurnToken => "TT",
        TurnAck => "TA",
        TurnEnd => "TE",
        TurnCancel => "TC",
        StageStep => "SS",
        StageResult => "SR",
        StageRelease => "SL",
        _ => throw new ArgumentException($"{o.GetType()} is not a FlashLm cluster message"),
    };

    /// <summary>The message's bytes.</summary>
    public override byte[] ToBinary(object o)
    {
        using var m = new MemoryStream();
        using (var w = new BinaryWriter(m))
        {
            switch (o)
            {
                case Turn t:
                    w.Write(t.Conversation); w.Write(t.Request); Ints(w, t.Tokens); w.Write(t.MaxPositions); Sampling(w, t.Sampling); Ref(w, t.ReplyTo); Ints(w, t.StopTokens);
                    break;
                case TurnStarted s:
                    w.Write(s.Request); w.Write(s.Node); w.Write(s.Reused);
                    break;
                case TurnToken t:
                    w.Write(t.Request); w.Write(t.Seq); w.Write(t.Position); w.Write(t.Token); w.Write(t.Piece.Length); w.Write(t.Piece);
                    w.Write(t.BytesRead); w.Write(t.Active); w.Write(t.Hits); w.Write(t.TotalMs);
                    break;
                case TurnAck a:
                    w.Write(a.Request); w.Write(a.Seq);
                    break;
                case TurnEnd e:
                    w.Write(e.Request); Text(w, e.Error); w.Write(e.Busy);
                    break;
                case TurnCancel c:
                    w.Write(c.Conversation); w.Write(c.Request);
                    break;
                case StageStep s:
                    w.Write(s.Conversation); w.Write(s.Turn); w.Write(s.Position); w.Write(s.Token);
                    w.Write(s.Hidden is null ? -1 : s.Hidden.Length);
                    if (s.Hidden is not null) w.Write(System.Runtime.InteropServices.MemoryMarshal.AsBytes(s.Hidden.AsSpan()));
                    w.Write(s.Prefill); w.Write(s.NeedToken); Sampling(w, s.Sampling); Ref(w, s.Driver); Doubles(w, s.StageMs);
                    w.Write(s.BytesRead); w.Write(s.Active); w.Write(s.Hits);
                    break;
                case StageResult r:
                    w.Write(r.Conversation); w.Write(r.Position); w.Write(r.Token); Doubles(w, r.StageMs); w.Write(r.BytesRead); w.Write(r.Active); w.Write(r.Hits);
                    Text(w, r.Error);
                    break;
                case StageRelease r:
                    w.Write(r.Conversation);
                    break;
                default:
                    throw new ArgumentException($"{o.GetType()} is not a FlashLm cluster message");
            }
        }
        return m.ToArray();
    }

    /// <summary>The message back from its bytes and tag; malformed bytes throw <see cref="SerializationException"/>.</summary>
    public override object FromBinary(byte[] bytes, string manifest)
    {
        try
        {
            return Read(bytes, manifest);
        }
        catch (EndOfStreamException e)
        {
            throw new SerializationException($"a FlashLm cluster message '{manifest}' of {bytes.Length} bytes was cut short", e);
        }
    }

    private object Read(byte[] bytes, string manifest)
    {
        using var r = new BinaryReader(new MemoryStream(bytes));
        return manifest switch
        {
            "T" => new Turn(r.ReadString(), r.ReadInt64(), Ints(r), r.ReadInt32(), Sampling(r), Ref(r), Ints(r)),
            "TS" => new TurnStarted(r.ReadInt64(), r.ReadString(), r.ReadInt32()),
            "TT" => new TurnToken(r.ReadInt64(), r.ReadInt32(), r.ReadInt32(), r.ReadInt32(), r.ReadBytes(Count(r, 1 << 20, 1)), r.ReadInt64(), r.ReadInt32(), r.ReadInt32(), r.ReadDouble()),
            "TA" => new TurnAck(r.ReadInt64(), r.ReadInt32()),
            "TE" => new TurnEnd(r.ReadInt64(), Text(r), r.ReadBoolean()),
            "TC" => new TurnCancel(r.ReadString(), r.ReadInt64()),
            "SS" => Step(r),
            "SR" => new StageResult(r.ReadString(), r.ReadInt32(), r.ReadInt32(), Doubles(r), r.ReadInt64(), r.ReadInt32(), r.ReadInt32(), Text(r)),
            "SL" => new StageRelease(r.ReadString()),
            _ => throw new SerializationException($"unknown FlashLm cluster message manifest '{manifest}'"),
        };
    }

    private StageStep Step(BinaryReader r)
    {
        string conversation = r.ReadString();
        long turn = r.ReadInt64();
        int position = r.ReadInt32(), token = r.ReadInt32(), n = r.ReadInt32();
        float[]? hidden = null;
        if (n >= 0)
        {
            if (n > 1 << 24 || (long)n * sizeof(float) > r.BaseStream.Length - r.BaseStream.Position)
                throw new SerializationException($"a hidden state of {n} values is more than the message holds");
            hidden = new float[n];
            int read = r.Read(System.Runtime.InteropServices.MemoryMarshal.AsBytes(hidden.AsSpan()));
            if (read != n * sizeof(float)) throw new SerializationException($"the hidden state was cut short ({read} of {n * sizeof(float)} bytes)");
        }
        return new StageStep(conversation, turn, position, token, hidden, r.ReadBoolean(), r.ReadBoolean(), Sampling(r), Ref(r), Doubles(r), r.ReadInt64(), r.ReadInt32(), r.ReadInt32());
    }

    /// <summary>A count of <paramref name="elementBytes"/>-byte items, at most <paramref name="max"/> and no more than the bytes left hold.</summary>
    private static int Count(BinaryReader r, int max, int elementBytes)
    {
        int n = r.ReadInt32();
        if (n < 0 || n > max || (long)n * elementBytes > r.BaseStream.Length - r.BaseStream.Position)
            throw new SerializationException($"a length of {n} is outside 0..{max} or more than the message holds");
        return n;
    }

    private static void Ints(BinaryWriter w, int[] v)
    {
        w.Write(v.Length);
        foreach (var x in v) w.Write(x);
    }

    private static int[] Ints(BinaryReader r)
    {
        var v = new int[Count(r, 1 << 24, sizeof(int))];
        for (int i = 0; i < v.Length; i++) v[i] = r.ReadInt32();
        return v;
    }

    private static void Doubles(BinaryWriter w, double[] v)
    {
        w.Write(v.Length);
        foreach (var x in v) w.Write(x);
    }

    private static double[] Doubles(BinaryReader r)
    {
        var v = new double[Count(r, 4096, sizeof(double))];
        for (int i = 0; i < v.Length; i++) v[i] = r.ReadDouble();
        return v;
    }

    private static void Text(BinaryWriter w, string? s)
    {
        w.Write(s is not null);
        if (s is not null) w.Write(s);
    }

    private static string? Text(BinaryReader r) => r.ReadBoolean() ? r.ReadString() : null;

    private static void Sampling(BinaryWriter w, SamplingOptions s)
    {
        w.Write(s.Temperature); w.Write(s.TopP); w.Write(s.TopK); w.Write(s.Seed);
    }

    private static SamplingOptions Sampling(BinaryReader r) => new(r.ReadSingle(), r.ReadSingle(), r.ReadInt32(), r.ReadUInt64());

    private static void Ref(BinaryWriter w, IActorRef a) => w.Write(Akka.Serialization.Serialization.SerializedActorPath(a));

    private IActorRef Ref(BinaryReader r) => system.Provider.ResolveActorRef(r.ReadString());
}
