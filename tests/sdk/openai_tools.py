"""Tool calling and structured output through prq with the official OpenAI Python SDK.

Usage: openai_tools.py BASE_URL MODEL
Prints one JSON line with what the SDK saw, for the Rust test (tests/tests/sdk.rs) to
check. The sandbox lane plays the model: `sandbox: call=...` in the user text is the
call it makes (tools/turn.rs, protocol/src/script.rs).
"""
import json
import sys

import openai

base_url, model = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0)
tools = [
    {"type": "function", "function": {
        "name": "get_weather", "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                       "required": ["city"]}}},
    {"type": "function", "function": {
        "name": "get_time",
        "parameters": {"type": "object", "properties": {"zone": {"type": "string"}},
                       "required": ["zone"]}}},
]
seen = {}

# Two turns: the call, the tool's result sent back, the final answer.
messages = [{"role": "user",
             "content": 'Weather?\nsandbox: delay_ms=0 call=get_weather:{"city":"Paris"}'}]
first = client.chat.completions.create(model=model, messages=messages, tools=tools)
call = first.choices[0].message.tool_calls[0]
seen["first"] = {"finish": first.choices[0].finish_reason, "name": call.function.name,
                 "arguments": json.loads(call.function.arguments), "id": call.id}
messages.append(first.choices[0].message.model_dump(exclude_none=True))
messages.append({"role": "tool", "tool_call_id": call.id, "content": "22 C"})
final = client.chat.completions.create(model=model, messages=messages, tools=tools)
seen["final"] = {"finish": final.choices[0].finish_reason,
                 "content": final.choices[0].message.content}

# Streaming, two calls in one reply: the deltas put together by index.
calls = {}
finish = None
stream = client.chat.completions.create(
    model=model, stream=True, tools=tools,
    messages=[{"role": "user", "content":
               'sandbox: delay_ms=0 call=get_weather:{"city":"Oslo"} call=get_time:{"zone":"CET"}'}])
for chunk in stream:
    if not chunk.choices:
        continue
    for d in chunk.choices[0].delta.tool_calls or []:
        c = calls.setdefault(d.index, {"id": None, "name": None, "arguments": ""})
        c["id"] = d.id or c["id"]
        if d.function and d.function.name:
            c["name"] = d.function.name
        if d.function and d.function.arguments:
            c["arguments"] += d.function.arguments
    finish = chunk.choices[0].finish_reason or finish
seen["streamed"] = {"finish": finish, "calls": [calls[i] for i in sorted(calls)]}

# A call that broke its schema, asked for again by prq.
retried = client.chat.completions.create(
    model=model, tools=tools,
    messages=[{"role": "user", "content": 'sandbox: delay_ms=0 call_bad=get_weather:{"city":"Rome"}'}])
seen["retried"] = retried.choices[0].message.tool_calls[0].function.arguments

# tool_choice: none (plain text), named (that function), required without a call (an error).
plain = "Just talk\nsandbox: tokens=1 delay_ms=0"
none = client.chat.completions.create(model=model, tools=tools, tool_choice="none",
                                      messages=[{"role": "user", "content": plain}])
seen["none"] = {"content": none.choices[0].message.content,
                "tool_calls": none.choices[0].message.tool_calls}
named = client.chat.completions.create(
    model=model, tools=tools, tool_choice={"type": "function", "function": {"name": "get_time"}},
    messages=[{"role": "user", "content": 'sandbox: delay_ms=0 call=get_time:{"zone":"UTC"}'}])
seen["named"] = named.choices[0].message.tool_calls[0].function.name
try:
    client.chat.completions.create(model=model, tools=tools, tool_choice="required",
                                   messages=[{"role": "user", "content": plain}])
    seen["required"] = None
except openai.APIStatusError as e:
    seen["required"] = {"status": e.status_code, "code": e.body.get("code") if isinstance(e.body, dict) else None}

# Structured output with a schema.
answer = client.chat.completions.create(
    model=model,
    messages=[{"role": "user", "content": 'sandbox: delay_ms=0 json={"x":3,"label":"three"}'}],
    response_format={"type": "json_schema", "json_schema": {"name": "point", "strict": True, "schema": {
        "type": "object", "properties": {"x": {"type": "integer"}, "label": {"type": "string"}},
        "required": ["x", "label"], "additionalProperties": False}}})
seen["json"] = json.loads(answer.choices[0].message.content)

print(json.dumps(seen))
