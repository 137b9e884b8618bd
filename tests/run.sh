#!/usr/bin/env bash
# The whole test suite: what CI runs and what a newcomer runs. It installs and starts every
# peer the tests need; today that is only the Rust toolchain's own tools.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo >/dev/null || { echo "tests/run.sh: cargo is not installed (https://rustup.rs)" >&2; exit 1; }
cargo build --workspace --all-targets --locked
cargo test --workspace --locked
