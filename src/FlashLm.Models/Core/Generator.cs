using System.Diagnostics;
using FlashLm.Formats;
using FlashLm.Models.Sampling;

namespace FlashLm.Models;

/// <summary>Timings and counts of one generation.</summary>
public sealed record GenerationStats(int PromptTokens, int GeneratedTokens, TimeSpan Prefill, TimeSpan Decode, TimeSpan Total)
{
    /// <summary>Decode speed in tokens per second (tokens after the prompt).</summary>
    public double DecodeTokensPerSecond => GeneratedTokens > 0 && Decode > TimeSpan.Zero ? GeneratedTokens / Decode.TotalSeconds : 0;
}

/// <summary>
/// llama2.c's generation loop: encode the prompt with BOS, feed it position by position, then sample;
/// <c>steps</c> counts positions, prompt included; stop at BOS or after <c>steps</c> positions.
/// Each printed piece passes run.c's safe_printf filter (lone unprintable bytes are skipped).
/// </summary>
public static class Generator
{
    /// <summary>The positions to run: run.c uses the model's context when steps is 0 or too large.</summary>
    public static int ClampSteps(int steps, int contextLength) => steps <= 0 || steps > contextLength ? contextLength : steps;

    public static GenerationStats Run(
        ITransformer model, ITextTokenizer tokenizer, string prompt, int steps, Sampler sampler,
        Action<ReadOnlySpan<byte>> write, CancellationToken cancellation = default)
    {
        var c = model.Config;
        steps = ClampSteps(steps, c.ContextLength);
        var tokens = tokenizer.Encode(prompt, addBos: true);
        if (tokens.Length < 1) throw new ArgumentException("the prompt encodes to no tokens");
        if (tokens.Length > steps)
            throw new ArgumentException($"the prompt is {tokens.Length} tokens long, more than the {steps} positions requested (context length {c.ContextLength})");
        var state = model.CreateState(steps);
        var total = Stopwatch.StartNew();
        TimeSpan prefill = TimeSpan.Zero;
        int token = tokens[0], pos = 0, generated = 0;
        while (pos < steps)
        {
            cancellation.ThrowIfCancellationRequested();
            var logits = model.Forward(state, token, pos);
            int next;
            if (pos < tokens.Length - 1) next = tokens[pos + 1];
            else
            {
                if (generated == 0) prefill = total.Elapsed;
                next = sampler.Sample(logits);
                generated++;
            }
            pos++;
            if (next == tokenizer.BosId) break;
            var piece = tokenizer.Piece(token, next);
            if (IsPrintable(piece)) write(piece);
            token = next;
        }
        var elapsed = total.Elapsed;
        return new GenerationStats(tokens.Length, generated, prefill, elapsed - prefill, elapsed);
    }

    /// <summary>
    /// run.c's safe_printf: skip empty pieces and single ASCII bytes that are neither printable nor whitespace. Unlike
    /// run.c (whose isprint, in the C locale, refuses every byte from 0x80), a single byte from 0x80 is kept: it is part of
    /// a character a byte-fallback vocabulary spells byte by byte (CJK, emoji), which run.c's rule would drop.
    /// </summary>
    public static bool IsPrintable(ReadOnlySpan<byte> piece)
    {
        if (piece.Length == 0) return false;
        if (piece.Length == 1)
        {
            byte b = piece[0];
            bool print = b >= 0x20 && b <= 0x7E;
            bool space = b == ' ' || (b >= '\t' && b <= '\r');
            return print || space || b >= 0x80;
        }
        return true;
    }
}
