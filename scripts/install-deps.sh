#!/usr/bin/env bash
# Installs what prq needs on a fresh Debian/Ubuntu machine and is missing: a Chromium
# (Debian's `chromium` package) and a Rust toolchain check.
set -euo pipefail

have_chromium() {
  [ -n "${PRQ_BROWSER:-}" ] && [ -x "$PRQ_BROWSER" ] && return 0
  for b in chromium chromium-browser google-chrome google-chrome-stable; do
    command -v "$b" >/dev/null 2>&1 && return 0
  done
  [ -x /usr/bin/chromium ]
}

if ! have_chromium; then
  echo "prq: no Chromium found; installing Debian's chromium package" >&2
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "prq: cargo not found; install Rust from https://rustup.rs and run this again" >&2
  exit 1
fi

# The OpenAI SDK test drives prq with the official Python client.
if [ "${1:-}" = "--test" ] && ! python3 -c 'import openai' >/dev/null 2>&1; then
  echo "prq: installing the openai Python package for the SDK test" >&2
  if ! python3 -m pip --version >/dev/null 2>&1; then
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3 python3-pip >/dev/null
  fi
  python3 -m pip install --quiet --disable-pip-version-check openai \
    || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages openai
fi
