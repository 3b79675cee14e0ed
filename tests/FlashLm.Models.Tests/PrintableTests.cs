using System.Text;
using FlashLm.Formats;
using FlashLm.Models;
using Xunit;

namespace FlashLm.Tests;

/// <summary>What generate prints of a piece: run.c's rule for ASCII, but the bytes of a character spelled byte by byte kept.</summary>
public sealed class PrintableTests
{
    [Fact]
    public void Control_bytes_are_left_out_and_bytes_of_non_ascii_characters_are_kept()
    {
        Assert.False(Generator.IsPrintable([]));
        Assert.False(Generator.IsPrintable([0x07]));
        Assert.False(Generator.IsPrintable([0x1B]));
        Assert.False(Generator.IsPrintable([0x7F]));
        Assert.True(Generator.IsPrintable("a"u8));
        Assert.True(Generator.IsPrintable("\n"u8));
        // 日 spelled by a byte-fallback vocabulary as <0xE6><0x97><0xA5>: every byte is printed, and joined they are the character.
        var bytes = Encoding.UTF8.GetBytes("日");
        Assert.All(bytes, b => Assert.True(Generator.IsPrintable([b])));
        var joiner = new Utf8Joiner();
        Assert.Equal("日", string.Concat(bytes.Select(b => joiner.Push([b]))));
    }
}
