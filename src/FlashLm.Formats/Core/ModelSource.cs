using System.Buffers.Binary;
using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace FlashLm.Formats;

/// <summary>
/// An opened model in any supported format: its hyper-parameters, tokenizer and tensor index.
/// Tensors are read on demand (so conversion can stream); every tensor was bounds-checked
/// against its file when the source was opened.
/// </summary>
public abstract class ModelSource : IDisposable
{
    private readonly Dictionary<string, SafeFileHandle> _handles = new();
    private readonly object _gate = new();

    /// <summary>The file or folder this model was opened from.</summary>
    public string Path { get; }

    /// <summary>A short name of the format ("llama2c", "gguf", "huggingface", "flash").</summary>
    public abstract string Format { get; }

    public ModelConfig Config { get; protected set; } = null!;
    public ITextTokenizer Tokenizer { get; protected set; } = null!;
    public IReadOnlyDictionary<string, TensorInfo> Tensors { get; protected set; } = null!;

    /// <summary>The model's chat template as its file gives it (GGUF tokenizer.chat_template, a Hugging Face folder's
    /// tokenizer_config.json chat_template, a layout's chat_template.jinja; Jinja text), or null when it has none.</summary>
    public string? ChatTemplate { get; protected set; }

    /// <summary>The file a flash layout keeps the chat template in.</summary>
    public const string ChatTemplateFile = "chat_template.jinja";

    /// <summary>The largest chat template read (real ones are a few KiB; a larger one is taken for corruption).</summary>
    public const int MaxChatTemplateBytes = 1 << 20;

    protected ModelSource(string path) => Path = path;

    /// <summary>The chat template kept as <see cref="ChatTemplateFile"/> in <paramref name="folder"/> (a layout, or a Hugging Face
    /// folder that keeps it there), or null when there is none; a file over <see cref="MaxChatTemplateBytes"/> is refused.</summary>
    protected static string? ReadChatTemplateFile(string folder)
    {
        var path = System.IO.Path.Combine(folder, ChatTemplateFile);
        if (!File.Exists(path)) return null;
        long size = new FileInfo(path).Length;
        if (size > MaxChatTemplateBytes) throw new ModelFormatException(path, $"chat template of {size} bytes (at most {MaxChatTemplateBytes})");
        return File.ReadAllText(path, System.Text.Encoding.UTF8);
    }

    /// <summary>
    /// Checks that every tensor the architecture needs is present with the expected shape and lies
    /// inside its file. Call at the end of a reader's constructor.
    /// </summary>
    protected void ValidateTensors()
    {
        Config.Validate(Path);
        foreach (var (name, shape) in TensorNames.Expected(Config))
        {
            if (!Tensors.TryGetValue(name, out var t))
                throw new ModelFormatException(Path, $"tensor is missing (expected shape {TensorNames.ShapeText(shape)})", name);
            if (!t.Shape.AsSpan().SequenceEqual(shape))
                throw new ModelFormatException(t.FilePath, $"wrong shape {TensorNames.ShapeText(t.Shape)}, expected {TensorNames.ShapeText(shape)}", name, t.Offset);
        }
        var sizes = new Dictionary<string, long>();
        foreach (var t in Tensors.Values)
        {
            if (!StoredWhole(t)) continue; // assembled from parts the reader checks itself
            if (!sizes.TryGetValue(t.FilePath, out var size))
                sizes[t.FilePath] = size = new FileInfo(t.FilePath).Length;
            if (t.Offset < 0 || t.Offset + t.ByteLength > size)
                throw new ModelFormatException(t.FilePath,
                    $"model is corrupted or incomplete: tensor data [{t.Offset}, {t.Offset + t.ByteLength}) lies beyond the end of the file ({size} bytes)",
                    t.Name, t.Offset);
        }
    }

    /// <summary>False for a tensor the reader assembles from several stored parts (a Hugging Face MoE's experts, one tensor per
    /// expert): its <see cref="TensorInfo"/> names the first part, and the parts' bounds are the reader's to check.</summary>
    protected virtual bool StoredWhole(TensorInfo t) => true;

    /// <summary>
    /// Reads a tensor for compute: F32, F16 and the quantized types as stored (quantized ones as their raw
    /// blocks), BF16 widened to F32.
    /// </summary>
    public virtual TensorData Read(string name) => Read(Info(name));

    /// <summary>
    /// Reads slab <paramref name="index"/> of a tensor's outermost dimension as a tensor of the remaining shape: one expert of
    /// an experts tensor ([experts, out, in] -> [out, in]), without reading the others.
    /// </summary>
    public virtual TensorData ReadSlab(string name, int index)
    {
        var t = Info(name);
        if (t.Shape.Length < 2 || index < 0 || index >= t.Shape[0])
            throw new ModelFormatException(t.FilePath, $"slab {index} of a tensor of shape {TensorNames.ShapeText(t.Shape)}", name, t.Offset);
        long slab = t.ByteLength / t.Shape[0];
        return Read(t with { Name = $"{name}[{index}]", Shape = t.Shape[1..], Offset = t.Offset + index * slab });
    }

    /// <summary>Reads the tensor <paramref name="t"/> describes (see <see cref="Read(string)"/>).</summary>
    protected TensorData Read(TensorInfo t)
    {
        string name = t.Name;
        switch (t.DType)
        {
            case DType.F32:
            {
                var data = new float[t.Elements];
                ReadInto(t, MemoryMarshal.AsBytes(data.AsSpan()));
                return new TensorData(t.Shape, data);
            }
            case DType.F16:
            {
                var data = new Half[t.Elements];
                ReadInto(t, MemoryMarshal.AsBytes(data.AsSpan()));
                return new TensorData(t.Shape, data);
            }
            case DType.BF16:
            {
                var raw = new byte[t.ByteLength];
                ReadInto(t, raw);
                var data = new float[t.Elements];
                Dequant.Bf16ToF32(raw, data);
                return new TensorData(t.Shape, data);
            }
            case var q when DTypeInfo.IsQuantized(q):
            {
                if (t.ByteLength > Array.MaxLength)
                    throw new ModelFormatException(t.FilePath, $"{DTypeInfo.Name(q)} tensor of {t.ByteLength} bytes is larger than one array can hold", name, t.Offset);
                var raw = new byte[t.ByteLength];
                ReadInto(t, raw);
                return new TensorData(t.Shape, q, raw);
            }
            default:
                throw new ModelFormatException(t.FilePath, $"unsupported dtype {t.DType}", name, t.Offset);
        }
    }

    /// <summary>Reads a tensor widened to F32 whatever its stored type (quantized types dequantized).</summary>
    public float[] ReadF32(string name) => Read(name).ToF32();

    public TensorInfo Info(string name) =>
        Tensors.TryGetValue(name, out var t) ? t : throw new ModelFormatException(Path, "tensor is missing", name);

    /// <summary>Reads the raw stored bytes of <paramref name="t"/> into <paramref name="destination"/>.</summary>
    protected void ReadInto(TensorInfo t, Span<byte> destination)
    {
        if (destination.Length != t.ByteLength)
            throw new ArgumentException($"buffer of {destination.Length} bytes for tensor '{t.Name}' of {t.ByteLength} bytes");
        ReadExactly(t.FilePath, t.Offset, destination, t.Name);
    }

    /// <summary>Positioned read that fails with the file, key and offset when the file is short.</summary>
    protected void ReadExactly(string file, long offset, Span<byte> destination, string what)
    {
        SafeFileHandle handle;
        lock (_gate)
        {
            if (!_handles.TryGetValue(file, out handle!))
                _handles[file] = handle = File.OpenHandle(file, FileMode.Open, FileAccess.Read, FileShare.Read);
        }
        BinaryFile.ReadExactly(handle, file, offset, destination, what);
    }

    public virtual void Dispose()
    {
        lock (_gate)
        {
            foreach (var h in _handles.Values) h.Dispose();
            _handles.Clear();
        }
        GC.SuppressFinalize(this);
    }
}

/// <summary>Checked positioned reads.</summary>
public static class BinaryFile
{
    public static void ReadExactly(SafeFileHandle handle, string file, long offset, Span<byte> destination, string what)
    {
        long done = 0;
        while (done < destination.Length)
        {
            int n;
            try
            {
                n = RandomAccess.Read(handle, destination[(int)done..], offset + done);
            }
            catch (IOException e)
            {
                throw new ModelFormatException(file, $"read error: {e.Message}", what, offset + done, e);
            }
            if (n == 0)
                throw new ModelFormatException(file,
                    $"model is corrupted or incomplete: file ends at {offset + done} while reading {destination.Length} bytes",
                    what, offset + done);
            done += n;
        }
    }

    public static int ReadInt32(ReadOnlySpan<byte> b, int at) => BinaryPrimitives.ReadInt32LittleEndian(b[at..]);
}
