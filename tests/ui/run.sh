#!/usr/bin/env bash
# The dashboard's end-to-end tests (tests/ui/dashboard.test.mjs): the real gateway binary
# ($OFFLOAD_BIN) in headless Chromium, driven by playwright-core. Installs what they need:
# Debian's chromium (with apt-get, when /usr/bin/chromium is missing) and the npm packages
# of tests/ui/package-lock.json (in target/ui-node, again only when the lock file changes).
# Screenshots go to target/ui-screenshots (OFFLOAD_UI_SCREENSHOTS). Nothing is skipped: when
# Chromium or the packages cannot be had, this fails and says why.
set -euo pipefail
cd "$(dirname "$0")/../.."
[[ -n "${OFFLOAD_BIN:-}" && -x "${OFFLOAD_BIN}" ]] || { echo "tests/ui/run.sh: OFFLOAD_BIN must name the built gateway binary" >&2; exit 1; }

ui_fail() {
  echo "tests/ui/run.sh: $*" >&2
  exit 1
}

if [[ ! -x /usr/bin/chromium ]]; then
  # As tests/pg.sh installs postgresql; through sudo when not root (env, as sudo drops
  # DEBIAN_FRONTEND from the environment).
  sudo=()
  if [[ $(id -u) != 0 ]]; then
    command -v sudo >/dev/null || ui_fail "Chromium is not installed (no /usr/bin/chromium) and only root (or sudo) can apt-get install it"
    sudo=(sudo)
  fi
  echo "tests/ui/run.sh: installing Debian's chromium package" >&2
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 || ui_fail "apt-get update failed"
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >&2 \
    || ui_fail "apt-get install chromium failed"
  [[ -x /usr/bin/chromium ]] || ui_fail "no /usr/bin/chromium after installing chromium"
fi
command -v node >/dev/null && command -v npm >/dev/null || ui_fail "node (20 or later) and npm are needed"

node_dir=target/ui-node
# .installed is the lock file of the last install that succeeded: a failed or interrupted
# `npm ci` is done again on the next run.
if ! cat tests/ui/package.json tests/ui/package-lock.json | cmp -s - "$node_dir/.installed" 2>/dev/null; then
  echo "tests/ui/run.sh: installing tests/ui/package-lock.json into $node_dir"
  rm -rf "$node_dir"
  mkdir -p "$node_dir"
  cp tests/ui/package.json tests/ui/package-lock.json "$node_dir/"
  (cd "$node_dir" && npm ci --no-audit --no-fund --loglevel=error) || ui_fail "npm ci in $node_dir failed"
  cat tests/ui/package.json tests/ui/package-lock.json > "$node_dir/.installed"
fi
# The test file is run from the install folder, so that its imports resolve there.
cp tests/ui/dashboard.test.mjs "$node_dir/"

out=$(mktemp)
trap 'rm -f "$out"' EXIT
status=0
# --test-timeout: a test that hangs fails instead of holding up the suite.
OFFLOAD_UI_SCREENSHOTS="${OFFLOAD_UI_SCREENSHOTS:-$PWD/target/ui-screenshots}" \
  node --test --test-reporter=spec --test-timeout=60000 "$node_dir/dashboard.test.mjs" 2>&1 | tee "$out" || status=$?
# node's summary: "ℹ pass N", "ℹ fail N", "ℹ cancelled N" (cancelled counts as failed).
count() { { grep -Eo "^ℹ $1 [0-9]+" "$out" || true; } | awk '{s+=$3} END {print s+0}'; }
if grep -Eq '^ℹ pass [0-9]+' "$out"; then
  pass=$(count pass) fail=$(( $(count fail) + $(count cancelled) ))
else
  # node ended without its summary: count the run as one failure.
  pass=0 fail=1 status=1
fi
(( fail == 0 )) || [[ $status != 0 ]] || status=1
echo "ui: $pass passed, $fail failed"
exit "$status"
