using FlashLm.Formats;

namespace FlashLm.Kernels;

/// <summary>AVX-512 row kernels (null where a type has none yet: the caller falls back to the V256 one).</summary>
internal static unsafe class V512Dots
{
    public static delegate*<byte*, byte*, int, float> Kernel(DType weight) => weight switch
    {
        _ => V256Dots.Kernel(weight),
    };
}
