#!/usr/bin/env bash
# The whole test suite: what CI runs and what a newcomer runs. It installs what the tests
# need besides the Rust toolchain, Python 3, Node.js 20+ with npm, and kubectl (one Python
# venv per Airflow version the airflow-provider-offload package supports, each with that
# Airflow from PyPI and the package, installed by uv from tests/airflow/requirements/ and
# cached in target/airflow-venv (3.3) and target/airflow-2.11-venv ... target/airflow-3.2-venv
# until its lock, the package's pyproject.toml or its version changes; another with moto[server]
# for the ECS provider, in target/moto-venv; another with schemathesis, in
# target/schemathesis-venv; others with py-tes, and with Snakemake and its TES executor
# plugin, for the TES clients, in target/tes-clients-venv and target/snakemake-venv
# (tests/tes_clients/run.sh); Debian's postgresql for a throwaway server, tests/pg.sh; Debian's
# prometheus for promtool, which checks the alert rules; Debian's chromium and playwright-core
# from npm, in target/ui-node, for the dashboard, tests/ui/run.sh) and starts every peer.
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in cargo python3 kubectl; do
  command -v "$tool" >/dev/null || { echo "tests/run.sh: $tool is not installed (kubectl renders the Kustomize manifests)" >&2; exit 1; }
done

# The Airflow venvs: one per Airflow version the operator package supports, each from its
# lock in tests/airflow/requirements/, installed by uv (pinned there too; seconds per venv
# where pip takes a minute). 3.3 keeps the name target/airflow-venv.
uv_venv=target/airflow-uv-venv
uv_requirements=tests/airflow/requirements/uv.txt
if ! cmp -s "$uv_requirements" "$uv_venv/.installed" 2>/dev/null; then
  echo "tests/run.sh: installing $uv_requirements into $uv_venv"
  rm -rf "$uv_venv"
  python3 -m venv "$uv_venv"
  "$uv_venv/bin/pip" install --quiet --disable-pip-version-check -r "$uv_requirements"
  cp "$uv_requirements" "$uv_venv/.installed"
fi
airflow_versions="3.3 2.11 3.0 3.1 3.2"
airflow_venv() { if [ "$1" = 3.3 ]; then echo target/airflow-venv; else echo "target/airflow-$1-venv"; fi; }
package=deploy/airflow/provider
# What a venv was installed from: the lock, pyproject.toml and the package's version (the
# editable install's metadata carries the version it had when installed).
installed_from() { cat "$1" "$package/pyproject.toml"; grep '^__version__' "$package/src/offload_airflow/__init__.py"; }
for version in $airflow_versions; do
  venv=$(airflow_venv "$version")
  lock=tests/airflow/requirements/airflow-$version.txt
  if ! installed_from "$lock" | cmp -s - "$venv/.installed" 2>/dev/null; then
    echo "tests/run.sh: installing $lock and $package into $venv"
    rm -rf "$venv"
    UV_PYTHON_DOWNLOADS=never "$uv_venv/bin/uv" venv --quiet --python "$(command -v python3)" "$venv"
    VIRTUAL_ENV="$PWD/$venv" "$uv_venv/bin/uv" pip install --quiet -r "$lock"
    # Editable: the tests always run the package's current source.
    VIRTUAL_ENV="$PWD/$venv" "$uv_venv/bin/uv" pip install --quiet --no-deps -e "$package"
    installed_from "$lock" > "$venv/.installed"
  fi
done

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

# promtool checks and unit-tests the alert rules and the Grafana dashboard's queries
# (tests/deploy.rs): Debian's prometheus package.
if ! command -v promtool >/dev/null; then
  [[ $(id -u) == 0 ]] || { echo "tests/run.sh: promtool is not installed and only root can apt-get install prometheus" >&2; exit 1; }
  echo "tests/run.sh: installing Debian's prometheus package (for promtool)"
  export DEBIAN_FRONTEND=noninteractive
  { apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus; } ||
    { echo "tests/run.sh: apt-get install prometheus failed" >&2; exit 1; }
  command -v promtool >/dev/null || { echo "tests/run.sh: no promtool after installing prometheus" >&2; exit 1; }
fi

log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo build --workspace --all-targets --locked
status=0
# The tests that need PostgreSQL (the store contract, several replicas, the copy from SQLite)
# get a throwaway server (Debian's postgresql, installed if missing) unless DATABASE_URL names
# one; the API-level suites then run a second time with their gateways on PostgreSQL.
# Every test binary runs, and both passes, whatever fails first: a run reports every failure.
tests/pg.sh run bash -c 'status=0
  cargo test --workspace --all-targets --locked --no-fail-fast || status=$?
  OFFLOAD_TEST_STORE=postgres cargo test --locked --no-fail-fast --test api --test routing \
    --test failover --test costs --test spot --test tenants --test budgets --test tes || status=$?
  exit $status' \
  2>&1 | tee "$log" || status=$?
# schemathesis against the real binary: the OpenAPI document says exactly what it does.
tests/schemathesis/run.sh 2>&1 | tee -a "$log" || status=$?
# GA4GH TES clients against the real binary: py-tes, and a Snakemake workflow through
# snakemake-executor-plugin-tes with its files in moto's S3 (venvs in target/, see the script).
OFFLOAD_BIN="$PWD/target/debug/offload" OFFLOAD_MOTO_PYTHON="$PWD/$moto_venv/bin/python" \
  tests/tes_clients/run.sh 2>&1 | tee -a "$log" || status=$?
# Real Airflow against the real binary (built above): every test on 3.3 (OffloadExecutor's
# whole-Airflow tests, tests/airflow/test_executor_stack.py, on 3.3 only); the unit tests
# (tests/airflow/unit) and the operator's whole-Airflow tests on 2.11; the unit tests on 3.0
# to 3.2.
# Airflow 2's LocalExecutor refuses SQLite: its whole-Airflow tests get a database on a
# throwaway PostgreSQL (tests/pg.sh).
for version in $airflow_versions; do
  runner=()
  case "$version" in
    3.3) suites=tests/airflow ;;
    2.11) suites="tests/airflow/unit tests/airflow/test_example_dag.py tests/airflow/test_operator.py tests/airflow/test_operator_stack.py"
      runner=(tests/pg.sh run) ;;
    *) suites=tests/airflow/unit ;;
  esac
  echo "tests/run.sh: Airflow $version: $suites"
  # shellcheck disable=SC2086 # $suites is a list of paths
  OFFLOAD_BIN="$PWD/target/debug/offload" ${runner[@]+"${runner[@]}"} "$(airflow_venv "$version")/bin/python" \
    -m pytest -p no:cacheprovider $suites 2>&1 | tee -a "$log" || status=$?
done
# The dashboard in headless Chromium (Debian's chromium, playwright-core from npm).
OFFLOAD_BIN="$PWD/target/debug/offload" tests/ui/run.sh 2>&1 | tee -a "$log" || status=$?

passed=$(grep -Eo '[0-9]+ passed' "$log" | awk '{s+=$1} END {print s+0}')
failed=$(grep -Eo "[0-9]+ (failed|errors?)" "$log" | awk "{s+=\$1} END {print s+0}")
echo
echo "offload: $passed passed, $failed failed"
exit "$status"
