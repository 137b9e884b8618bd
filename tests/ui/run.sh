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

if [[ ! -x /usr/bin/chromium ]]; then
  echo "tests/ui/run.sh: installing Debian's chromium"
  sudo=""
  [[ $(id -u) == 0 ]] || sudo="sudo"
  $sudo apt-get update -qq || { echo "tests/ui/run.sh: apt-get update failed" >&2; exit 1; }
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends chromium >/dev/null \
    || { echo "tests/ui/run.sh: apt-get install chromium failed" >&2; exit 1; }
fi
command -v node >/dev/null && command -v npm >/dev/null || { echo "tests/ui/run.sh: node and npm are needed" >&2; exit 1; }

node_dir=target/ui-node
if ! cmp -s tests/ui/package-lock.json "$node_dir/package-lock.json" || [[ ! -d "$node_dir/node_modules" ]]; then
  echo "tests/ui/run.sh: installing tests/ui/package-lock.json into $node_dir"
  rm -rf "$node_dir"
  mkdir -p "$node_dir"
  cp tests/ui/package.json tests/ui/package-lock.json "$node_dir/"
  (cd "$node_dir" && npm ci --no-audit --no-fund --loglevel=error)
fi
# The test file is run from the install folder, so that its imports resolve there.
cp tests/ui/dashboard.test.mjs "$node_dir/"

out=$(mktemp)
trap 'rm -f "$out"' EXIT
status=0
OFFLOAD_UI_SCREENSHOTS="${OFFLOAD_UI_SCREENSHOTS:-$PWD/target/ui-screenshots}" \
  node --test --test-reporter=spec "$node_dir/dashboard.test.mjs" 2>&1 | tee "$out" || status=$?
pass=$(grep -Eo '^ℹ pass [0-9]+' "$out" | awk '{print $3}' || true)
fail=$(grep -Eo '^ℹ fail [0-9]+' "$out" | awk '{print $3}' || true)
echo "ui: ${pass:-0} passed, ${fail:-0} failed"
[[ -n "$pass" ]] || status=1
exit "$status"
