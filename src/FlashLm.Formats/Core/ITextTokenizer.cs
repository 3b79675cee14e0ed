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

    /// <summary>Encodes <paramref name="text"/>, with BOS first when <paramref name="addBos"/>.</summary>
    int[] Encode(string text, bool addBos);

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
