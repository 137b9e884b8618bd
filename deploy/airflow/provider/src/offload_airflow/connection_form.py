"""The `offload` connection's form and defaults, without importing Airflow: the provider
info (read by Airflow's provider manager as it discovers providers) and the hook share it."""

from __future__ import annotations

from typing import Any

#: How long a call goes on retrying while the gateway does not answer, or answers 429 or
#: 5xx, unless the connection's `max_outage_seconds` says otherwise.
MAX_OUTAGE_SECONDS = 300.0
#: How long one request may take, unless the connection's `request_timeout` says otherwise
#: (a long-poll gets its `wait` on top).
REQUEST_TIMEOUT_SECONDS = 30.0
#: The connection's own fields beside Host and Password, as the connection form shows them
#: (`get_provider_info`'s `conn-fields`, and `get_connection_form_widgets` for Airflow
#: before 3.2). Each is read from the connection's extra.
CONN_FIELDS: dict[str, dict[str, Any]] = {
    "verify": {
        "label": "Verify TLS certificate",
        "description": "Check the gateway's certificate (https). Turn off only for a test gateway.",
        "schema": {"type": ["boolean", "null"], "default": True},
    },
    "ca_bundle": {
        "label": "CA bundle",
        "description": "Path, on the workers and the triggerer, of a PEM file of the CAs that sign "
        "the gateway's certificate. Empty: the system's CAs.",
        "schema": {"type": ["string", "null"]},
    },
    "request_timeout": {
        "label": "Request timeout (seconds)",
        "description": f"How long one request may take (a long-poll gets its wait on top). "
        f"Default {REQUEST_TIMEOUT_SECONDS:.0f}.",
        "schema": {"type": ["number", "null"], "exclusiveMinimum": 0},
    },
    "max_outage_seconds": {
        "label": "Outage limit (seconds)",
        "description": f"How long a call goes on retrying while the gateway does not answer, or "
        f"answers 429 or 5xx. Default {MAX_OUTAGE_SECONDS:.0f}.",
        "schema": {"type": ["number", "null"], "minimum": 0},
    },
}

#: The form's standard fields: what is hidden, and the labels and placeholders of the others.
UI_FIELD_BEHAVIOUR: dict[str, Any] = {
    "hidden_fields": ["schema", "login", "port"],
    "relabeling": {"host": "Gateway URL", "password": "Token"},
    "placeholders": {
        "host": "https://offload.example.com",
        "password": "a token from the gateway's [auth] tokens",
    },
}
