using System.CommandLine;
using System.Text;
using FlashLm.Formats;

namespace FlashLm.Cli.Commands;

/// <summary>
/// `flashlm tokenize`: the token ids of a text, as the model's tokenizer gives them (llama.cpp's llama-tokenize).
/// Works on any model FlashLm loads and on vocabulary-only GGUF files (no tensors, any architecture), such as
/// llama.cpp's tokenizer test vocabularies. No BOS unless --bos.
/// </summary>
public static class TokenizeCommand
{
    public static Command Build()
    {
        var model = new Option<string?>("--model", "-m") { Description = "model file or folder, or a vocabulary-only GGUF" };
        var tokenizer = new Option<string?>("--tokenizer", "-z") { Description = "tokenizer .bin for llama2.c models" };
        var text = new Option<string?>("--text", "-t") { Description = "the text to tokenize" };
        var file = new Option<string?>("--file", "-f") { Description = "a UTF-8 file whose whole content is tokenized" };
        var ids = new Option<bool>("--ids") { Description = "print only the ids, space-separated, on one line" };
        var bos = new Option<bool>("--bos") { Description = "put the BOS token first" };
        var plain = new Option<bool>("--no-special") { Description = "treat control tokens written in the text (<s>, <|im_start|>) as plain text (untrusted input)" };
        var allowPre = new Option<bool>("--allow-unknown-pre") { Description = "tokenize with the 'default' pre-tokenizer (and a warning) when tokenizer.ggml.pre is unknown, instead of refusing" };
        var cmd = new Command("tokenize", "Print the token ids of a text (one 'id<TAB>piece' per line, or --ids).")
        {
            model, tokenizer, text, file, ids, bos, plain, allowPre,
        };
        cmd.SetAction(r => CliErrors.Guard(() =>
        {
            string? t = r.GetValue(text), f = r.GetValue(file);
            if ((t is null) == (f is null)) throw new ArgumentException("give exactly one of --text and --file");
            string input = t ?? Utf8Text.Decode(File.ReadAllBytes(f!));
            var m = r.GetValue(model);
            ModelSource? source = null;
            try
            {
                ITextTokenizer tok;
                if (m is not null && File.Exists(m) && m.EndsWith(".gguf", StringComparison.OrdinalIgnoreCase))
                    tok = GgufTokenizer.Read(m, r.GetValue(allowPre), w => Console.Error.WriteLine($"flashlm: warning: {w}"));
                else
                {
                    source = DefaultModel.Open(m, r.GetValue(tokenizer));
                    tok = source.Tokenizer;
                }
                using var stdout = Console.OpenStandardOutput();
                Write(tok, input, r.GetValue(ids), r.GetValue(bos), parseSpecial: !r.GetValue(plain), stdout);
                return 0;
            }
            finally
            {
                source?.Dispose();
            }
        }));
        return cmd;
    }

    /// <summary>Tokenizes <paramref name="input"/> and writes the ids (UTF-8) as the command prints them.</summary>
    internal static void Write(ITextTokenizer tok, string input, bool idsOnly, bool bos, bool parseSpecial, Stream output)
    {
        var result = tok.Encode(input, addBos: false, parseSpecial);
        if (bos) result = [tok.BosId, .. result];
        var bytes = idsOnly
            ? Encoding.UTF8.GetBytes(string.Join(' ', result) + "\n")
            : Encoding.UTF8.GetBytes(string.Concat(result.Select(id => $"{id}\t{Printable(tok, id)}\n")));
        output.Write(bytes);
    }

    /// <summary>
    /// The token's printed text on one line: control characters and bytes that are not whole UTF-8 characters escaped
    /// (\n, \t, \xAB); tokens that print nothing (control tokens) show their stored text.
    /// </summary>
    internal static string Printable(ITextTokenizer tok, int id)
    {
        var piece = tok.Piece(-1, id);
        if (piece.Length == 0) return tok.TokenText(id);
        var sb = new StringBuilder();
        ReadOnlySpan<byte> rest = piece;
        while (!rest.IsEmpty)
        {
            var status = System.Text.Rune.DecodeFromUtf8(rest, out var rune, out int used);
            if (status != System.Buffers.OperationStatus.Done) sb.Append($"\\x{rest[0]:X2}");
            else if (rune.Value == '\n') sb.Append("\\n");
            else if (rune.Value == '\t') sb.Append("\\t");
            else if (rune.Value == '\r') sb.Append("\\r");
            else if (rune.Value == '\\') sb.Append("\\\\");
            else if (rune.Value < 0x20 || rune.Value == 0x7F) sb.Append($"\\x{rune.Value:X2}");
            else sb.Append(rune.ToString());
            rest = rest[(status == System.Buffers.OperationStatus.Done ? used : 1)..];
        }
        return sb.ToString();
    }
}
