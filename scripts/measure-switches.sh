#!/usr/bin/env bash
# What one set of extra Chromium switches does to four sandbox lanes: `prq start` time
# (until every lane is ready), then, after one answer per lane, each browser's PSS (every
# process of the worker's group but the worker, from smaps_rollup — as prq_bench's memory
# section reads it), its USS (private pages only: PSS moves with every other Chromium on
# the machine, which shares the binary's pages) and its process count. The switches are
# added by a wrapper given as PRQ_BROWSER (and PRQ_HEADLESS_SHELL), so the lanes run
# exactly as prq launches them plus these switches; BROWSER_EXE is the browser the
# wrapper runs (default: chromium on PATH).
#
#   scripts/measure-switches.sh LABEL [SWITCH ...]        e.g.  renderer-limit --renderer-process-limit=1
#   PRQ_BIN=target/release LANES=4 PROFILE=lean scripts/measure-switches.sh lean
#
# Prints one line: LABEL, start seconds, PSS in all and per lane, USS in all, processes
# per lane, and how many other Chromium processes ran on the machine.
set -euo pipefail

label=$1
shift
bin=${PRQ_BIN:-target/debug}
lanes=${LANES:-4}
browser=${BROWSER_EXE:-$(command -v chromium)}
home=$(mktemp -d /tmp/prq-switches-XXXXXX)
trap 'PRQ_HOME=$home "$bin/prq" stop >/dev/null 2>&1 || true; rm -rf "$home"' EXIT

wrapper=$home/browser.sh
{
    echo '#!/bin/sh'
    printf 'exec %q "$@"' "$browser"
    for s in "$@"; do printf ' %q' "$s"; done
    echo
} >"$wrapper"
chmod +x "$wrapper"

cfg=$home/config.toml
{
    echo 'listen = "127.0.0.1:0"'
    echo 'mode = "concurrent"'
    echo 'start_timeout_s = 60'
    [ -n "${PROFILE:-}" ] && echo "browser_profile = \"$PROFILE\""
    for i in $(seq 1 "$lanes"); do
        printf '\n[[lanes]]\nprovider = "sandbox"\nprefix = "m%s"\naccount = "a%s"\n' "$i" "$i"
    done
} >"$cfg"

export PRQ_HOME=$home PRQ_BROWSER=$wrapper PRQ_HEADLESS_SHELL=$wrapper
t0=$(date +%s.%N)
"$bin/prq" start --config "$cfg" >/dev/null
t1=$(date +%s.%N)
pids=()
status=$("$bin/prq" status --json)
api=$(echo "$status" | python3 -c 'import json,sys; print(json.load(sys.stdin)["api_url"])')
for i in $(seq 1 "$lanes"); do
    curl -sf "$api/v1/chat/completions" -H 'content-type: application/json' \
        -d "{\"model\":\"m$i-chat\",\"messages\":[{\"role\":\"user\",\"content\":\"memory\\nsandbox: tokens=20 delay_ms=5\"}]}" \
        -o "$home/answer$i.json" &
    pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid" || { echo "$label: a lane did not answer" >&2; exit 1; }; done
grep -q '"content"' "$home"/answer*.json || { echo "$label: no answer text" >&2; exit 1; }
sleep 2
echo "$status" | python3 -c '
import json, os, sys
label, start = sys.argv[1], float(sys.argv[2])
def rollup(pid, keys):
    try:
        return sum(int(l.split()[1]) for l in open(f"/proc/{pid}/smaps_rollup") if l.split(":")[0] in keys)
    except OSError:
        return 0
pss = lambda pid: rollup(pid, ("Pss",))
uss = lambda pid: rollup(pid, ("Private_Clean", "Private_Dirty"))
def group(g):
    out = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            stat = open(f"/proc/{p}/stat").read()
        except OSError:
            continue
        f = stat.rsplit(")", 1)[1].split()
        if f[0] not in "ZX" and int(f[2]) == g:
            out.append(int(p))
    return out
per, procs, own = [], [], []
for lane in json.load(sys.stdin)["lanes"]:
    w = lane["worker_pid"]
    members = [p for p in group(w) if p != w]
    per.append(sum(pss(p) for p in members) / 1024)
    procs.append(len(members))
    own.append(sum(uss(p) for p in members) / 1024)
others = 0
for p in os.listdir("/proc"):
    try:
        if p.isdigit() and open(f"/proc/{p}/comm").read().strip() in ("chromium", "chrome", "headless_shell", "chromium-headle"):
            others += 1
    except OSError:
        pass
others -= sum(procs)
print(f"{label}\tstart {start:.2f} s\ttotal {sum(per):.1f} MiB\tlanes " + ", ".join(f"{x:.1f}" for x in per) + f"\tUSS total {sum(own):.1f} MiB\tprocesses " + ",".join(map(str, procs)) + f"\tother browser processes on the machine {others}")
' "$label" "$(echo "$t1 - $t0" | bc)"
