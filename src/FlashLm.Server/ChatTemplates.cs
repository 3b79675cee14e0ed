using System.Text;

namespace FlashLm.Server;

/// <summary>One message of a chat request.</summary>
internal sealed record ChatMessage(string Role, string Content);

/// <summary>
/// Renders a conversation as the model was trained to read it. The model's own template (GGUF tokenizer.chat_template,
/// Jinja) is recognised by its markers, as llama.cpp recognises known templates, and rendered by code: ChatML
/// (&lt;|im_start|&gt;: Qwen and many others), Llama 3 (&lt;|start_header_id|&gt;), Llama 2 / Mistral ([INST]) and Gemma
/// (&lt;start_of_turn&gt;). A model without a template, or with one not recognised, gets the plain template: "Role: text"
/// lines and "Assistant:" to answer after.
/// </summary>
internal sealed class ChatTemplate
{
    public enum Kind { Plain, ChatMl, Llama3, Llama2, Mistral, Gemma }

    public Kind Format { get; }

    /// <summary>The text that ends an assistant turn in this format (a control token for most), or null.</summary>
    public string? EndOfTurn => Format switch
    {
        Kind.ChatMl => "<|im_end|>",
        Kind.Llama3 => "<|eot_id|>",
        Kind.Gemma => "<end_of_turn>",
        Kind.Llama2 or Kind.Mistral => "</s>",
        _ => null,
    };

    /// <summary>Stop strings the format implies (the plain template: the next turn's start).</summary>
    public IReadOnlyList<string> ImpliedStops => Format == Kind.Plain ? ["\nUser:"] : [];

    private ChatTemplate(Kind format) => Format = format;

    /// <summary>The format of <paramref name="jinja"/> (null: the model has none: plain).</summary>
    public static ChatTemplate Detect(string? jinja) => new(jinja switch
    {
        null => Kind.Plain,
        _ when jinja.Contains("<|im_start|>", StringComparison.Ordinal) => Kind.ChatMl,
        _ when jinja.Contains("<|start_header_id|>", StringComparison.Ordinal) => Kind.Llama3,
        _ when jinja.Contains("<start_of_turn>", StringComparison.Ordinal) => Kind.Gemma,
        _ when jinja.Contains("[INST]", StringComparison.Ordinal) && jinja.Contains("<<SYS>>", StringComparison.Ordinal) => Kind.Llama2,
        _ when jinja.Contains("[INST]", StringComparison.Ordinal) => Kind.Mistral,
        _ => Kind.Plain,
    });

    /// <summary>The prompt for <paramref name="messages"/>, ending where the assistant's answer starts (BOS is the tokenizer's to add).</summary>
    public string Render(IReadOnlyList<ChatMessage> messages)
    {
        var b = new StringBuilder();
        switch (Format)
        {
            case Kind.ChatMl:
                foreach (var m in messages) b.Append("<|im_start|>").Append(m.Role).Append('\n').Append(m.Content).Append("<|im_end|>\n");
                b.Append("<|im_start|>assistant\n");
                break;
            case Kind.Llama3:
                foreach (var m in messages) b.Append("<|start_header_id|>").Append(m.Role).Append("<|end_header_id|>\n\n").Append(m.Content.Trim()).Append("<|eot_id|>");
                b.Append("<|start_header_id|>assistant<|end_header_id|>\n\n");
                break;
            case Kind.Gemma:
            {
                string? system = null;
                foreach (var m in messages)
                {
                    if (m.Role == "system") { system = system is null ? m.Content : system + "\n\n" + m.Content; continue; }
                    string role = m.Role == "assistant" ? "model" : "user";
                    string text = system is not null && role == "user" ? system + "\n\n" + m.Content : m.Content;
                    if (role == "user") system = null;
                    b.Append("<start_of_turn>").Append(role).Append('\n').Append(text.Trim()).Append("<end_of_turn>\n");
                }
                b.Append("<start_of_turn>model\n");
                break;
            }
            case Kind.Llama2 or Kind.Mistral:
            {
                string? system = null;
                foreach (var m in messages)
                {
                    if (m.Role == "system") { system = system is null ? m.Content : system + "\n\n" + m.Content; continue; }
                    if (m.Role == "assistant")
                    {
                        b.Append(' ').Append(m.Content.Trim()).Append("</s>");
                        continue;
                    }
                    b.Append("[INST] ");
                    if (system is not null)
                    {
                        b.Append(Format == Kind.Llama2 ? $"<<SYS>>\n{system}\n<</SYS>>\n\n" : system + "\n\n");
                        system = null;
                    }
                    b.Append(m.Content.Trim()).Append(" [/INST]");
                }
                break;
            }
            default:
                foreach (var m in messages)
                    b.Append(char.ToUpperInvariant(m.Role[0])).Append(m.Role.AsSpan(1)).Append(": ").Append(m.Content).Append('\n');
                b.Append("Assistant:");
                break;
        }
        return b.ToString();
    }
}
