// Tool calling and structured output through prq with the official OpenAI Node SDK.
//
// Usage: node openai_tools.cjs OPENAI_PACKAGE_DIR BASE_URL MODEL
// OPENAI_PACKAGE_DIR holds node_modules/openai (scripts/install-deps.sh --test puts it
// in a cache directory outside the repository). Prints one JSON line with what the SDK
// saw, for the Rust test (tests/tests/sdk.rs) to check; the same scenes as
// openai_tools.py.
const path = require("node:path");

const [packageDir, baseURL, model] = process.argv.slice(2);
const { default: OpenAI, APIError } = require(path.join(packageDir, "node_modules", "openai"));
const client = new OpenAI({ baseURL, apiKey: "unused", maxRetries: 0 });

const tools = [
  { type: "function", function: {
    name: "get_weather", description: "The weather in a city",
    parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] } } },
  { type: "function", function: {
    name: "get_time",
    parameters: { type: "object", properties: { zone: { type: "string" } }, required: ["zone"] } } },
];
const user = (content) => [{ role: "user", content }];

async function main() {
  const seen = {};

  // Two turns: the call, the tool's result sent back, the final answer.
  const messages = user('Weather?\nsandbox: delay_ms=0 call=get_weather:{"city":"Paris"}');
  const first = await client.chat.completions.create({ model, messages, tools });
  const call = first.choices[0].message.tool_calls[0];
  seen.first = { finish: first.choices[0].finish_reason, name: call.function.name,
    arguments: JSON.parse(call.function.arguments), id: call.id };
  messages.push(first.choices[0].message);
  messages.push({ role: "tool", tool_call_id: call.id, content: "22 C" });
  const final = await client.chat.completions.create({ model, messages, tools });
  seen.final = { finish: final.choices[0].finish_reason, content: final.choices[0].message.content };

  // Streaming, two calls in one reply: the deltas put together by index.
  const calls = [];
  let finish = null;
  const stream = await client.chat.completions.create({ model, tools, stream: true,
    messages: user('sandbox: delay_ms=0 call=get_weather:{"city":"Oslo"} call=get_time:{"zone":"CET"}') });
  for await (const chunk of stream) {
    const choice = chunk.choices[0];
    if (!choice) continue;
    for (const d of choice.delta.tool_calls || []) {
      const c = (calls[d.index] ||= { id: null, name: null, arguments: "" });
      if (d.id) c.id = d.id;
      if (d.function?.name) c.name = d.function.name;
      if (d.function?.arguments) c.arguments += d.function.arguments;
    }
    finish = choice.finish_reason || finish;
  }
  seen.streamed = { finish, calls };

  // A call that broke its schema, asked for again by prq.
  const retried = await client.chat.completions.create({ model, tools,
    messages: user('sandbox: delay_ms=0 call_bad=get_weather:{"city":"Rome"}') });
  seen.retried = retried.choices[0].message.tool_calls[0].function.arguments;

  // tool_choice: none (plain text), named (that function), required without a call (an error).
  const plain = "Just talk\nsandbox: tokens=1 delay_ms=0";
  const none = await client.chat.completions.create({ model, tools, tool_choice: "none", messages: user(plain) });
  seen.none = { content: none.choices[0].message.content, tool_calls: none.choices[0].message.tool_calls ?? null };
  const named = await client.chat.completions.create({ model, tools,
    tool_choice: { type: "function", function: { name: "get_time" } },
    messages: user('sandbox: delay_ms=0 call=get_time:{"zone":"UTC"}') });
  seen.named = named.choices[0].message.tool_calls[0].function.name;
  try {
    await client.chat.completions.create({ model, tools, tool_choice: "required", messages: user(plain) });
    seen.required = null;
  } catch (e) {
    if (!(e instanceof APIError)) throw e;
    seen.required = { status: e.status, code: e.code ?? null };
  }

  // Structured output with a schema.
  const answer = await client.chat.completions.create({ model,
    messages: user('sandbox: delay_ms=0 json={"x":3,"label":"three"}'),
    response_format: { type: "json_schema", json_schema: { name: "point", strict: true, schema: {
      type: "object", properties: { x: { type: "integer" }, label: { type: "string" } },
      required: ["x", "label"], additionalProperties: false } } } });
  seen.json = JSON.parse(answer.choices[0].message.content);

  console.log(JSON.stringify(seen));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
