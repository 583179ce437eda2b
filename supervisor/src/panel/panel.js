// The Request Queue panel's script: renders the queue, the lanes and the runtime from
// the daemon's API and keeps them live from `/api/queue/events`; its buttons call the
// same queue API as `prq queue`. Plain JS: no framework, no build step, no network
// beyond the daemon that served the page.
"use strict";

/** Finished requests kept on the page: enough to see what just happened. */
const FINISHED_SHOWN = 8;
/** How long an action's result stays in the footer. */
const NOTICE_MS = 6000;
/** EventSource reconnects by itself after a dropped connection, but gives up for good
 *  when it gets an HTTP error instead of a stream (a proxy's 502, say); then a new one
 *  is opened after this pause. */
const REOPEN_MS = 3000;

const $ = (selector) => document.querySelector(selector);
const numbers = new Intl.NumberFormat();

// ----- what the page knows -----

/** Requests on the page by ID: the daemon's latest record of each, plus `seen`
 *  (`performance.now()` when it arrived), from which a live request's age ticks. */
const requests = new Map();
/** The pending requests' IDs in queue order. A record's `position` is exact when it is
 *  sent, but when a request leaves the line the others move up without an event of
 *  their own; so the page keeps the line itself: a request joins it at the position it
 *  came with (the back for a new one, the front for one requeued after its lane was
 *  lost) and leaves it when it stops pending. */
let line = [];
/** The last status report (`/api/status`, or a `status` event). */
let status = null;
/** When each cooling lane takes requests again, on this page's clock (from the
 *  report's `cooling_left_ms` and when the report arrived). */
const coolingEnds = new Map();
/** Lane ID → its browser's PSS in KiB. Only `/api/status` measures it; `status` events
 *  leave it out, so the last measurement stands until the next read. */
const memory = new Map();
/** Request IDs with a Stop or Cancel on its way, so their buttons do not fire twice. */
const acting = new Set();
/** IDs that events updated while a snapshot was being read, or null. */
let touched = null;

const isLive = (state) => state === "pending" || state === "processing";
const endedAt = (r) => r.admitted_ms + r.age_ms;

/** Takes in a request's latest record. Events come in the order the daemon sent them,
 *  so the latest one is always the newest. */
function put(r) {
  r.seen = performance.now();
  requests.set(r.id, r);
  const at = line.indexOf(r.id);
  if (r.state === "pending" && at < 0) {
    line.splice(Math.min(r.position ?? line.length, line.length), 0, r.id);
  } else if (r.state !== "pending" && at >= 0) {
    line.splice(at, 1);
  }
}

/** Keeps only the most recent finished requests. */
function prune() {
  [...requests.values()]
    .filter((r) => !isLive(r.state))
    .sort((a, b) => endedAt(b) - endedAt(a) || b.id - a.id)
    .slice(FINISHED_SHOWN)
    .forEach((r) => requests.delete(r.id));
}

function onRequest(r) {
  put(r);
  touched?.add(r.id);
  prune();
  render();
  // A lane that finished a request has a new current request and a new memory size.
  if (!isLive(r.state)) refreshStatus();
}

function applyStatus(s) {
  status = s;
  coolingEnds.clear();
  for (const lane of s.lanes) {
    if (lane.cooling_left_ms != null) coolingEnds.set(lane.id, performance.now() + lane.cooling_left_ms);
  }
  for (const lane of s.lanes) {
    if ("browser_pss_kb" in lane) memory.set(lane.id, lane.browser_pss_kb);
  }
}

// ----- talking to the daemon -----

/** One call to the daemon's API; its answer's JSON, or an Error carrying the API's
 *  error message and code. A call refused for want of the admin key shows the login
 *  form. */
async function call(method, path, json) {
  let response;
  try {
    response = await fetch(path, {
      method,
      cache: "no-store",
      ...(json && { headers: { "content-type": "application/json" }, body: JSON.stringify(json) }),
    });
  } catch {
    throw new Error("prq is not reachable");
  }
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    const error = new Error(body?.error?.message ?? `HTTP ${response.status} from ${path}`);
    error.code = body?.error?.code;
    if (error.code === "admin_required") showLogin(error.message);
    throw error;
  }
  return body;
}

let readingStatus = false;
let statusAgain = false;

/** Reads `/api/status`. Calls that come while a read is under way make one more read
 *  after it, so the page ends on the newest report however the answers interleave. */
async function refreshStatus() {
  if (readingStatus) {
    statusAgain = true;
    return;
  }
  readingStatus = true;
  try {
    do {
      statusAgain = false;
      applyStatus(await call("GET", "/api/status"));
      render();
    } while (statusAgain);
  } catch {
    // The event stream's own error reports a lost daemon (or a login that is needed);
    // it resyncs on reconnect.
  } finally {
    readingStatus = false;
  }
}

let syncs = 0;

/** Reads the whole queue: at connect, at reconnect, and when the daemon says this
 *  page's subscription fell behind. The snapshot replaces what the page had (after a
 *  daemon restart, IDs start again at 1), except for requests that events updated
 *  while it was being read: an event that arrives after the read began was sent after
 *  the snapshot was taken, or is the latest change before it. */
async function resync() {
  const mine = ++syncs;
  touched = new Set();
  refreshStatus();
  let snapshot = null;
  try {
    snapshot = await call("GET", "/api/queue");
  } catch (e) {
    if (e.code !== "admin_required") notify(`Could not read the queue: ${e.message}`, "error");
  }
  if (mine !== syncs) return; // a later read took over
  if (snapshot) {
    const newer = [...touched].map((id) => requests.get(id)).filter(Boolean);
    requests.clear();
    line = [];
    [...snapshot.requests, ...snapshot.finished].forEach(put);
    newer.forEach(put);
  }
  touched = null;
  prune();
  render();
}

function setConnection(state, text) {
  const el = $("#connection");
  el.dataset.state = state;
  el.textContent = text;
  document.body.dataset.connection = state;
}

/** The open event stream, if any. */
let events = null;

function connect() {
  const source = new EventSource("/api/queue/events");
  events = source;
  // `hello` comes once the subscription is in place, so nothing after the snapshot
  // that `resync` reads can be missed.
  source.addEventListener("hello", () => {
    setConnection("live", "live");
    resync();
  });
  source.addEventListener("request", (e) => onRequest(JSON.parse(e.data)));
  source.addEventListener("status", (e) => {
    applyStatus(JSON.parse(e.data));
    render();
    refreshStatus();
  });
  source.addEventListener("resync", resync);
  source.addEventListener("error", () => {
    if (source.readyState === EventSource.CLOSED) reopen();
    else setConnection("reconnecting", "reconnecting…");
  });
}

/** The daemon answered the event stream with an error, so the browser will not retry
 *  it: ask the API why. A login that is needed waits for the login form; anything else
 *  is tried again in a while. */
async function reopen() {
  events = null;
  setConnection("reconnecting", "reconnecting…");
  try {
    await call("GET", "/api/status");
  } catch (e) {
    if (e.code === "admin_required") return;
  }
  setTimeout(connect, REOPEN_MS);
}

function showLogin(why) {
  events?.close();
  events = null;
  setConnection("login", "login needed");
  set($("#login"), ".login-why", why);
  $("#login").hidden = false;
  $("#admin-key").focus();
}

$("#login").addEventListener("submit", async (e) => {
  e.preventDefault();
  const key = $("#admin-key");
  const value = key.value;
  // Emptied either way: a wrong key is typed again from scratch.
  key.value = "";
  try {
    await call("POST", "/api/login", { key: value });
  } catch (error) {
    set($("#login"), ".login-error", error.message);
    key.focus();
    return;
  }
  set($("#login"), ".login-error", "");
  $("#login").hidden = true;
  setConnection("connecting", "connecting…");
  connect();
});

// ----- formatting -----

function duration(ms, precise = false) {
  if (precise && ms < 10_000) return `${(ms / 1000).toFixed(1)} s`;
  const s = Math.floor(ms / 1000);
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  const pad = (n) => String(n).padStart(2, "0");
  if (m < 60) return `${m} min ${pad(s % 60)} s`;
  return `${Math.floor(m / 60)} h ${pad(m % 60)} min`;
}

function ordinal(n) {
  const tens = n % 100;
  const suffix =
    tens >= 11 && tens <= 13 ? "th" : ({ 1: "st", 2: "nd", 3: "rd" }[n % 10] ?? "th");
  return `${n}${suffix}`;
}

const plural = (n, word) => `${numbers.format(n)} ${word}${n === 1 ? "" : "s"}`;

function mebibytes(kb) {
  return kb >= 1024 * 1024
    ? `${(kb / (1024 * 1024)).toFixed(1)} GiB`
    : `${numbers.format(Math.round(kb / 1024))} MiB`;
}

const STATE_LABELS = { timed_out: "timed out" };
const stateLabel = (state) => STATE_LABELS[state] ?? state;

/** Why a processing request is being stopped, in words. */
function stopping(cause) {
  if (cause === "asked") return "stop asked";
  if (cause === "client_gone") return "client went away";
  if (cause === "stop_sequence") return "stop string reached";
  if (cause?.deadline) return `${cause.deadline.replaceAll("_", " ")} deadline passed`;
  return "stopping";
}

function age(r) {
  return isLive(r.state) ? r.age_ms + (performance.now() - r.seen) : r.age_ms;
}

// ----- rendering -----

const cards = new Map();
const laneCards = new Map();

function fromTemplate(id) {
  return $(id).content.firstElementChild.cloneNode(true);
}

function set(root, selector, text) {
  const el = root.querySelector(selector);
  if (el.textContent !== text) el.textContent = text;
}

/** The line under a card's state: its place in the line, why it is stopping, or how
 *  long it waited. */
function underState(r) {
  if (r.state === "pending") {
    return r.position === 0 ? "next" : `${ordinal(r.position + 1)} in line`;
  }
  if (r.state === "processing" && r.stopping) return stopping(r.stopping);
  if (r.wait_ms == null) return "never started";
  // Most requests start at once: only a wait worth mentioning is shown.
  return r.wait_ms >= 100 ? `waited ${duration(r.wait_ms, true)}` : "";
}

function fillCard(card, r) {
  const live = isLive(r.state);
  const shown = r.state === "processing" && r.stopping ? "stopping" : r.state;
  card.dataset.requestId = r.id;
  card.dataset.state = r.state;
  card.classList.toggle("muted", !live);

  const pill = card.querySelector(".state");
  pill.dataset.state = shown;
  set(card, ".state", stateLabel(shown));
  set(card, ".position", underState(r));
  set(card, ".rid", `#${r.id}`);
  set(card, ".model", r.model);
  set(card, ".lane", r.lane ? `on ${r.lane}` : `${live ? "waiting " : ""}for ${r.prefix}`);
  set(card, ".f-client", r.client);
  set(card, ".f-kind", r.kind === "chat" ? "chat" : "text completion");
  set(
    card,
    ".f-prompt",
    r.kind === "chat" ? plural(r.messages, "message") : plural(r.prompt_chars, "char"),
  );
  set(card, ".f-stream", r.stream ? "streaming" : "whole");
  set(card, ".f-age", live ? duration(age(r)) : `took ${duration(r.age_ms, true)}`);
  set(card, ".f-chars", r.state === "pending" ? "—" : plural(r.chars, "char"));

  const button = card.querySelector(".act button");
  const act = card.querySelector(".act");
  act.hidden = !live;
  if (live) {
    const action = r.state === "pending" ? "cancel" : "stop";
    const word = action === "stop" ? "Stop" : "Cancel";
    button.dataset.action = action;
    button.textContent = word;
    button.setAttribute("aria-label", `${word} request ${r.id}`);
    button.classList.toggle("danger-quiet", action === "stop");
    button.disabled = acting.has(r.id) || Boolean(r.stopping);
  }
}

/** Puts `records`' cards into `list` in order, moving an element only when it is out
 *  of place (moving a focused button would drop the keyboard focus). */
function place(list, records) {
  records.forEach((r, i) => {
    let card = cards.get(r.id);
    if (!card) {
      card = fromTemplate("#card-template");
      cards.set(r.id, card);
    }
    fillCard(card, r);
    if (list.children[i] !== card) list.insertBefore(card, list.children[i] ?? null);
  });
  while (list.children.length > records.length) list.lastElementChild.remove();
  $(`#${list.id}-empty`).hidden = records.length > 0;
}

function render() {
  const all = [...requests.values()];
  const pending = line.map((id) => requests.get(id));
  const processing = all.filter((r) => r.state === "processing").sort((a, b) => a.id - b.id);
  const finished = all
    .filter((r) => !isLive(r.state))
    .sort((a, b) => endedAt(b) - endedAt(a) || b.id - a.id);
  pending.forEach((r, i) => (r.position = i));

  place($("#processing"), processing);
  place($("#pending"), pending);
  place($("#finished"), finished);
  for (const [id, card] of cards) {
    if (!requests.has(id)) {
      card.remove();
      cards.delete(id);
    }
  }

  set(document, "#processing-count", String(processing.length));
  set(document, "#pending-count", String(pending.length));
  set(document, "#counts", `${processing.length} processing · ${pending.length} pending`);
  document.title = `${processing.length} processing, ${pending.length} pending · prq`;
  $('[data-action="stop-all"]').disabled = !processing.some((r) => !r.stopping);
  $('[data-action="clear"]').disabled = pending.length === 0;

  renderRuntime();
  renderLanes(processing);
}

function renderRuntime() {
  if (!status) return;
  const { state, reason } = status.runtime;
  const pill = $("#runtime-state");
  pill.dataset.state = state;
  pill.textContent = `runtime ${state}`;

  set(document, "#api", `API ${status.api_url}/v1`);

  const { configured, effective, reason: why } = status.mode;
  const mode = $("#mode");
  mode.textContent =
    configured === effective ? `${effective} mode` : `${effective} mode (configured ${configured})`;
  mode.title = why ?? "";

  const banner = $("#runtime-banner");
  banner.hidden = state !== "stopped" && state !== "draining";
  set(
    banner,
    ".title",
    state === "draining" ? "This host is draining." : "The runtime is stopped.",
  );
  set(banner, ".reason", reason ? `Why: ${reason}.` : "");
  // Some reasons already say what to run.
  banner.querySelector(".hint").hidden = Boolean(reason?.includes("prq start"));
}

function renderLanes(processing) {
  const list = $("#lanes");
  const lanes = status?.lanes ?? [];
  lanes.forEach((lane, i) => {
    let card = laneCards.get(lane.id);
    if (!card) {
      card = fromTemplate("#lane-template");
      laneCards.set(lane.id, card);
    }
    card.dataset.laneId = lane.id;
    card.dataset.state = lane.state;
    set(card, ".lane-id", lane.id);
    const pill = card.querySelector(".state");
    pill.dataset.state = lane.state;
    set(card, ".state", lane.state);
    set(card, ".lane-where", `${lane.provider} · ${lane.prefix}-* · account ${lane.account}`);

    // The request events are fresher than the last status report.
    const current = processing.find((r) => r.lane === lane.id);
    const id = current?.id ?? lane.current;
    set(
      card,
      ".lane-current",
      id != null
        ? `generating #${id}${current ? ` · ${plural(current.chars, "char")}` : ""}`
        : (lane.note ?? laneWaiting(lane)),
    );
    const running = lane.state !== "crashed" && lane.state !== "stopped" && lane.state !== "asleep";
    const kb = memory.get(lane.id);
    set(card, ".lane-memory", running && kb != null ? `browser ${mebibytes(kb)}` : "no browser");
    // The login view: for lanes with a page, while they run.
    const login = card.querySelector(".lane-login");
    login.hidden = lane.provider === "echo" || !running;
    login.href = `/panel/login?lane=${encodeURIComponent(lane.id)}`;
    login.title = lane.logged_in === false ? "its page is logged out: log in through the lane's own browser" : "open the lane's page to log in";
    if (list.children[i] !== card) list.insertBefore(card, list.children[i] ?? null);
  });
  while (list.children.length > lanes.length) {
    laneCards.delete(list.lastElementChild.dataset.laneId);
    list.lastElementChild.remove();
  }
}

/** What a lane without a request is waiting for. */
function laneWaiting(lane) {
  if (lane.state === "idle") return "waiting for a request";
  if (lane.state === "asleep") return "asleep: its browser is closed; the next request wakes it";
  if (lane.state === "login") return "in the login view: it takes requests once the view is closed";
  if (lane.state === "recovering") return "recovering: its page was left busy; it takes requests once the page answers";
  const end = coolingEnds.get(lane.id);
  if (lane.state === "cooling" && end != null) {
    const left = Math.max(0, Math.ceil((end - performance.now()) / 1000));
    return `rate limited by its site · free in ${duration(left * 1000)}`;
  }
  return "";
}

/** Ages tick here, locally, from each request's `age_ms` and when it arrived: the only
 *  timer on the page, and it reads nothing from the daemon. */
function tick() {
  for (const lane of status?.lanes ?? []) {
    if (lane.state === "cooling") set(laneCards.get(lane.id), ".lane-current", laneWaiting(lane));
  }
  for (const r of requests.values()) {
    if (isLive(r.state)) set(cards.get(r.id), ".f-age", duration(age(r)));
  }
}

// ----- actions -----

let noticeTimer = 0;

function notify(text, kind = "ok") {
  const notice = $("#notice");
  notice.textContent = text;
  notice.dataset.kind = kind;
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(() => (notice.textContent = ""), NOTICE_MS);
}

const ids = (list) => list.map((id) => `#${id}`).join(", ");

async function actOn(action, id) {
  acting.add(id);
  render();
  try {
    await call("POST", `/api/queue/${id}/${action}`);
    const r = requests.get(id);
    // The daemon sends no event until the lane confirms the stop; say it is under way.
    if (action === "stop" && r?.state === "processing") r.stopping ??= "asked";
    notify(action === "stop" ? `Stopping #${id}.` : `Cancelled #${id}.`);
  } catch (e) {
    notify(`Could not ${action} #${id}: ${e.message}`, "error");
  } finally {
    acting.delete(id);
    render();
  }
}

const BULK = {
  "stop-all": {
    path: "/api/queue/stop-all",
    count: () => [...requests.values()].filter((r) => r.state === "processing").length,
    title: (n) => `Stop ${n === 1 ? "the processing request" : `all ${n} processing requests`}?`,
    text: "Each stops in its page; its client gets a request_stopped error and keeps what was streamed.",
    confirm: "Stop all",
    done: (list) => (list.length ? `Stopping ${ids(list)}.` : "Nothing was processing."),
  },
  clear: {
    path: "/api/queue/clear",
    count: () => [...requests.values()].filter((r) => r.state === "pending").length,
    title: (n) => `Cancel ${n === 1 ? "the pending request" : `all ${n} pending requests`}?`,
    text: "They leave the queue before they start; their clients get a request_cancelled error.",
    confirm: "Clear queue",
    done: (list) => (list.length ? `Cancelled ${ids(list)}.` : "Nothing was pending."),
  },
};

function ask(kind) {
  const bulk = BULK[kind];
  const dialog = $("#confirm");
  dialog.dataset.kind = kind;
  set(dialog, "#confirm-title", bulk.title(bulk.count()));
  set(dialog, ".confirm-text", bulk.text);
  set(dialog, '[data-action="confirm"]', bulk.confirm);
  dialog.returnValue = "";
  dialog.showModal();
}

async function bulk(kind) {
  try {
    const body = await call("POST", BULK[kind].path);
    notify(BULK[kind].done(body.ids));
  } catch (e) {
    notify(`${BULK[kind].confirm} failed: ${e.message}`, "error");
  }
}

document.addEventListener("click", (e) => {
  const button = e.target.closest("button[data-action]");
  if (!button) return;
  const action = button.dataset.action;
  if (action === "stop" || action === "cancel") {
    actOn(action, Number(button.closest("[data-request-id]").dataset.requestId));
  } else if (action in BULK) {
    ask(action);
  }
});

// The dialog's buttons submit its form (`method="dialog"`), which closes it with the
// button's value; Escape closes it with none.
$("#confirm").addEventListener("close", (e) => {
  if (e.target.returnValue === "confirm") bulk(e.target.dataset.kind);
});

setInterval(tick, 1000);
render();
connect();
