// The login view's script: reads the lane's frames from the view's SSE stream (with
// fetch, so that a refusal's reason can be shown), draws them, and posts the person's
// mouse, wheel and keys back with the view's token (every input message carries it).
"use strict";

const lane = new URLSearchParams(location.search).get("lane") ?? "";
const base = `/api/lanes/${encodeURIComponent(lane)}/view`;
const $ = (sel) => document.querySelector(sel);
const screen = $("#screen");
const keys = $("#keys");
let token = null;
/** The page's viewport in CSS pixels (input coordinates), from the last frame. */
let page = { width: 1, height: 1 };
let previous = null;

function say(text, kind = "info") {
  const status = $("#status");
  status.textContent = text;
  status.dataset.kind = kind;
}

async function send(action) {
  if (!token) return;
  const response = await fetch(`${base}/input`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ token, ...action }),
  });
  if (!response.ok && response.status !== 204) {
    const body = await response.json().catch(() => null);
    say(body?.error?.message ?? `input refused (${response.status})`, "error");
  }
}

const input = (event) => send({ do: "input", event });

function showFrame(frame) {
  page = { width: frame.page_width, height: frame.page_height };
  screen.dataset.page = `${page.width}x${page.height}`;
  const url = URL.createObjectURL(new Blob([Uint8Array.from(atob(frame.jpeg), (c) => c.charCodeAt(0))], { type: "image/jpeg" }));
  screen.onload = () => {
    if (previous) URL.revokeObjectURL(previous);
    previous = url;
    screen.dataset.frames = String(Number(screen.dataset.frames ?? 0) + 1);
  };
  screen.src = url;
  screen.hidden = false;
  if (document.activeElement !== $("#address")) $("#address").value = frame.url;
}

function ended(text, kind) {
  token = null;
  say(text, kind);
  document.body.dataset.ended = kind;
  for (const b of document.querySelectorAll("button")) b.disabled = true;
}

async function open() {
  $("#lane").textContent = lane;
  document.title = `prq · log in · ${lane}`;
  const stage = $("#stage").getBoundingClientRect();
  const size = `w=${Math.round(stage.width * devicePixelRatio)}&h=${Math.round(stage.height * devicePixelRatio)}`;
  let response;
  try {
    response = await fetch(`${base}?${size}`, { headers: { Accept: "text/event-stream" } });
  } catch (e) {
    return ended(`the daemon cannot be reached: ${e}`, "error");
  }
  if (!response.ok) {
    const body = await response.json().catch(() => null);
    const message = body?.error?.message ?? `refused (${response.status})`;
    const busy = body?.error?.code === "lane_busy" && message.match(/request (\d+)/);
    if (busy) return offerStop(Number(busy[1]), message);
    return ended(response.status === 401 ? `${message} — log in on the panel first` : message, "error");
  }
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    let chunk;
    try {
      chunk = await reader.read();
    } catch (e) {
      return ended(`the connection to the daemon broke: ${e}`, "error");
    }
    if (chunk.done) break;
    buffer += chunk.value;
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      let name = "message";
      let data = "";
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) name = line.slice(6).trim();
        else if (line.startsWith("data:")) data += line.slice(5).replace(/^ /, "");
      }
      if (!data) continue;
      const value = JSON.parse(data);
      if (name === "open") {
        token = value.token;
        say("Log in on the page below, then press “Done”. The lane takes no requests meanwhile.");
      } else if (name === "frame") showFrame(value);
      else if (name === "refused") say(value.message, "error");
      else if (name === "closed") return ended(value.message, "closed");
      else if (name === "ended") return ended(value.message, "error");
    }
  }
  if (token) ended("the view's stream ended", "error");
}

/** The lane generates a request: it finishes first, or the person stops it. */
function offerStop(id, message) {
  say(message, "error");
  const stop = document.createElement("button");
  stop.type = "button";
  stop.id = "stop-and-open";
  stop.textContent = `Stop request #${id} and open the view`;
  stop.addEventListener("click", async () => {
    stop.disabled = true;
    await fetch(`/api/queue/${id}/stop`, { method: "POST" });
    stop.remove();
    // The lane is free once the stop has ended the request in its page.
    setTimeout(open, 1000);
  });
  $("#status").after(stop);
}

/** A pointer event's place on the page, in the page's CSS pixels. */
function where(e) {
  const box = screen.getBoundingClientRect();
  return {
    x: ((e.clientX - box.left) / box.width) * page.width,
    y: ((e.clientY - box.top) / box.height) * page.height,
  };
}

const BUTTONS = ["left", "middle", "right"];
const modifiers = (e) => (e.altKey ? 1 : 0) | (e.ctrlKey ? 2 : 0) | (e.metaKey ? 4 : 0) | (e.shiftKey ? 8 : 0);

screen.addEventListener("mousedown", (e) => {
  e.preventDefault();
  keys.focus();
  input({ mouse: { kind: "down", ...where(e), button: BUTTONS[e.button] ?? "left", clicks: e.detail || 1, modifiers: modifiers(e) } });
});
screen.addEventListener("mouseup", (e) => {
  input({ mouse: { kind: "up", ...where(e), button: BUTTONS[e.button] ?? "left", clicks: e.detail || 1, modifiers: modifiers(e) } });
});
// Moves go at most once a frame: enough for hover states, not a flood of requests.
let move = null;
screen.addEventListener("mousemove", (e) => {
  if (move) return;
  move = requestAnimationFrame(() => {
    move = null;
    input({ mouse: { kind: "move", ...where(e), modifiers: modifiers(e) } });
  });
});
screen.addEventListener("wheel", (e) => {
  e.preventDefault();
  input({ wheel: { ...where(e), dx: e.deltaX, dy: e.deltaY } });
}, { passive: false });
screen.addEventListener("contextmenu", (e) => e.preventDefault());

// Keys that are not text go as keys; text (typed or composed by an input method) as text.
keys.addEventListener("keydown", (e) => {
  if (e.isComposing) return;
  const text = e.key.length === 1 && !e.ctrlKey && !e.metaKey;
  if (text) return;
  e.preventDefault();
  input({ key: { kind: "down", key: e.key, code: e.code, key_code: e.keyCode, modifiers: modifiers(e) } });
});
keys.addEventListener("keyup", (e) => {
  if (e.isComposing || (e.key.length === 1 && !e.ctrlKey && !e.metaKey)) return;
  input({ key: { kind: "up", key: e.key, code: e.code, key_code: e.keyCode, modifiers: modifiers(e) } });
});
keys.addEventListener("input", (e) => {
  if (e.isComposing) return;
  if (keys.value) input({ text: { text: keys.value } });
  keys.value = "";
});
keys.addEventListener("compositionend", (e) => {
  if (e.data) input({ text: { text: e.data } });
  keys.value = "";
});

$("#back").addEventListener("click", () => send({ do: "back" }));
$("#reload").addEventListener("click", () => send({ do: "reload" }));
$("#go").addEventListener("submit", (e) => {
  e.preventDefault();
  send({ do: "go", url: $("#address").value });
});
$("#close").addEventListener("click", () => send({ do: "close" }));

open();
