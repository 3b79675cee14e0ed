using FlashLm.Runtime.Session;

namespace FlashLm.Hosting;

/// <summary>One position of a generation as text.</summary>
/// <param name="Position">0-based position in the session's context.</param>
/// <param name="Token">Token id fed (prompt) or sampled.</param>
/// <param name="Text">The text this token completes (UTF-8 pieces are joined across tokens, so it may be empty).</param>
/// <param name="FromPrompt">True while the prompt is being fed.</param>
/// <param name="Stats">Timings and flash traffic of this position.</param>
public sealed record FlashLmToken(int Position, int Token, string Text, bool FromPrompt, TokenStats Stats);
