#!/usr/bin/env bash
# The whole test suite: what CI runs and what a newcomer runs. It installs what the tests
# need besides the Rust toolchain, Python 3, Node.js 20+ with npm, and kubectl (a Python
# venv with Apache Airflow from PyPI and the airflow-provider-offload package, cached in
# target/airflow-venv until
# deploy/airflow/requirements.txt or the package's pyproject.toml changes; another with moto[server]
# for the ECS provider, in target/moto-venv; another with schemathesis, in
# target/schemathesis-venv; Debian's postgresql for a throwaway server, tests/pg.sh; Debian's
# chromium and playwright-core from npm, in target/ui-node, for the dashboard, tests/ui/run.sh)
# and starts every peer.
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in cargo python3 kubectl; do
  command -v "$tool" >/dev/null || { echo "tests/run.sh: $tool is not installed (kubectl renders the Kustomize manifests)" >&2; exit 1; }
done

venv=target/airflow-venv
requirements=deploy/airflow/requirements.txt
package=deploy/airflow/provider
if ! cat "$requirements" "$package/pyproject.toml" | cmp -s - "$venv/.installed" 2>/dev/null; then
  echo "tests/run.sh: installing $requirements and $package into $venv"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
  # Editable: the tests always run the package's current source.
  "$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps -e "$package"
  cat "$requirements" "$package/pyproject.toml" > "$venv/.installed"
fi

# moto's ECS and CloudWatch Logs server, which the ECS provider's tests start per test.
moto_venv=target/moto-venv
moto_requirements=providers/ecs/tests/requirements.txt
if ! cmp -s "$moto_requirements" "$moto_venv/.installed" 2>/dev/null; then
  echo "tests/run.sh: installing $moto_requirements into $moto_venv"
  rm -rf "$moto_venv"
  python3 -m venv "$moto_venv"
  "$moto_venv/bin/pip" install --quiet --disable-pip-version-check -r "$moto_requirements"
  cp "$moto_requirements" "$moto_venv/.installed"
fi

log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo build --workspace --all-targets --locked
status=0
# The tests that need PostgreSQL (the store contract, several replicas, the copy from SQLite)
# get a throwaway server (Debian's postgresql, installed if missing) unless DATABASE_URL names
# one; the API-level suites then run a second time with their gateways on PostgreSQL.
tests/pg.sh run bash -c 'cargo test --workspace --all-targets --locked &&
  OFFLOAD_TEST_STORE=postgres cargo test --locked --test api --test routing --test failover --test costs' \
  2>&1 | tee "$log" || status=$?
# schemathesis against the real binary: the OpenAPI document says exactly what it does.
tests/schemathesis/run.sh 2>&1 | tee -a "$log" || status=$?
# Real Airflow against the real binary (built above).
OFFLOAD_BIN="$PWD/target/debug/offload" "$venv/bin/python" -m pytest -p no:cacheprovider tests/airflow 2>&1 | tee -a "$log" || status=$?
# The dashboard in headless Chromium (Debian's chromium, playwright-core from npm).
OFFLOAD_BIN="$PWD/target/debug/offload" tests/ui/run.sh 2>&1 | tee -a "$log" || status=$?

passed=$(grep -Eo '[0-9]+ passed' "$log" | awk '{s+=$1} END {print s+0}')
failed=$(grep -Eo "[0-9]+ (failed|errors?)" "$log" | awk "{s+=\$1} END {print s+0}")
echo
echo "offload: $passed passed, $failed failed"
exit "$status"
