// The worker's one page script for finding and using the site's elements (tab.rs
// evaluates it as `(<this file>)(op, args)`; it installs nothing in the page).
//
// A selector is `{name, alternatives}`: the name a config overrides it by, and a list
// of locators tried in order — the first that matches any element is the one used. A
// locator is what `driver/selectors.rs` parsed from the config's text:
//   {css}                 document.querySelectorAll(css)
//   {css, text}           those of them whose visible text contains `text`
//   {text}                the innermost elements whose visible text matches `text`
//   {role, label}         elements with that ARIA role (explicit, or implied by the tag)
//                         whose accessible name matches `label` (when given)
// where a text match is `{value, exact}`: exact = the whole text, whitespace collapsed;
// otherwise a case-insensitive substring.
//
// Every wait here is the one `until` below: a MutationObserver (children, attributes
// and text) re-checks a condition as the page changes, until it holds or time runs out.
(op, args) => {
  "use strict";
  const norm = (s) => (s ?? "").replace(/\s+/g, " ").trim();
  const matches = (text, m) => {
    if (!m) return true;
    const [have, want] = [norm(text), norm(m.value)];
    return m.exact ? have === want : have.toLowerCase().includes(want.toLowerCase());
  };
  const textOf = (el) => el.innerText ?? el.textContent ?? "";

  // Roles a tag implies when the element sets none (the common ones of chat pages).
  const IMPLICIT = {
    button: "button, input[type=button], input[type=submit], input[type=reset], summary",
    link: "a[href], area[href]",
    textbox:
      "textarea, input:not([type]), input[type=text], input[type=email], input[type=search], input[type=url], input[type=tel], [contenteditable=''], [contenteditable=true], [contenteditable=plaintext-only]",
    checkbox: "input[type=checkbox]",
    radio: "input[type=radio]",
    combobox: "select",
    heading: "h1, h2, h3, h4, h5, h6",
    img: "img[alt]",
    dialog: "dialog",
  };
  const roleOf = (el, role) => {
    const explicit = el.getAttribute("role");
    if (explicit) return explicit.split(/\s+/)[0] === role;
    return IMPLICIT[role] ? el.matches(IMPLICIT[role]) : false;
  };
  // The accessible name, in the order the ARIA spec gives its sources.
  const nameOf = (el) => {
    const by = el.getAttribute("aria-labelledby");
    if (by) {
      const named = by.split(/\s+/).map((id) => document.getElementById(id)).filter(Boolean);
      if (named.length) return named.map(textOf).join(" ");
    }
    const label = el.getAttribute("aria-label");
    if (label && norm(label)) return label;
    if (el.labels && el.labels.length) return [...el.labels].map(textOf).join(" ");
    if (el.matches("img")) return el.getAttribute("alt") ?? "";
    if (el.matches("input, textarea")) {
      return el.getAttribute("placeholder") || el.getAttribute("title") || "";
    }
    return norm(textOf(el)) || el.getAttribute("title") || "";
  };

  const all = (css) => [...document.querySelectorAll(css)];
  const locate = (loc) => {
    if (loc.role) {
      const css = `[role~="${loc.role}"]` + (IMPLICIT[loc.role] ? `, ${IMPLICIT[loc.role]}` : "");
      return all(css).filter((el) => roleOf(el, loc.role) && matches(nameOf(el), loc.label));
    }
    if (loc.css) return all(loc.css).filter((el) => !loc.text || matches(textOf(el), loc.text));
    // Text alone: the innermost elements that hold it, not every ancestor around them.
    const holding = all("body *").filter(
      (el) => !el.matches("script, style, template") && matches(textOf(el), loc.text),
    );
    return holding.filter((el) => !holding.some((other) => other !== el && el.contains(other)));
  };
  // The first alternative that matches: its index and its elements.
  const find = (sel) => {
    for (let index = 0; index < sel.alternatives.length; index++) {
      const found = locate(sel.alternatives[index]);
      if (found.length) return { index, found };
    }
    return { index: -1, found: [] };
  };
  const first = (sel) => find(sel).found[0] ?? null;
  const usable = (el) =>
    el && !el.disabled && el.getAttribute("aria-disabled") !== "true" ? el : null;

  const until = (check, ms) =>
    new Promise((resolve) => {
      const now = check();
      if (now) return resolve(now);
      const observer = new MutationObserver(() => {
        const value = check();
        if (value) done(value);
      });
      const done = (value) => {
        observer.disconnect();
        clearTimeout(timer);
        resolve(value);
      };
      observer.observe(document, {
        childList: true,
        subtree: true,
        attributes: true,
        characterData: true,
      });
      const timer = setTimeout(() => done(null), ms);
    });

  const isField = (el) => el instanceof HTMLTextAreaElement || el instanceof HTMLInputElement;
  // The prompt box's editable element: a selector may name an editor's wrapper.
  const editable = (prompt) => {
    const found = first(prompt);
    if (!found || isField(found) || found.isContentEditable) return found;
    return found.querySelector('textarea, input, [contenteditable="true"]') ?? found;
  };

  const ops = {
    // The index of the first group whose selectors all match (the first when several
    // do); on timeout, the name of the first selector missing from the last group.
    wait: async ({ groups, ms }) => {
      const found = () => {
        const index = groups.findIndex((g) => g.every((sel) => first(sel)));
        return index >= 0 ? { index } : null;
      };
      const got = await until(found, ms);
      if (got) return got.index;
      return groups.at(-1).find((sel) => !first(sel)).name;
    },
    // Clicks `button` once it is there and enabled.
    click: async ({ button, ms }) => {
      const el = await until(() => usable(first(button)), ms);
      if (el) {
        el.click();
        return "clicked";
      }
      return first(button) ? "disabled" : "missing";
    },
    // Sets a switch to `want`, judged by whether `on` matches, and waits for it to take.
    switch: async ({ toggle, on, want, ms }) => {
      const el = first(toggle);
      if (!el) return "missing";
      const right = () => (first(on) !== null) === want;
      if (right()) return "ok";
      el.click();
      return (await until(right, ms)) ? "ok" : "stuck";
    },
    // Puts `text` in the prompt box in place of what it holds. A textarea or an input
    // gets it through the element's own value setter and one `input` event, as typing
    // ends: the setter of the element's class, not the instance's, because frameworks
    // (React) shadow it to track the value and would take the change for their own;
    // the event is what their bindings (React's onChange, Vue's v-model, Svelte's
    // bind:value) listen to. Chromium's own typing handles each line end as an edit of
    // its own, whose cost grows with the text: 100,000 characters of lines took 14.8 s
    // in a textarea, the setter 0.04 s. A rich editor (contenteditable) keeps its own
    // model of the text, which only its input events update: it is left focused with
    // its contents selected, for the worker to type into ("editor").
    fill: ({ prompt, text }) => {
      const box = editable(prompt);
      if (!box) return "missing";
      box.focus();
      if (isField(box)) {
        const setter = Object.getOwnPropertyDescriptor(Object.getPrototypeOf(box), "value").set;
        setter.call(box, text);
        box.dispatchEvent(new InputEvent("input", { bubbles: true, inputType: "insertText", data: text }));
        return "filled";
      }
      const range = document.createRange();
      range.selectNodeContents(box);
      const selection = window.getSelection();
      selection.removeAllRanges();
      selection.addRange(range);
      return "editor";
    },
    // `fill`, then `click` in the same task, so that no frame lays out the box holding
    // the whole prompt before the page's send empties it (a long prompt's layout is most
    // of its cost). "editor" when the box is a rich editor: it is left for the worker to
    // type into, and nothing is clicked. "no box" when there is no prompt box; else
    // what `click` says about the button.
    submit: async ({ prompt, text, button, ms }) => {
      const how = ops.fill({ prompt, text });
      if (how === "missing") return "no box";
      return how === "filled" ? ops.click({ button, ms }) : how;
    },
    // For `prq doctor --type-check`: the text the prompt box holds. A rich editor's, read
    // off its elements: text as it is, a <br> a line end (but a block's last one, which
    // holds an empty line's place), each block a line of its own.
    held: ({ prompt }) => {
      const box = editable(prompt);
      if (!box) return null;
      if (isField(box)) return box.value;
      const lines = [""];
      let started = false;
      const walk = (el) => {
        for (const node of el.childNodes) {
          if (node.nodeType === 3) {
            lines[lines.length - 1] += node.data;
            started = true;
          } else if (node.nodeName === "BR") {
            if (node.nextSibling) lines.push("");
            started = true;
          } else if (node.nodeType === 1 && getComputedStyle(node).display === "block") {
            if (started) lines.push("");
            started = true;
            walk(node);
          } else if (node.nodeType === 1) walk(node);
        }
      };
      walk(box);
      return lines.join("\n");
    },
    // For `prq doctor --type-check`: empties the prompt box through the page's own
    // editing (a rich editor sees a deletion); says whether it is empty.
    clear: ({ prompt }) => {
      const box = editable(prompt);
      if (!box) return false;
      box.focus();
      if (isField(box)) {
        const setter = Object.getOwnPropertyDescriptor(Object.getPrototypeOf(box), "value").set;
        setter.call(box, "");
        box.dispatchEvent(new InputEvent("input", { bubbles: true, inputType: "deleteContent" }));
        return box.value === "";
      }
      const range = document.createRange();
      range.selectNodeContents(box);
      const selection = window.getSelection();
      selection.removeAllRanges();
      selection.addRange(range);
      document.execCommand("delete");
      return box.textContent === "";
    },
    // Clicks the stop button when the page offers one, else aborts the page's requests.
    stop: ({ stop }) => {
      const el = stop && usable(first(stop));
      if (el) {
        el.click();
        return "button";
      }
      return window.__prqAbortRequests() > 0 ? "aborted the page's requests" : "nothing to stop";
    },
    // --- The page's own controls (driver/controls.rs) ---
    // Picks `want` in a model picker: nothing when `current` shows it already; else
    // opens `menu` (when the picker has one), clicks the option that names it, and waits
    // until `current` shows it (pickers take a moment and render anew, so every check
    // finds its elements again). A name matches a text that is it, or begins with it
    // and a space (an option's description after its name), in any case. Returns
    // {done: "already" | "picked" | "stuck"}, {missing: NAME} or {offered: [names]}
    // when no option names it (the menu is closed again).
    pick: async ({ menu, current, option, want, ms }) => {
      const names = (text, name) => {
        const [t, w] = [norm(text).toLowerCase(), norm(name).toLowerCase()];
        return t === w || t.startsWith(w + " ");
      };
      const showing = () => {
        const el = first(current);
        return el && names(textOf(el), want);
      };
      if (showing()) return { done: "already" };
      if (menu) {
        const opener = await until(() => usable(first(menu)), ms);
        if (!opener) return { missing: menu.name };
        opener.click();
      }
      const options = await until(() => (find(option).found.length ? find(option).found : null), ms);
      if (!options) return { missing: option.name };
      const exact = options.find((el) => norm(textOf(el)).toLowerCase() === norm(want).toLowerCase());
      const chosen = exact ?? options.find((el) => names(textOf(el), want));
      if (!chosen) {
        const offered = options.map((el) => norm(textOf(el))).filter(Boolean);
        if (menu) first(menu)?.click();
        return { offered };
      }
      chosen.click();
      return { done: (await until(showing, ms)) ? "picked" : "stuck" };
    },
    // A settings field: its value now, and (with `value`) set to it through the
    // element's own value setter and `input` and `change` events, as `fill` does.
    // null when the page has no such field.
    field: ({ field, value }) => {
      const el = first(field);
      if (!el) return null;
      const before = el.value;
      if (value !== null && value !== undefined && String(value) !== before) {
        const setter = Object.getOwnPropertyDescriptor(Object.getPrototypeOf(el), "value").set;
        setter.call(el, String(value));
        el.dispatchEvent(new Event("input", { bubbles: true }));
        el.dispatchEvent(new Event("change", { bubbles: true }));
      }
      return before;
    },
    // Deletes the chat the page shows: clicks each of `steps` in order (a menu, its
    // item, a confirmation: those the site has), each once it is there and enabled,
    // then waits until the first of them has left the page (the chat's entry went with
    // it). "removed", "kept" (still there: the site refused), or "missing:NAME".
    remove: async ({ steps, ms }) => {
      let entry = null;
      for (const step of steps) {
        const el = await until(() => usable(first(step)), ms);
        if (!el) return `missing:${step.name}`;
        entry ??= el;
        el.click();
      }
      return (await until(() => !entry.isConnected, ms)) ? "removed" : "kept";
    },
    // For `prq doctor`: how many elements each selector matches, and by which alternative.
    count: ({ selectors }) =>
      selectors.map((sel) => {
        const { index, found } = find(sel);
        return { name: sel.name, alternative: index, found: found.length };
      }),
    // For `prq doctor`: the page's element tree, one line per element (tag, id,
    // classes, role, aria-label, the start of its own text), without form values.
    outline: ({ max_lines, max_depth }) => {
      const lines = [];
      const own = (el) =>
        norm([...el.childNodes].filter((n) => n.nodeType === 3).map((n) => n.data).join(" "));
      const walk = (el, depth) => {
        if (lines.length >= max_lines || depth > max_depth) return;
        if (el.matches("script, style, noscript, svg *")) return;
        let line = "  ".repeat(depth) + el.localName;
        if (el.id) line += `#${el.id}`;
        for (const c of el.classList) line += `.${c}`;
        for (const a of ["role", "aria-label", "aria-checked", "aria-pressed", "type", "name", "placeholder", "href", "disabled"]) {
          if (el.hasAttribute(a)) line += ` [${a}="${(el.getAttribute(a) ?? "").slice(0, 60)}"]`;
        }
        const text = own(el);
        if (text) line += ` "${text.slice(0, 40)}${text.length > 40 ? "…" : ""}"`;
        lines.push(line);
        for (const child of el.children) walk(child, depth + 1);
      };
      walk(document.documentElement, 0);
      if (lines.length >= max_lines) lines.push(`… (cut at ${max_lines} lines)`);
      return lines.join("\n");
    },
    // Attachments (driver/upload.rs). The element a selector finds first, as an object
    // for DOM.setFileInputFiles.
    element: ({ selector }) => first(selector),
    // How many "uploaded" markers the page shows.
    done_count: ({ done }) => find(done).found.length,
    // Waits until the page shows `want` "uploaded" markers ("ok"), or an upload error
    // (its text), for at most `ms`; on timeout, "timeout:<markers shown>".
    uploaded: async ({ done, error, want, ms }) => {
      const check = () => {
        const refused = error && first(error);
        if (refused && norm(textOf(refused))) return { refused: norm(textOf(refused)) };
        return find(done).found.length >= want ? { ok: true } : null;
      };
      const got = await until(check, ms);
      if (!got) return `timeout:${find(done).found.length}`;
      return got.ok ? "ok" : `refused:${got.refused}`;
    },
  };
  return ops[op](args);
}
