using System.Runtime.CompilerServices;

// The embedding API is FlashRuntime, FlashSession, their settings, statistics and errors; the actors, the cache and the
// test hooks are internal. Tests, the CLI and the bench reach them through these.
[assembly: InternalsVisibleTo("FlashLm.Runtime.Tests")]
[assembly: InternalsVisibleTo("FlashLm.Cli.Tests")]
[assembly: InternalsVisibleTo("FlashLm.Hosting.Tests")]
[assembly: InternalsVisibleTo("flashlm-bench")] // the bench's assembly name
[assembly: InternalsVisibleTo("FlashLm.Bench.Tests")]
[assembly: InternalsVisibleTo("flashlm")]
[assembly: InternalsVisibleTo("FlashLm.Cluster")] // a conversation entity keeps its session where a turn it left early stopped
