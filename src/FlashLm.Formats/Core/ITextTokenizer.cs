namespace FlashLm.Formats;

/// <summary>
/// A tokenizer as the generation loop needs it: text to ids, and each id to the bytes it prints.
/// </summary>
public interface ITextTokenizer
{
    int VocabSize { get; }

    /// <summary>Id of the beginning-of-sequence token.</summary>
    int BosId { get; }

    /// <summary>Id of the end-of-sequence token.</summary>
    int EosId { get; }

    /// <summary>
    /// Encodes <paramref name="text"/>; <paramref name="addBos"/> marks the start of a sequence, where BOS goes first
    /// (GGUF vocabularies follow tokenizer.ggml.add_bos_token and add_eos_token). Control tokens written in the text
    /// (&lt;s&gt;, &lt;|im_start|&gt;) become single tokens where the vocabulary marks them so.
    /// </summary>
    int[] Encode(string text, bool addBos);

    /// <summary>
    /// As <see cref="Encode(string, bool)"/>; with <paramref name="parseSpecial"/> false, control tokens written in the
    /// text are tokenized as plain text (for untrusted input).
    /// </summary>
    int[] Encode(string text, bool addBos, bool parseSpecial) => Encode(text, addBos);

    /// <summary>
    /// The bytes printed for <paramref name="token"/> after <paramref name="previous"/>
    /// (llama2.c's decode: a leading space is dropped after BOS, byte tokens become their byte).
    /// </summary>
    byte[] Piece(int previous, int token);

    /// <summary>The stored text of a vocabulary entry (for inspection and error messages).</summary>
    string TokenText(int token);

    /// <summary>The tokenizer family: "llama2c", "spm" (SentencePiece) or "gpt2" (byte-level BPE).</summary>
    string Kind { get; }

    /// <summary>
    /// Files (name to bytes) from which <see cref="TokenizerStore.Open"/> recreates this tokenizer
    /// exactly; written into flash-layout folders.
    /// </summary>
    IReadOnlyDictionary<string, byte[]> Export();
}
