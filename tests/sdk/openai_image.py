"""Sends an image with the official OpenAI Python SDK, as SillyTavern-like clients do
(a text part and an image_url part with a base64 data: URL).

Usage: openai_image.py BASE_URL MODEL PNG_PATH
Prints one JSON line with the answer, for the Rust test to check.
"""
import base64
import json
import sys

import openai

base_url, model, path = sys.argv[1], sys.argv[2], sys.argv[3]
client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0)
with open(path, "rb") as f:
    data = base64.b64encode(f.read()).decode()
reply = client.chat.completions.create(
    model=model,
    messages=[{
        "role": "user",
        "content": [
            {"type": "text", "text": "What is wrong in this screenshot?\nsandbox: tokens=2 delay_ms=0"},
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{data}"}},
        ],
    }],
)
print(json.dumps({"content": reply.choices[0].message.content}))
