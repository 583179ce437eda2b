#!/usr/bin/env bash
# The lint gate CI runs before the tests: formatting as `cargo fmt` leaves it, and no
# clippy warning anywhere in the workspace (tests, benches and tools included).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh --test
command -v cargo >/dev/null 2>&1 || export PATH="$HOME/.cargo/bin:$PATH"
for tool in clippy rustfmt; do
  if ! cargo "${tool/rustfmt/fmt}" --version >/dev/null 2>&1; then
    echo "prq: cargo $tool is missing; adding it with rustup" >&2
    rustup component add "$tool"
  fi
done
cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
