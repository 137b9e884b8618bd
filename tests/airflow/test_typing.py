"""The operator package is typed: mypy, with the package's own settings (pyproject.toml's
[tool.mypy]: every function annotated), finds nothing in it on Airflow 3.3. tests/run.sh runs
this file with the 3.3 venv only, where mypy is installed."""

import subprocess
import sys

from conftest import ROOT

PACKAGE = ROOT / "deploy" / "airflow" / "provider"


def test_mypy_finds_nothing():
    done = subprocess.run([sys.executable, "-m", "mypy", "src/offload_airflow"], cwd=PACKAGE,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("Success: no issues found"), done.stdout
