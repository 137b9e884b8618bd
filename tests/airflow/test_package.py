"""The operator package as users get it: the wheel its README says to build (`python -m build`,
with the build requirement pyproject.toml names), and the metadata in it. tests/run.sh runs
this file with the 3.3 venv only, where `build` is installed."""

import email.parser
import subprocess
import sys
import zipfile

from conftest import ROOT

PACKAGE = ROOT / "deploy" / "airflow" / "provider"


def test_the_wheel_and_its_metadata(tmp_path):
    from offload_airflow import __version__

    done = subprocess.run([sys.executable, "-m", "build", "--wheel", "--outdir", str(tmp_path), str(PACKAGE)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    (wheel,) = tmp_path.glob("*.whl")
    assert wheel.name == f"airflow_provider_offload-{__version__}-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        info = f"airflow_provider_offload-{__version__}.dist-info"
        metadata = email.parser.Parser().parsestr(archive.read(f"{info}/METADATA").decode())
        entry_points = archive.read(f"{info}/entry_points.txt").decode()
    assert (metadata["Name"], metadata["Version"]) == ("airflow-provider-offload", __version__)
    assert metadata["License-Expression"] == "Apache-2.0"
    assert metadata.get_all("License-File") == ["LICENSE"] and f"{info}/licenses/LICENSE" in names
    classifiers = metadata.get_all("Classifier")
    assert "Framework :: Apache Airflow" in classifiers and "Framework :: Apache Airflow :: Provider" in classifiers
    assert "apache-airflow>=2.11.0" in metadata.get_all("Requires-Dist")
    assert metadata["Requires-Python"] == ">=3.10"
    # The README is the package's long description.
    assert metadata["Description-Content-Type"] == "text/markdown"
    assert metadata.get_payload().startswith("# airflow-provider-offload")
    assert "[apache_airflow_provider]\nprovider_info = offload_airflow:get_provider_info" in entry_points
    assert {"offload_airflow/py.typed", "offload_airflow/operator.py", "offload_airflow/links.py"} <= names
