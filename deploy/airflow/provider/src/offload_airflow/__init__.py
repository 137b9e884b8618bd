"""Airflow provider for the offload gateway.

`OffloadJobOperator` submits one container job to offload, waits for it (deferred on the
triggerer, or in the worker), copies the job's log into the task log, and returns the
job's `result` as the task's XCom. Connections are of type `offload`: the gateway URL in
Host and the bearer token in Password.
"""

__version__ = "0.1.0"


def get_provider_info():
    """What Airflow's provider manager reads through the `apache_airflow_provider` entry point."""
    return {
        "package-name": "airflow-provider-offload",
        "name": "offload",
        "description": "Run container jobs through an offload gateway.",
        "versions": [__version__],
        "connection-types": [
            {
                "connection-type": "offload",
                "hook-class-name": "offload_airflow.hook.OffloadHook",
                "hook-name": "offload",
            }
        ],
        "hooks": [{"integration-name": "offload", "python-modules": ["offload_airflow.hook"]}],
        "operators": [{"integration-name": "offload", "python-modules": ["offload_airflow.operator"]}],
        "triggers": [{"integration-name": "offload", "python-modules": ["offload_airflow.trigger"]}],
        "integrations": [{"integration-name": "offload", "tags": ["software"]}],
    }
