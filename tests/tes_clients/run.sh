#!/usr/bin/env bash
# The TES clients against the real `offload serve` (OFFLOAD_BIN, default target/debug/offload):
# py-tes (tests/tes_clients/test_py_tes.py, in target/tes-clients-venv), and a Snakemake
# workflow of three rules with snakemake-executor-plugin-tes whose files live in an S3
# bucket that moto serves (tests/tes_clients/test_snakemake.py, in target/snakemake-venv,
# with moto from target/moto-venv, which tests/run.sh installs first). Each venv is made from
# its requirements file and reused until that changes; one that cannot be installed fails
# the run, saying so.
set -euo pipefail
cd "$(dirname "$0")/../.."
venv_of() {
  local venv=$1 requirements=$2
  if ! cmp -s "$requirements" "$venv/.installed" 2>/dev/null; then
    echo "tests/tes_clients/run.sh: installing $requirements into $venv"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements" ||
      { echo "tests/tes_clients/run.sh: could not install $requirements" >&2; return 1; }
    cp "$requirements" "$venv/.installed"
  fi
}
status=0
venv_of target/tes-clients-venv tests/tes_clients/requirements.txt || status=1
venv_of target/snakemake-venv tests/tes_clients/snakemake-requirements.txt || status=1
[ "$status" -eq 0 ] || { echo "tes clients: 0 passed, 1 failed"; exit 1; }
export OFFLOAD_BIN=${OFFLOAD_BIN:-$PWD/target/debug/offload}
target/tes-clients-venv/bin/python -m pytest -p no:cacheprovider tests/tes_clients/test_py_tes.py || status=$?
OFFLOAD_SNAKEMAKE_VENV="$PWD/target/snakemake-venv" OFFLOAD_MOTO_PYTHON="${OFFLOAD_MOTO_PYTHON:-$PWD/target/moto-venv/bin/python}" \
  target/snakemake-venv/bin/python -m pytest -p no:cacheprovider tests/tes_clients/test_snakemake.py || status=$?
exit "$status"
