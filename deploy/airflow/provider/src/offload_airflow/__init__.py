"""Airflow provider for the offload gateway (Airflow 2.11, and 3.0 through 3.3).

`OffloadJobOperator` submits one container job to offload, waits for it (deferred on the
triggerer, or in the worker), copies the job's log into the task log, and returns the
job's `result` as the task's XCom. Connections are of type `offload`: the gateway URL in
Host and the bearer token in Password.
"""

from __future__ import annotations

from typing import Any

#: The package's version: pyproject.toml reads it from here.
__version__ = "0.2.0"


def get_provider_info() -> dict[str, Any]:
    """What Airflow's provider manager reads through the `apache_airflow_provider` entry point.

    The connection form comes from here on Airflow 3.2 and later (`conn-fields`,
    `ui-field-behaviour`), and from the hook's methods before.
    """
    from offload_airflow.connection_form import CONN_FIELDS, UI_FIELD_BEHAVIOUR

    return {
        "package-name": "airflow-provider-offload",
        "name": "offload",
        "description": "Run container jobs on serverless runtimes through an offload gateway.",
        "versions": [__version__],
        "integrations": [{"integration-name": "offload", "tags": ["software"]}],
        "connection-types": [
            {
                "connection-type": "offload",
                "hook-class-name": "offload_airflow.hook.OffloadHook",
                "hook-name": "Offload",
                "ui-field-behaviour": {
                    "hidden-fields": list(UI_FIELD_BEHAVIOUR["hidden_fields"]),
                    "relabeling": dict(UI_FIELD_BEHAVIOUR["relabeling"]),
                    "placeholders": dict(UI_FIELD_BEHAVIOUR["placeholders"]),
                },
                "conn-fields": {name: {**field, "schema": dict(field["schema"])} for name, field in CONN_FIELDS.items()},
            }
        ],
        "hooks": [{"integration-name": "offload", "python-modules": ["offload_airflow.hook"]}],
        "operators": [{"integration-name": "offload", "python-modules": ["offload_airflow.operator"]}],
        "triggers": [{"integration-name": "offload", "python-modules": ["offload_airflow.trigger"]}],
        "extra-links": ["offload_airflow.links.OffloadJobLink"],
    }
