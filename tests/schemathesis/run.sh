#!/usr/bin/env bash
# schemathesis (pinned in requirements.txt, in its own venv under target/) against the real
# `offload serve` on a sim provider: every check (server errors, status codes, content
# types, response schemas, schema-valid data accepted and schema-invalid data refused,
# auth), every phase including the stateful one, for SCHEMATHESIS_SECONDS (60). Requests
# may take up to 130 s, and may answer in up to 125 s (schemathesis's response-time check would
# fail at 10 s): a long-poll (`?wait=`) holds up to 120 s. Any failure fails the run; the report
# is printed. Then the same for the GA4GH TES document (/ga4gh/tes/v1/openapi.json), but for
# one check: TES's own rules make some schema-valid tasks refused (backend_parameters' keys
# in any case, checked by value and by `backend_parameters_strict`), which no schema of
# TES's shape can say, so "schema-valid data accepted" is left out there; every other
# check runs, "schema-invalid data refused" included.
set -euo pipefail
cd "$(dirname "$0")/../.."
venv=target/schemathesis-venv
requirements=tests/schemathesis/requirements.txt
if ! cmp -s "$requirements" "$venv/.installed" 2>/dev/null; then
  echo "tests/schemathesis/run.sh: installing $requirements into $venv"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
  cp "$requirements" "$venv/.installed"
fi
bin=${OFFLOAD_BIN:-target/debug/offload}
dir=$(mktemp -d)
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
OFFLOAD_LISTEN="127.0.0.1:$port" OFFLOAD_STORE__PATH="$dir/offload.db" \
  "$bin" serve --config tests/schemathesis/offload.toml > "$dir/serve.log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; rm -rf "$dir"' EXIT
overall=0
# run NAME DOCUMENT [schemathesis options]: one run, its report printed when it fails.
run() {
  local name=$1 document=$2 status=0
  shift 2
  "$venv/bin/schemathesis" --config-file tests/schemathesis/schemathesis.toml \
    run "http://127.0.0.1:$port$document" \
    --wait-for-schema 60 --checks all --max-time "${SCHEMATHESIS_SECONDS:-60}" \
    --request-timeout 130 --max-response-time 125 "$@" \
    -H "Authorization: Bearer schemathesis-token-0123456789" > "$dir/$name.txt" 2>&1 || status=$?
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "schemathesis: the gateway died during the run; its log:"; cat "$dir/serve.log"; status=1
  fi
  cases=$(grep -Eo '[0-9]+ generated' "$dir/$name.txt" | tail -1 || true)
  if [ "$status" -eq 0 ]; then
    echo "schemathesis ($name): 1 passed, 0 failed (${cases:-? generated} cases)"
  else
    cat "$dir/$name.txt"
    echo "schemathesis ($name): 0 passed, 1 failed"
    overall=1
  fi
}
run v1 /openapi.json
run tes /ga4gh/tes/v1/openapi.json --exclude-checks positive_data_acceptance
exit "$overall"
