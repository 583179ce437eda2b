#!/usr/bin/env bash
# Sets up prq on a fresh machine and runs `prq demo`: one answer streamed through a real
# headless Chromium on the built-in sandbox chat site. prq keeps running afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
# A toolchain rustup just installed is not on this shell's PATH yet.
command -v cargo >/dev/null 2>&1 || export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release --bins
exec target/release/prq demo "$@"
