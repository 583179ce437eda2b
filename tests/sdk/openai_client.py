"""Drives prq with the official OpenAI Python SDK, unchanged but for the base URL.

Usage: openai_client.py BASE_URL MODEL
Prints one JSON line with what the SDK saw, for the Rust test to check.
"""
import json
import sys

import openai

base_url, model = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0)
prompt = "sdk check\nsandbox: tokens=4 delay_ms=0"

models = sorted(m.id for m in client.models.list())
whole = client.chat.completions.create(
    model=model, messages=[{"role": "user", "content": prompt}]
)
chunks = list(
    client.chat.completions.create(
        model=model,
        stream=True,
        stream_options={"include_usage": True},
        messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": prompt}],
    )
)
streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
usage = [c.usage.total_tokens for c in chunks if c.usage]
completion = client.completions.create(model=model, prompt=prompt)
try:
    client.chat.completions.create(model="nope-chat", messages=[{"role": "user", "content": "x"}])
    not_found = None
except openai.NotFoundError as e:
    not_found = e.status_code

print(json.dumps({
    "models": models,
    "whole": whole.choices[0].message.content,
    "finish": whole.choices[0].finish_reason,
    "streamed": streamed,
    "usage": usage,
    "completion": completion.choices[0].text,
    "not_found": not_found,
}))
