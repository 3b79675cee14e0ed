using FlashLm.Formats;

namespace FlashLm.Kernels;

/// <summary>AVX2 row kernels (null where a type has none yet: the caller falls back to the scalar one).</summary>
internal static unsafe class V256Dots
{
    public static delegate*<byte*, byte*, int, float> Kernel(DType weight) => weight switch
    {
        DType.F32 => &QuantKernels.DotF32Wide,
        DType.F16 => &QuantKernels.DotF16Wide,
        _ => null,
    };
}
