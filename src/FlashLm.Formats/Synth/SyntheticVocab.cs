using static FlashLm.Formats.SpmVocab;

namespace FlashLm.Formats.Synth;

/// <summary>
/// Builds the small tokenizer a synthetic model carries: SentencePiece layout (unk, BOS, EOS, 256 byte
/// tokens), then the characters and byte-pair merges learned from a short built-in English text, then
/// numbered filler pieces up to the model's vocabulary size.
/// </summary>
public static class SyntheticVocab
{
    private const string Corpus =
        "The small robot woke up early and looked out of the window. The sun was bright and the garden was full of " +
        "flowers. It wanted to help the old gardener, so it picked up a basket and walked down the path. A little " +
        "girl named Mia saw the robot and laughed. \"What are you doing?\" she asked. \"I am helping,\" said the robot. " +
        "Together they watered the roses, counted the bees and found a lost key under a stone. When the evening came, " +
        "the gardener thanked them both. Mia went home happy, and the robot sat by the door, thinking about the day. " +
        "One day, there was a big storm. The wind was strong and the rain was cold, but the friends were safe inside. " +
        "They read a book, drank warm milk and told stories until they fell asleep. In the morning everything was " +
        "quiet again, and they went outside to play in the puddles. 0123456789 .,;:!?'()-";

    /// <summary>A Llama-layout <see cref="SpmVocab"/> of exactly <paramref name="vocabSize"/> pieces (at least 323).</summary>
    public static SpmVocab Create(int vocabSize)
    {
        const int specials = LlamaFirstByte + 256;
        if (vocabSize < specials + 64) throw new ArgumentException($"a synthetic SentencePiece vocabulary needs at least {specials + 64} tokens, got {vocabSize}");
        var normal = new List<(string, float)>();
        var known = new HashSet<string>(LlamaStyle([]).Tokens);
        void Add(string piece, float score)
        {
            if (specials + normal.Count >= vocabSize || !known.Add(piece)) return;
            normal.Add((piece, score));
        }

        // Words as symbol sequences, with the SentencePiece word-start marker.
        var words = Corpus.Split(' ', StringSplitOptions.RemoveEmptyEntries)
            .Select(w => (Space + w).Select(ch => ch.ToString()).ToList()).ToList();
        var merges = new List<string>();
        int chars = Corpus.Replace(' ', Space).Distinct().Count();
        while (specials + merges.Count + chars < vocabSize)
        {
            var counts = new Dictionary<string, int>();
            foreach (var w in words)
                for (int i = 0; i + 1 < w.Count; i++)
                {
                    var pair = w[i] + w[i + 1];
                    counts[pair] = counts.GetValueOrDefault(pair) + 1;
                }
            var best = counts.Where(kv => kv.Value >= 2).OrderByDescending(kv => kv.Value).ThenBy(kv => kv.Key, StringComparer.Ordinal).FirstOrDefault();
            if (best.Key is null) break;
            merges.Add(best.Key);
            foreach (var w in words)
                for (int i = 0; i + 1 < w.Count; i++)
                    if (w[i] + w[i + 1] == best.Key)
                    {
                        w[i] = best.Key;
                        w.RemoveAt(i + 1);
                    }
        }
        // Merges first (higher score = merged earlier), then single characters, then filler.
        for (int i = 0; i < merges.Count; i++) Add(merges[i], -i);
        foreach (var ch in Corpus.Replace(' ', Space).Distinct().OrderBy(c => c)) Add(ch.ToString(), -merges.Count - 1 - ch);
        for (int n = 0; specials + normal.Count < vocabSize; n++) Add($"{Space}w{n}", -1e6f - n);
        return LlamaStyle(normal);
    }
}
