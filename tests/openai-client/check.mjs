// Drives flashlm serve with the official OpenAI client: node check.mjs BASE_URL MODEL. Prints one JSON object of what it saw.
import OpenAI from "openai";

const [baseURL, model] = process.argv.slice(2);
const client = new OpenAI({ baseURL: baseURL + "v1", apiKey: "not-needed", maxRetries: 0, timeout: 60000 });
const out = {};
const models = await client.models.list();
out.models = models.data.map((m) => m.id);
const c = await client.completions.create({ model, prompt: "Once upon a time", max_tokens: 12, temperature: 0, seed: 1 });
out.completion = { text: c.choices[0].text, finish: c.choices[0].finish_reason, usage: c.usage };
const chat = await client.chat.completions.create({ model, messages: [{ role: "user", content: "Hello" }], max_tokens: 6, temperature: 0 });
out.chat = { content: chat.choices[0].message.content, role: chat.choices[0].message.role, usage: chat.usage };
const stream = await client.chat.completions.create({ model, messages: [{ role: "user", content: "Hello" }], max_tokens: 6, temperature: 0, stream: true });
let streamed = "";
let finish = null;
for await (const chunk of stream) {
  const choice = chunk.choices[0];
  if (!choice) continue;
  streamed += choice.delta?.content ?? "";
  if (choice.finish_reason) finish = choice.finish_reason;
}
out.stream = { content: streamed, finish };
try {
  await client.completions.create({ model: "no-such-model", prompt: "x", max_tokens: 1 });
  out.error = "none";
} catch (e) {
  out.error = { status: e.status, code: e.code ?? e.error?.code ?? null, name: e.constructor.name };
}
console.log(JSON.stringify(out));
