#!/usr/bin/env bash
# Runs every test: unit tests, and end-to-end tests that start the real binaries with
# real headless Chromium on the sandbox site.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh --test
# A toolchain rustup just installed is not on this shell's PATH yet.
command -v cargo >/dev/null 2>&1 || export PATH="$HOME/.cargo/bin:$PATH"
cargo build --bins
cargo test --workspace "$@"
