using System.Buffers.Binary;

namespace FlashLm.Formats.Llama2c;

/// <summary>
/// A llama2.c checkpoint (legacy "version 0" .bin): a header of 7 int32
/// (dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len), then float32 tensors in
/// run.c's order. A negative vocab_size means a separate classifier (wcls) follows the freq_cis tables.
/// </summary>
public sealed class Llama2cModel : ModelSource
{
    public const int HeaderBytes = 7 * 4;

    /// <summary>Smallest vocabulary a llama2.c tokenizer can encode with: unk, bos, eos, then the 256 byte-fallback tokens.</summary>
    public const int MinVocab = 3 + 256;

    public override string Format => "llama2c";

    public Llama2cModel(string path, string tokenizerPath) : base(path)
    {
        if (!File.Exists(path)) throw new ModelFormatException(path, "file not found");
        long size = new FileInfo(path).Length;
        if (size < HeaderBytes)
            throw new ModelFormatException(path, $"model is corrupted or incomplete: {size} bytes is shorter than the 28-byte llama2.c header", "header", 0);
        var h = new byte[HeaderBytes];
        using (var f = File.OpenHandle(path)) BinaryFile.ReadExactly(f, path, 0, h, "header");
        int Field(int i) => BinaryPrimitives.ReadInt32LittleEndian(h.AsSpan(i * 4));
        string[] names = ["dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "seq_len"];
        for (int i = 0; i < 7; i++)
        {
            long v = i == 5 ? Math.Abs((long)Field(i)) : Field(i); // long: |int.MinValue| does not fit an int
            if (v <= 0 || v > 1 << 24)
                throw new ModelFormatException(path, $"header field {names[i]} = {Field(i)} is not a plausible size", names[i], i * 4);
        }
        int vocab = Field(5);
        // run.c's encoder falls back to byte tokens at id byte + 3, so a vocabulary has at least 3 + 256 entries.
        if (Math.Abs((long)vocab) < MinVocab)
            throw new ModelFormatException(path, $"vocab_size {vocab} is below the {MinVocab} tokens a llama2.c tokenizer needs (unk, bos, eos and 256 byte tokens)", "vocab_size", 5 * 4);
        Config = new ModelConfig
        {
            Architecture = Architecture.Llama,
            Dim = Field(0),
            HiddenDim = Field(1),
            Layers = Field(2),
            Heads = Field(3),
            KvHeads = Field(4),
            VocabSize = Math.Abs(vocab),
            ContextLength = Field(6),
            TiedEmbeddings = vocab > 0,
        };
        Config.Validate(path);

        var c = Config;
        long dim = c.Dim, hid = c.HiddenDim, kv = c.KvDim;
        // Check the size the header implies before building the tensor index: its entries (up to 4096 layers x 9)
        // are sized by the header's counts. In doubles: the product of plausible fields can overflow a long.
        double floats = (double)c.VocabSize * dim * (c.TiedEmbeddings ? 1 : 2) + dim
            + (double)c.Layers * (2.0 * dim + 2.0 * dim * dim + 2.0 * kv * dim + 3.0 * hid * dim)
            + 2.0 * c.ContextLength * (c.HeadSize / 2);
        if (HeaderBytes + 4 * floats > size)
            throw new ModelFormatException(path,
                $"model is corrupted or incomplete: the header (dim {c.Dim}, hidden {c.HiddenDim}, layers {c.Layers}, vocab {vocab}, seq_len {c.ContextLength}) needs {HeaderBytes + 4 * floats:F0} bytes, the file has {size}",
                "header", size);
        var tensors = new Dictionary<string, TensorInfo>();
        long offset = HeaderBytes;
        // Per-layer tensors are stored stacked (layer, ...); register one TensorInfo per layer slice.
        void Add(string name, long[] shape)
        {
            var t = new TensorInfo(name, DType.F32, shape, path, offset);
            tensors[name] = t;
            offset += t.ByteLength;
        }
        void Stacked(string part, long[] shape)
        {
            for (int l = 0; l < c.Layers; l++) Add(TensorNames.Block(l, part), shape);
        }
        Add(TensorNames.TokenEmbedding, [c.VocabSize, dim]);
        Stacked(TensorNames.AttnNorm, [dim]);
        Stacked(TensorNames.AttnQ, [dim, dim]);
        Stacked(TensorNames.AttnK, [kv, dim]);
        Stacked(TensorNames.AttnV, [kv, dim]);
        Stacked(TensorNames.AttnOutput, [dim, dim]);
        Stacked(TensorNames.FfnNorm, [dim]);
        Stacked(TensorNames.FfnGate, [hid, dim]);
        Stacked(TensorNames.FfnDown, [dim, hid]);
        Stacked(TensorNames.FfnUp, [hid, dim]);
        Add(TensorNames.OutputNorm, [dim]);
        offset += 2L * c.ContextLength * (c.HeadSize / 2) * 4; // freq_cis_real, freq_cis_imag: unused
        if (!c.TiedEmbeddings) Add(TensorNames.Output, [c.VocabSize, dim]);
        if (offset > size)
            throw new ModelFormatException(path,
                $"model is corrupted or incomplete: the header (dim {c.Dim}, hidden {c.HiddenDim}, layers {c.Layers}, vocab {vocab}, seq_len {c.ContextLength}) needs {offset} bytes, the file has {size}",
                "header", size);
        Tensors = tensors;
        ValidateTensors();
        Tokenizer = Llama2cTokenizer.Load(tokenizerPath, c.VocabSize);
    }
}
