#!/usr/bin/env bash
# Runs every test: unit tests, and end-to-end tests that start the real binaries with
# real headless Chromium on the sandbox site.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh --test
# A toolchain rustup just installed is not on this shell's PATH yet.
command -v cargo >/dev/null 2>&1 || export PATH="$HOME/.cargo/bin:$PATH"
cargo build --bins
# The tests' verdict holds for the browser they ran with: say which.
browser=${PRQ_BROWSER:-$(command -v chromium || command -v chromium-browser || echo chromium)}
echo "prq: testing with $("$browser" --version 2>/dev/null || echo "no browser at $browser")" >&2
shell=${PRQ_HEADLESS_SHELL:-/usr/lib/chromium/chromium-headless-shell}
[ -x "$shell" ] && echo "prq: lean lanes run $("$shell" --version 2>/dev/null) (headless shell)" >&2
cargo test --workspace "$@"
