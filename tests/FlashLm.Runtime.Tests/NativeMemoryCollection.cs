using Xunit;

namespace FlashLm.Tests;

/// <summary>
/// Test classes that read the process-wide native memory count (FlashRuntime.Stats.NativeBytes) run one at a time
/// within this assembly; other test assemblies run in their own processes and do not disturb the count.
/// </summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class NativeMemoryCollection
{
    public const string Name = "native memory (not parallel)";
}
