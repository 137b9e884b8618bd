"""moto's ECS, EC2 and CloudWatch Logs server for the ECS provider's tests, on loopback.

moto stands in for AWS; this script adds only what a test needs to steer it (and fixes
one shape moto gets wrong, below):
- a VPC (DNS hostnames on), a subnet, a security group, a cluster and a log group;
- `POST /offload-test/task` {"arn", "last_status", "exit_code", "exit_codes", "stop_code",
  "reason"}: move a task (moto never sets exit codes or stop codes); `exit_codes` gives one
  per container name, `exit_code` the rest;
- `POST /offload-test/log` {"stream", "lines"}: write these lines to a stream of the log
  group (made if missing), one event each, as a task's awslogs driver would (not through
  the API, so moto's recorder counts none of it);
- `POST /offload-test/fault` {"target", "times", "status", "body"}: answer the next
  `times` calls of an action (RunTask, DescribeTasks, ...) with this status and JSON body,
  e.g. a ThrottlingException, before they reach moto; `POST /offload-test/faults/clear`
  drops those not used up (the SDK's own retries take an unknown number).
Calls are counted by moto's own request recorder (`/moto-api/recorder/*`).

RunTask keeps ECS's idempotency: a `clientToken` seen before gets the first request's answer
and starts no second task (moto ignores the token), so a gateway killed with a RunTask in
flight and restarted finds the task it started, as it would on ECS, even when its lookup by
`startedBy` comes before moto has made the task.

moto gets five things wrong that the tests rely on, fixed below: a RunTask with a
`capacityProviderStrategy` of FARGATE and FARGATE_SPOT (and no `launchType`, as ECS
requires) runs on Fargate, as ECS runs it (moto looks for EC2 container instances and fails
with a 500); a container's `cpu` and
`memory` (numbers, where ECS sends strings), a task's containers (moto makes one, from the
first container definition; ECS makes one per definition), and StopTask of a task it does
not know (moto fails with a 500; ECS answers InvalidParameterException "The referenced task
was not found."), and a Fargate container with no `memory` of its own (ECS gives it the
task's; moto adds `None` to its sum of the containers' memory and fails with a 500). Two of
CloudWatch Logs' ways are added: a task's containers that log with
the awslogs driver get their streams (`PREFIX/CONTAINER/TASK_ID`) when the task starts, as
the driver makes them, and FilterLogEvents naming a stream that does not exist is refused
with ResourceNotFoundException "The specified log stream does not exist." (moto skips the
name).

Prints one JSON line with the endpoint and the resources, then serves until killed.
"""

import copy
import io
import json
import os
import socket
import sys
import threading
import time
import urllib.request

os.environ.setdefault("MOTO_ENABLE_RECORDING", "True")
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")

import boto3  # noqa: E402
from moto.ecs.models import ecs_backends  # noqa: E402
from moto.logs import models as logs_models  # noqa: E402
from moto.logs.exceptions import ResourceNotFoundException  # noqa: E402
from moto.logs.models import logs_backends  # noqa: E402
from moto.server import DomainDispatcherApplication, create_backend_app  # noqa: E402
from werkzeug.serving import make_server  # noqa: E402

from moto.ecs import models as ecs_models  # noqa: E402
from moto.ecs import responses as ecs_responses  # noqa: E402

ACCOUNT, REGION = "123456789012", "us-east-1"
LOG_GROUP = "/offload/jobs"

# The shapes moto gets wrong (see the module's doc).
_container_init = ecs_models.Container.__init__
_task_init = ecs_models.Task.__init__
_stop_task = ecs_models.EC2ContainerServiceBackend.stop_task
_filter_log_events = logs_models.LogGroup.filter_log_events
_run_task_response = ecs_responses.EC2ContainerServiceResponse.run_task
_requirements = ecs_models.EC2ContainerServiceBackend._calculate_task_resource_requirements


def _ecs_shaped_container(self, task_def, definition=None):
    _container_init(self, task_def)
    definition = definition or task_def.container_definitions[0]
    self.name, self.image = definition.get("name"), definition.get("image")
    self.command, self.environment = definition.get("command"), definition.get("environment")
    self.cpu = None if definition.get("cpu") is None else str(definition["cpu"])
    self.memory = None if definition.get("memory") is None else str(definition["memory"])


def _task_with_every_container(self, cluster, task_definition, *args, **kwargs):
    _task_init(self, cluster, task_definition, *args, **kwargs)
    self.containers = [ecs_models.Container(task_definition, d) for d in task_definition.container_definitions]
    for definition in task_definition.container_definitions:
        logging = definition.get("logConfiguration") or {}
        if logging.get("logDriver") == "awslogs":
            options, logs = logging.get("options", {}), logs_backends[ACCOUNT][REGION]
            stream = f"{options.get('awslogs-stream-prefix')}/{definition['name']}/{self.id}"
            if options.get("awslogs-group") in logs.groups:
                logs.ensure_log_stream(options["awslogs-group"], stream)


def _filter_naming_only_streams_that_exist(self, log_group_name, log_stream_names, *args, **kwargs):
    if any(name not in self.streams for name in log_stream_names or []):
        raise ResourceNotFoundException("The specified log stream does not exist.")
    return _filter_log_events(self, log_group_name, log_stream_names, *args, **kwargs)


def _run_task_on_fargate_capacity(self):
    strategy = self._get_param("capacityProviderStrategy") or []
    names = {item.get("capacityProvider") for item in strategy}
    if strategy and not self._get_param("launchType") and names <= {"FARGATE", "FARGATE_SPOT"}:
        get = self._get_param
        self._get_param = lambda name, if_none=None: "FARGATE" if name == "launchType" else get(name, if_none)
    return _run_task_response(self)


def _requirements_of_containers_without_memory(task_definition):
    if all(d.get("memory") is not None or d.get("memoryReservation") is not None
           for d in task_definition.container_definitions):
        return _requirements(task_definition)
    shaped = copy.copy(task_definition)
    shaped.container_definitions = [dict(d, memory=d.get("memory") or 0) for d in task_definition.container_definitions]
    required = _requirements(shaped)
    required["MEMORY"] = max(required["MEMORY"], int(task_definition.memory or 0))
    return required


def _stop_task_as_ecs_does(self, cluster_str, task_str, reason):
    try:
        return _stop_task(self, cluster_str, task_str, reason)
    except ecs_models.ECSException:  # ClusterNotFoundException and the like, as they are
        raise
    except Exception:  # moto's "Could not find task ..." / "... has no registered tasks"
        raise ecs_models.InvalidParameterException("The referenced task was not found.")


ecs_models.Container.__init__ = _ecs_shaped_container
ecs_models.Task.__init__ = _task_with_every_container
ecs_models.EC2ContainerServiceBackend.stop_task = _stop_task_as_ecs_does
ecs_models.EC2ContainerServiceBackend._calculate_task_resource_requirements = staticmethod(
    _requirements_of_containers_without_memory)
ecs_responses.EC2ContainerServiceResponse.run_task = _run_task_on_fargate_capacity
logs_models.LogGroup.filter_log_events = _filter_naming_only_streams_that_exist

faults = {}  # action -> list of (status, body)
lock = threading.Lock()


def control(path, request):
    if path == "/offload-test/task":
        backend = ecs_backends[ACCOUNT][REGION]
        for tasks in backend.tasks.values():
            task = tasks.get(request["arn"])
            if task is None:
                continue
            task.last_status = request.get("last_status", "STOPPED")
            if task.last_status == "STOPPED":
                task.desired_status = "STOPPED"
                task.stopped_reason = request.get("reason") or ""
                task.stop_code = request.get("stop_code")
                for container in task.containers:
                    container.last_status = "STOPPED"
                    container.exitCode = request.get("exit_codes", {}).get(container.name, request.get("exit_code"))
                    container.reason = request.get("container_reason")
            return 200, {}
        return 404, {"message": f"no task {request['arn']}"}
    if path == "/offload-test/log":
        logs = logs_backends[ACCOUNT][REGION]
        logs.ensure_log_stream(LOG_GROUP, request["stream"])
        now = int(time.time() * 1000)
        events = [{"timestamp": now, "message": line} for line in request["lines"]]
        logs.put_log_events(LOG_GROUP, request["stream"], events)
        return 200, {}
    if path == "/offload-test/fault":
        with lock:
            faults.setdefault(request["target"], []).extend(
                [(request.get("status", 400), request["body"])] * request.get("times", 1)
            )
        return 200, {}
    if path == "/offload-test/faults/clear":
        with lock:
            faults.clear()
        return 200, {}
    return 404, {"message": f"no control {path}"}


def application(backend_app):
    def app(environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path.startswith("/offload-test/"):
            length = int(environ.get("CONTENT_LENGTH") or 0)
            status, body = control(path, json.loads(environ["wsgi.input"].read(length) or b"{}"))
            start_response(f"{status} X", [("Content-Type", "application/json")])
            return [json.dumps(body).encode()]
        action = environ.get("HTTP_X_AMZ_TARGET", "").rpartition(".")[2]
        with lock:
            fault = faults.get(action, []) and faults[action].pop(0)
        if fault:
            status, body = fault
            start_response(f"{status} X", [("Content-Type", "application/x-amz-json-1.1")])
            return [json.dumps(body).encode()]
        if action == "RunTask":
            return run_task_once(backend_app, environ, start_response)
        return backend_app(environ, start_response)

    return app


answered = {}  # RunTask clientToken -> (status, headers, body) of its first answer
token_locks = {}  # clientToken -> the lock its requests take turns under


def run_task_once(backend_app, environ, start_response):
    """RunTask as ECS makes it idempotent: a request with a clientToken seen before gets the
    first request's answer and starts nothing (moto ignores the token). A second request
    with the token waits while the first is still being answered."""
    length = int(environ.get("CONTENT_LENGTH") or 0)
    raw = environ["wsgi.input"].read(length)
    token = (json.loads(raw or b"{}") or {}).get("clientToken")
    environ["wsgi.input"] = io.BytesIO(raw)
    if not token:
        return backend_app(environ, start_response)
    with lock:
        token_lock = token_locks.setdefault(token, threading.Lock())
    with token_lock:
        if token not in answered:
            captured = {}

            def capture(status, headers, exc_info=None):
                captured["status"], captured["headers"] = status, headers

            body = b"".join(backend_app(environ, capture))
            if not captured["status"].startswith("200"):
                start_response(captured["status"], captured["headers"])
                return [body]
            answered[token] = (captured["status"], captured["headers"], body)
        status, headers, body = answered[token]
    start_response(status, headers)
    return [body]


def main():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = make_server("127.0.0.1", port, application(DomainDispatcherApplication(create_backend_app)),
                         threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{port}"
    aws = dict(endpoint_url=endpoint, region_name=REGION)
    ec2 = boto3.client("ec2", **aws)
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.0.0/20")["Subnet"]["SubnetId"]
    group = ec2.create_security_group(GroupName="offload", Description="offload tests", VpcId=vpc)["GroupId"]
    boto3.client("ecs", **aws).create_cluster(clusterName="offload")
    boto3.client("logs", **aws).create_log_group(logGroupName=LOG_GROUP)
    # Tasks move only when a test says so.
    urllib.request.urlopen(urllib.request.Request(
        f"{endpoint}/moto-api/state-manager/set-transition", method="POST",
        data=json.dumps({"model_name": "ecs::task", "transition": {"progression": "manual", "times": 1000000}}).encode(),
    )).read()
    print(json.dumps({"endpoint": endpoint, "region": REGION, "subnet": subnet, "security_group": group,
                      "cluster": "offload", "log_group": LOG_GROUP}), flush=True)
    sys.stdin.read()  # until the test closes our stdin (or dies)


if __name__ == "__main__":
    main()
