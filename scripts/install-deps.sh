#!/usr/bin/env bash
# Installs what prq needs on a fresh Debian/Ubuntu machine and is missing: a Chromium
# (Debian's `chromium` package, brought to the current release on every run), a C
# linker, and a Rust toolchain (rustup, into ~/.cargo).
# With --test, also what the tests use: Python 3 and the official `openai` package,
# FingerprintJS BotD, the Lexical and TipTap editors with esbuild and playwright-core
# (npm), Xvfb and HAProxy (the load-balancer test).
set -euo pipefail

apt_install() {
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  if [ -z "${APT_UPDATED:-}" ]; then
    $sudo apt-get update -qq
    APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}

have_chromium() {
  [ -n "${PRQ_BROWSER:-}" ] && [ -x "$PRQ_BROWSER" ] && return 0
  for b in chromium chromium-browser google-chrome google-chrome-stable; do
    command -v "$b" >/dev/null 2>&1 && return 0
  done
  [ -x /usr/bin/chromium ]
}

# The browser a lane runs talks to the open web with logged-in accounts, so it is the
# distribution's current (security) release, and the one tested is the one a new user
# gets: Debian's `chromium` (and, for the tests, `chromium-headless-shell`, which `lean`
# lanes run) are installed *or upgraded* to the candidate of a fresh `apt-get update`,
# on every run. A browser named by PRQ_BROWSER is the user's own choice and left alone.
# Without apt, an installed Chromium is used as it is.
browser_packages=(chromium)
[ "${1:-}" = "--test" ] && [ -z "${PRQ_HEADLESS_SHELL:-}" ] && browser_packages+=(chromium-headless-shell)
if [ -n "${PRQ_BROWSER:-}" ]; then
  have_chromium || { echo "prq: PRQ_BROWSER=$PRQ_BROWSER is not an executable" >&2; exit 1; }
elif command -v apt-get >/dev/null 2>&1; then
  before=$(dpkg-query -W -f='${Version}' chromium 2>/dev/null || true)
  if ! apt_install "${browser_packages[@]}"; then
    # Offline, or no root: an installed browser still runs, but it may be an old one.
    have_chromium || { echo "prq: cannot install Chromium (apt-get failed)" >&2; exit 1; }
    echo "prq: could not bring Chromium to the current release (apt-get failed); using the installed ${before:-browser}" >&2
  fi
  after=$(dpkg-query -W -f='${Version}' chromium 2>/dev/null || true)
  if [ -n "$before" ] && [ "$before" != "$after" ]; then
    echo "prq: Chromium upgraded: $before -> $after" >&2
  fi
elif ! have_chromium; then
  echo "prq: no Chromium found, and no apt-get to install it: install Chromium, or set PRQ_BROWSER" >&2
  exit 1
fi

if ! command -v cc >/dev/null 2>&1; then
  echo "prq: no C linker found; installing gcc" >&2
  apt_install gcc libc6-dev
fi

if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "prq: no Rust toolchain found; installing it with rustup into ~/.cargo" >&2
  command -v curl >/dev/null 2>&1 || apt_install curl ca-certificates
  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs \
    | sh -s -- -y --profile minimal --no-modify-path >/dev/null
  export PATH="$HOME/.cargo/bin:$PATH"
fi

# The OpenAI SDK test drives prq with the official Python client; a crash test uses
# Python for a stand-in worker.
if [ "${1:-}" = "--test" ] && ! python3 -c 'import openai' >/dev/null 2>&1; then
  echo "prq: installing the openai Python package for the SDK test" >&2
  python3 -m pip --version >/dev/null 2>&1 || apt_install python3 python3-pip
  python3 -m pip install --quiet --disable-pip-version-check openai \
    || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages openai
fi

# npm packages the tests use are kept in cache directories outside the repository:
# npm_cache DIR MARKER WHAT PACKAGE... installs PACKAGE... into DIR unless DIR/MARKER is
# there already.
npm_cache() {
  local dir=$1 marker=$2 what=$3
  shift 3
  [ "${TEST:-}" = 1 ] && [ ! -e "$dir/$marker" ] || return 0
  echo "prq: installing $what" >&2
  command -v npm >/dev/null 2>&1 || apt_install npm
  mkdir -p "$dir"
  npm install --silent --no-save --no-audit --no-fund --prefix "$dir" "$@" >/dev/null
}
[ "${1:-}" = "--test" ] && TEST=1
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/prq-test"

# The presence test runs FingerprintJS BotD (MIT) in a lane's page (tests/tests/presence.rs
# looks in its cache directory, or at PRQ_BOTD).
npm_cache "$CACHE/botd-2.0.0" node_modules/@fingerprintjs/botd/dist/botd.esm.js \
  "@fingerprintjs/botd 2.0.0 for the presence test" "@fingerprintjs/botd@2.0.0"

# The tool-calling test also drives prq with the official OpenAI Node SDK
# (tests/tests/sdk.rs looks in its cache directory, or at PRQ_OPENAI_NODE). 6.x: 7.x asks
# for Node 22.
npm_cache "$CACHE/openai-node-6.49.0" node_modules/openai/package.json \
  "the openai npm package 6.49.0 for the SDK test" "openai@6.49.0"

# The editor test (worker/tests/lane/editors.rs) types prompts into pages built with the
# real editor libraries, bundled by esbuild (or at PRQ_EDITORS).
npm_cache "$CACHE/editors-lexical-0.53.0-tiptap-3.35.0" node_modules/.bin/esbuild \
  "lexical, tiptap and esbuild for the editor test" \
  lexical@0.53.0 @lexical/plain-text@0.53.0 @tiptap/core@3.35.0 @tiptap/starter-kit@3.35.0 \
  @tiptap/pm@3.35.0 esbuild@0.28.2

# The login-view test (tests/tests/remote_login.rs) drives the panel with Playwright
# (`playwright-core`: the library alone, no browser download; it runs Debian's chromium).
npm_cache "$CACHE/playwright-core-1.65.1" node_modules/playwright-core/package.json \
  "playwright-core 1.65.1 for the login-view test" "playwright-core@1.65.1"

# Lanes with `headless = false` run on a virtual display (Xvfb); their test needs it.
if [ "${1:-}" = "--test" ] && ! command -v Xvfb >/dev/null 2>&1; then
  echo "prq: installing xvfb for the headed-lane test" >&2
  apt_install xvfb
fi

# The load-balancer test (tests/tests/haproxy.rs) runs Debian's HAProxy in front of two
# prq daemons; Debian puts it in /usr/sbin, which may not be on a user's PATH.
if [ "${1:-}" = "--test" ] && ! command -v haproxy >/dev/null 2>&1 && [ ! -x /usr/sbin/haproxy ]; then
  echo "prq: installing haproxy for the load-balancer test" >&2
  apt_install haproxy
fi

# The DevTools test probes a lane's ports as another user: setpriv (util-linux) and curl.
if [ "${1:-}" = "--test" ]; then
  command -v curl >/dev/null 2>&1 || apt_install curl
  command -v setpriv >/dev/null 2>&1 || apt_install util-linux
fi
