"""Unit tests of the operator package (see conftest.py); a package so that its conftest and
helpers do not shadow tests/airflow/conftest.py."""
