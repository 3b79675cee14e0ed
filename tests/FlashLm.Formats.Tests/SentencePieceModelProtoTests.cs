using System.Text;
using FlashLm.Formats;
using Xunit;

namespace FlashLm.Tests;

/// <summary>
/// SentencePieceModelProto.Read and SpmTokenizer on a tokenizer.model written by Google's SentencePiece
/// (Data/spm_bpe400.model, see Data/README.md), and on hand-made protobuf bytes for the refusals.
/// </summary>
public sealed class SentencePieceModelProtoTests
{
    private static byte[] RealModel()
    {
        using var s = typeof(SentencePieceModelProtoTests).Assembly.GetManifestResourceStream("spm_bpe400.model")
            ?? throw new InvalidOperationException("embedded resource spm_bpe400.model is missing");
        using var ms = new MemoryStream();
        s.CopyTo(ms);
        return ms.ToArray();
    }

    /// <summary>Texts and the ids spm_encode gave for them.</summary>
    public static readonly TheoryData<string, int[]> Encoded = new()
    {
        { "The keeper lit the lamp.", [331, 308, 301, 358, 261, 334, 374] },
        { "  two  spaces and a gull 42", [356, 356, 259, 367, 364, 356, 263, 373, 361, 377, 275, 286, 267, 327, 292, 356, 55, 387] },
        { "Grüße, café 日本 🙂", [356, 74, 362, 198, 191, 198, 162, 357, 376, 278, 361, 349, 356, 233, 154, 168, 233, 159, 175, 356, 243, 162, 156, 133] },
    };

    [Fact]
    public void Reads_pieces_scores_types_and_ids_of_a_sentencepiece_file()
    {
        var v = SentencePieceModelProto.Read(RealModel(), "spm_bpe400.model");
        Assert.Equal(400, v.Tokens.Length);
        Assert.Equal((1, 2, 0), (v.Bos, v.Eos, v.Unk));
        Assert.Equal(["<unk>", "<s>", "</s>", "<0x00>"], v.Tokens[..4]);
        Assert.Equal([SpmVocab.TypeUnknown, SpmVocab.TypeControl, SpmVocab.TypeControl, SpmVocab.TypeByte], v.Types[..4]);
        Assert.Equal("<0xFF>", v.Tokens[258]);
        Assert.Equal(["\u2581t", "he", "\u2581the"], v.Tokens[259..262]);
        Assert.Equal([0f, -1f, -2f], v.Scores[259..262]);
        Assert.All(v.Types[259..], t => Assert.Equal(SpmVocab.TypeNormal, t));
    }

    [Theory]
    [MemberData(nameof(Encoded))]
    public void Encodes_like_sentencepiece_and_decodes_back(string text, int[] expected)
    {
        var t = new SpmTokenizer(SentencePieceModelProto.Read(RealModel(), "spm_bpe400.model"));
        Assert.Equal(expected, t.Encode(text, addBos: false));
        var ids = t.Encode(text, addBos: true);
        Assert.Equal([1, .. expected], ids);
        var bytes = new List<byte>();
        for (int i = 1; i < ids.Length; i++) bytes.AddRange(t.Piece(ids[i - 1], ids[i]));
        Assert.Equal(text, Encoding.UTF8.GetString(bytes.ToArray()));
        Assert.Empty(t.Piece(0, 1)); // control tokens print nothing
    }

    [Fact]
    public void Loads_from_a_folder_with_overridden_ids_and_survives_export()
    {
        using var dir = new TempDir();
        File.WriteAllBytes(dir.File(SpmTokenizer.ModelFileName), RealModel());
        var t = SpmTokenizer.LoadModel(dir.Path);
        Assert.Equal((400, 1, 2), (t.VocabSize, t.BosId, t.EosId));
        var configIds = SpmTokenizer.LoadModel(dir.Path, bos: 2, eos: 1);
        Assert.Equal((2, 1), (configIds.BosId, configIds.EosId));
        Assert.Equal(2, configIds.Encode("The", addBos: true)[0]);

        using var exported = new TempDir();
        foreach (var (name, b) in t.Export()) File.WriteAllBytes(exported.File(name), b);
        var u = TokenizerStore.Open("spm", exported.Path, 400);
        foreach (var text in new[] { "The keeper lit the lamp.", "  two  spaces and a gull 42", "Grüße, café 日本 🙂" })
            Assert.Equal(t.Encode(text, true), u.Encode(text, true));
        Assert.Throws<ModelFormatException>(() => TokenizerStore.Open("spm", exported.Path, 401));
    }

    // ModelProto { pieces { piece: "a" } } followed by a trainer or normalizer spec.
    private static readonly byte[] OnePiece = [0x0A, 0x03, 0x0A, 0x01, (byte)'a'];

    [Theory]
    [InlineData(new byte[] { 0x12, 0x02, 0x18, 0x01 }, "trainer_spec.model_type")]                 // model_type: UNIGRAM
    [InlineData(new byte[] { 0x12, 0x02, 0x18, 0x02 }, "trainer_spec.byte_fallback")]              // BPE, byte_fallback unset (false)
    [InlineData(new byte[] { 0x1A, 0x0A, 0x0A, 0x08, (byte)'n', (byte)'m', (byte)'t', (byte)'_', (byte)'n', (byte)'f', (byte)'k', (byte)'c' },
        "normalizer_spec.name")]
    [InlineData(new byte[] { 0x1A, 0x0A, 0x0A, 0x08, (byte)'i', (byte)'d', (byte)'e', (byte)'n', (byte)'t', (byte)'i', (byte)'t', (byte)'y' },
        "normalizer_spec")]                                                                           // remove_extra_whitespaces unset (true)
    public void Refuses_settings_the_rebuilt_model_would_not_keep(byte[] spec, string key)
    {
        // A valid spec of the other kind follows, so that only the one under test is wrong.
        byte[] trainer = [0x12, 0x05, 0x18, 0x02, 0x98, 0x02, 0x01]; // model_type BPE, byte_fallback (field 35) true
        byte[] normalizer = [0x1A, 0x04, 0x18, 0x01, 0x20, 0x00];    // add_dummy_prefix true, remove_extra_whitespaces false
        byte[] other = spec[0] == 0x12 ? normalizer : trainer;
        var ex = Assert.Throws<ModelFormatException>(() => SentencePieceModelProto.Read([.. OnePiece, .. spec, .. other], "x.model"));
        Assert.Equal(key, ex.Key);
        Assert.Equal(OnePiece.Length, ex.Offset); // where the spec starts
        Assert.Contains("unsupported", ex.Message);
        // With both specs valid the same bytes are accepted.
        Assert.Equal(["a"], SentencePieceModelProto.Read([.. OnePiece, .. trainer, .. normalizer], "x.model").Tokens);
        Assert.Equal("trainer_spec", Assert.Throws<ModelFormatException>(() => SentencePieceModelProto.Read([.. OnePiece, .. normalizer], "x.model")).Key);
        Assert.Equal("normalizer_spec", Assert.Throws<ModelFormatException>(() => SentencePieceModelProto.Read([.. OnePiece, .. trainer], "x.model")).Key);
    }

    [Fact]
    public void Truncated_file_is_a_format_error()
    {
        var model = RealModel();
        for (int n = 1; n < model.Length; n += 97)
        {
            var ex = Assert.Throws<ModelFormatException>(() => new SpmTokenizer(SentencePieceModelProto.Read(model[..n], "cut.model"), "cut.model"));
            Assert.Equal("cut.model", ex.FilePath);
        }
    }
}
