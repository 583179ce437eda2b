// What every replica page does; the page itself holds its site's markup (two
// <template>s: `chat` and `login`) and a `window.REPLICA` config. Test code only: these
// pages stand in for chat sites so that prq's drivers can be tested without them.
//
// The page shows `login` or `chat` as the server says (`<body data-state>`); in the
// `changed` state it shows `chat` with its prompt box swapped for a different element,
// the way a site redesign breaks a selector. Send is enabled only while the prompt box
// has text; sending POSTs `{prompt, thinking}` with `fetch`, or with XMLHttpRequest
// where the site does (`R.xhr`), first creating a conversation where the site does,
// and shows the raw answer as it streams; Stop aborts the request — unless the server
// made the stop button inert (`<body data-stop="inert">`), as a broken site's is.
"use strict";
(() => {
  const R = window.REPLICA;
  const state = document.body.dataset.state;
  const template = document.getElementById(state === "login" ? "login" : "chat");
  document.body.appendChild(template.content.cloneNode(true));
  if (state === "login") return;

  let promptBox = document.querySelector(R.prompt);
  if (state === "changed") {
    const changed = document.createElement("div");
    changed.contentEditable = "true";
    changed.className = "replica-changed-prompt";
    promptBox.replaceWith(changed);
    promptBox = changed;
  }
  const send = document.querySelector(R.send);
  const stop = R.stop ? document.querySelector(R.stop) : send;
  const log = document.querySelector(".replica-log");
  let current = null;

  // How this site marks a disabled button: `disabled`, `aria-disabled`, or `class:<name>`.
  const setEnabled = (el, on) => {
    const [how, name] = R.disable.split(":");
    if (how === "class") el.classList.toggle(name, !on);
    else if (how === "disabled") el.disabled = !on;
    else el.setAttribute("aria-disabled", String(!on));
  };
  const isEnabled = (el) => {
    const [how, name] = R.disable.split(":");
    if (how === "class") return !el.classList.contains(name);
    if (how === "disabled") return !el.disabled;
    return el.getAttribute("aria-disabled") !== "true";
  };
  // A rich editor's own script (tests/editors/*.js) keeps its text in its own model,
  // tells it through `window.REPLICA_EDITOR`, and says when it changed.
  const typed = () => window.REPLICA_EDITOR?.text() ?? promptBox.value ?? promptBox.innerText;
  const update = () => {
    if (current) return;
    setEnabled(send, typed().trim().length > 0);
  };
  promptBox.addEventListener("input", update);
  promptBox.addEventListener("replica-change", update);
  update();

  // The thinking switch: `class:<name>` or `attr:<name>` says how its state shows; the
  // state changes a moment after the click, as in a framework's next render.
  let thinkingOn = () => false;
  if (R.thinking) {
    const toggle = document.querySelector(R.thinking.toggle);
    const [how, name] = R.thinking.on.split(":");
    thinkingOn = () =>
      how === "class" ? toggle.classList.contains(name) : toggle.getAttribute(name) === "true";
    if (how === "attr") toggle.setAttribute(name, "false");
    toggle.addEventListener("click", () => {
      const next = !thinkingOn();
      setTimeout(() => {
        if (how === "class") toggle.classList.toggle(name, next);
        else toggle.setAttribute(name, String(next));
      }, 30);
    });
  }

  async function go() {
    const prompt = typed();
    const controller = new AbortController();
    current = controller;
    setEnabled(send, false);
    if (R.busy) R.busy(send, true);
    else setEnabled(stop, true);
    const decoder = new TextDecoder();
    try {
      let path = R.path;
      if (R.conversation) {
        const created = await fetch(R.conversation, { method: "POST", signal: controller.signal });
        path = `${R.conversation}/${(await created.json()).conversationId}`;
      }
      const body = JSON.stringify({ prompt, thinking: thinkingOn(), editor: !!window.REPLICA_EDITOR });
      if (R.xhr) {
        await viaXhr(path, body, controller.signal, (text) => log.append(text));
      } else {
        const response = await fetch(path, {
          method: "POST",
          headers: { "content-type": "application/json", "x-replica-transport": "fetch" },
          body,
          signal: controller.signal,
        });
        const reader = response.body.getReader();
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          log.append(decoder.decode(value, { stream: true }));
        }
      }
    } catch (error) {
      log.append(`\n[${error.name}]\n`);
    } finally {
      current = null;
      if (R.busy) R.busy(send, false);
      else setEnabled(stop, false);
      if (window.REPLICA_EDITOR) window.REPLICA_EDITOR.clear();
      else if ("value" in promptBox) promptBox.value = "";
      else promptBox.textContent = "";
      update();
    }
  }

  // The request as an XMLHttpRequest: its text as it grows, aborted with `signal`.
  function viaXhr(path, body, signal, onText) {
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      let seen = 0;
      const more = () => {
        onText(xhr.responseText.slice(seen));
        seen = xhr.responseText.length;
      };
      xhr.open("POST", path);
      xhr.setRequestHeader("content-type", "application/json");
      xhr.setRequestHeader("x-replica-transport", "xhr");
      xhr.onprogress = more;
      xhr.onload = () => { more(); resolve(); };
      xhr.onabort = () => reject(new DOMException("aborted", "AbortError"));
      xhr.onerror = () => reject(new TypeError("network error"));
      signal.addEventListener("abort", () => xhr.abort());
      xhr.send(body);
    });
  }

  const inert = document.body.dataset.stop === "inert";
  send.addEventListener("click", () => {
    if (current && send === stop) return inert || current.abort();
    if (!current && isEnabled(send)) go();
  });
  if (stop !== send) {
    setEnabled(stop, false);
    stop.addEventListener("click", () => inert || current?.abort());
  }
})();
