"""Airflow provider for the offload gateway (Airflow 2.11, and 3.0 through 3.3).

`OffloadJobOperator` submits one container job to offload, waits for it (deferred on the
triggerer, or in the worker), copies the job's log into the task log, and returns the
job's `result` as the task's XCom. `OffloadExecutor` (Airflow 3.1 to 3.3) runs any task
of any DAG as a job on offload, with no change to the DAG. Connections are of type
`offload`: the gateway URL in Host and the bearer token in Password.
"""

from __future__ import annotations

from typing import Any

#: The package's version: pyproject.toml reads it from here.
__version__ = "0.3.0"


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
        "executors": ["offload_airflow.executor.OffloadExecutor"],
        # Airflow 3.2 and later: the executor's CLI commands (it has none).
        "cli": ["offload_airflow.get_cli_commands"],
        "config": {"offload_executor": {"description": EXECUTOR_SECTION, "options": EXECUTOR_OPTIONS}},
    }


def get_cli_commands() -> list[Any]:
    """The CLI commands the package adds to `airflow`: none."""
    return []


EXECUTOR_SECTION = (
    "OffloadExecutor (Airflow 3.1 to 3.3): each task a job on an offload gateway. "
    "A task's executor_config={'offload': {...}} overrides the job defaults for its job."
)


def _option(description: str, kind: str, default: str | None, example: str | None = None) -> dict[str, Any]:
    return {"description": description, "version_added": "0.3.0", "type": kind, "example": example,
            "default": default}


#: `[offload_executor]`, as `airflow config list` shows it (offload_airflow.executor reads it).
EXECUTOR_OPTIONS: dict[str, dict[str, Any]] = {
    "conn_id": _option("The gateway's connection (type offload).", "string", "offload_default"),
    "image": _option("The image every job runs: this Airflow version, the provider and the DAGs. "
                     "Default: apache/airflow:<this Airflow's version>.", "string", None,
                     "registry.example.com/airflow-dags:2026-01-02"),
    "python": _option("The interpreter in the image that runs the workload.", "string", "python",
                      "/opt/airflow/venv/bin/python"),
    "provider": _option("The gateway's provider for the jobs, or auto to let routing pick one.", "string", "auto"),
    "env": _option("A JSON object of environment variables every job gets.", "string", None,
                   '{"AIRFLOW__LOGGING__REMOTE_LOGGING": "True"}'),
    "labels": _option("A JSON object of labels every job gets.", "string", None, '{"team": "data"}'),
    "resources": _option("A JSON object: the jobs' default resources (cpu, memory, gpu).", "string", None,
                         '{"cpu": 1, "memory": "2Gi"}'),
    "routing": _option("A JSON object: the jobs' default routing (prefer, spot, allow, deny, "
                       "max_hourly_usd, expected_duration_seconds).", "string", None,
                       '{"prefer": "cost", "spot": "allowed"}'),
    "provider_options": _option("A JSON object: the jobs' default per-kind provider options.", "string", None),
    "timeout_seconds": _option("The jobs' default time limit, from dispatch.", "integer", None, "3600"),
    "deployment": _option("The value of the airflow_executor label of this Airflow's jobs, which sets them "
                          "apart from another Airflow's on the same gateway.", "string", "airflow", "prod"),
    "execution_api_server_url": _option("The API server's execution API as the jobs reach it. "
                                        "Default: [core] execution_api_server_url.", "string", None,
                                        "https://airflow.example.com/execution/"),
    "request_timeout": _option("Seconds one request to the gateway may take.", "float", "10"),
    "max_outage_seconds": _option("How long a task waits for a gateway that does not answer (or answers "
                                  "429 or 5xx) before it fails, saying so.", "float", "300"),
    "full_sync_seconds": _option("How often the safety net lists the deployment's jobs.", "float", "30"),
    "stop_grace_seconds": _option("How long a running job whose task instance has stopped (marked, cleared, "
                                  "timed out) may go on before it is cancelled.", "float", "60"),
    "log_lines": _option("How many of a job's last log lines the task log shows.", "integer", "10000"),
    "copy_logs": _option("Write an ended job's log into the scheduler's log folder when it has none "
                         "for the try.", "boolean", "True"),
    "cancel_on_end": _option("Cancel the running jobs when the scheduler stops (else the next scheduler "
                             "adopts them).", "boolean", "False"),
}
