#!/usr/bin/env bash
# The whole test suite: what CI runs and what a newcomer runs. It installs and starts every
# peer the tests need; today that is only the Rust toolchain's own tools.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo >/dev/null || { echo "tests/run.sh: cargo is not installed (https://rustup.rs)" >&2; exit 1; }
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo build --workspace --all-targets --locked
status=0
cargo test --workspace --all-targets --locked 2>&1 | tee "$log" || status=$?
passed=$(grep -Eo '^test result: .* ([0-9]+) passed' "$log" | grep -Eo '[0-9]+ passed' | awk '{s+=$1} END {print s+0}')
failed=$(grep -Eo '[0-9]+ failed;' "$log" | awk '{s+=$1} END {print s+0}')
echo
echo "offload: $passed passed, $failed failed"
exit "$status"
