"""py-tes (the client Snakemake's and others' TES support is built on) against the real
gateway: creating, getting in every view, listing with every filter and page, cancelling,
and a task whose inputs and outputs the filer stages."""

import json
import time
import urllib.request

import pytest
import tes
from tes.client import append_suffixes_to_url, send_request
from tes.models import ListTasksResponse
from tes.utils import unmarshal

from conftest import TOKEN


def client(gateway):
    return tes.HTTPClient(gateway.url, token=TOKEN, timeout=30)


def echo(name, tags=None, command=("echo", "hello")):
    return tes.Task(
        name=name,
        tags=tags,
        executors=[tes.Executor(image="alpine", command=list(command))],
    )


def ended(cli, task_id):
    deadline = time.time() + 60
    while True:
        task = cli.get_task(task_id, view="MINIMAL")
        if task.state in ("COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED", "PREEMPTED"):
            return cli.get_task(task_id, view="FULL")
        assert time.time() < deadline, f"{task_id} did not end: {task.state}"
        time.sleep(0.1)


def test_service_info(gateway):
    info = client(gateway).get_service_info()
    # py-tes 1.1.4 leaves `type` a dict.
    kind = info.type if isinstance(info.type, dict) else info.type.as_dict()
    assert kind == {"group": "org.ga4gh", "artifact": "tes", "version": "1.1.0"}
    assert info.storage is not None
    # py-tes 1.1.4 names it tes_resources_backend_parameters and does not read TES's
    # tesResources_backend_parameters into it: read it as sent.
    raw = urllib.request.urlopen(gateway.url + "/ga4gh/tes/v1/service-info", timeout=10)
    assert "provider" in json.load(raw)["tesResources_backend_parameters"]


def test_create_get_every_view_and_complete(gateway):
    cli = client(gateway)
    task_id = cli.create_task(echo("py-tes-first", {"suite": "py-tes"}))
    minimal = cli.get_task(task_id, view="MINIMAL")
    assert minimal.id == task_id and minimal.state is not None and minimal.name is None
    full = ended(cli, task_id)
    assert full.state == "COMPLETE"
    assert full.name == "py-tes-first"
    assert full.tags == {"suite": "py-tes"}
    log = full.logs[0].logs[0]
    assert log.exit_code == 0 and log.stdout == "hello\n"
    basic = cli.get_task(task_id, view="BASIC")
    assert basic.logs[0].logs[0].stdout is None
    assert basic.executors[0].command == ["echo", "hello"]


def test_list_with_filters_pages_and_views(gateway):
    cli = client(gateway)
    ids = [
        cli.create_task(echo("lst-a", {"group": "one", "extra": "x"})),
        cli.create_task(echo("lst-b", {"group": "two"})),
        cli.create_task(echo("other-c", {"group": "one"}, command=("sh", "-c", "exit 3"))),
    ]
    states = {i: ended(cli, i).state for i in ids}
    assert states == {ids[0]: "COMPLETE", ids[1]: "COMPLETE", ids[2]: "EXECUTOR_ERROR"}

    def listed(**params):
        """py-tes's list_tasks takes view and paging only: filters through its own request."""
        kwargs = cli._request_params(params=params)
        response = send_request(paths=append_suffixes_to_url(cli.urls, ["/tasks"]), kwargs_requests=kwargs)
        return [t.id for t in unmarshal(response.json(), ListTasksResponse).tasks]

    assert listed(name_prefix="lst-") == [ids[1], ids[0]]
    assert listed(name_prefix="lst-", state="COMPLETE") == [ids[1], ids[0]]
    assert listed(state="EXECUTOR_ERROR") == [ids[2]]
    assert listed(tag_key=["group"], tag_value=["one"]) == [ids[2], ids[0]]
    assert listed(tag_key=["group", "extra"], tag_value=["one"]) == [ids[0]]
    assert listed(tag_key=["group"], tag_value=["three"]) == []
    first = cli.list_tasks(page_size=1)
    assert [t.id for t in first.tasks] == [ids[2]]
    second = cli.list_tasks(page_size=2, page_token=first.next_page_token)
    assert [t.id for t in second.tasks] == [ids[1], ids[0]]
    for view in ("MINIMAL", "BASIC", "FULL"):
        tasks = cli.list_tasks(view=view, page_size=1).tasks
        assert [t.id for t in tasks] == [ids[2]]
        assert (tasks[0].name is None) == (view == "MINIMAL")
        assert (tasks[0].logs is not None) == (view != "MINIMAL")
    full = cli.list_tasks(view="FULL", page_size=1).tasks[0]
    assert full.logs[0].system_logs == ["exited with code 3"]
    assert full.logs[0].logs[0].exit_code == 3


def test_cancel(gateway):
    cli = client(gateway)
    task_id = cli.create_task(echo("sleeper", command=("sleep", "60")))
    deadline = time.time() + 30
    while cli.get_task(task_id).state != "RUNNING":
        assert time.time() < deadline
        time.sleep(0.05)
    cli.cancel_task(task_id)
    assert ended(cli, task_id).state == "CANCELED"
    cli.cancel_task(task_id)  # again: still 200


def test_files_are_staged_in_and_out(gateway):
    cli = client(gateway)
    (gateway.files / "in.txt").write_text("from a file\n")
    task = tes.Task(
        name="staged",
        inputs=[
            tes.Input(url=f"file://{gateway.files}/in.txt", path="/data/in.txt"),
            tes.Input(content="inline\n", path="/data/inline.txt"),
        ],
        outputs=[tes.Output(url=f"file://{gateway.files}/out/both.txt", path="/data/both.txt")],
        volumes=["/scratch"],
        executors=[
            tes.Executor(image="alpine", command=["sh", "-c", "cat /data/in.txt /data/inline.txt > /scratch/t"]),
            tes.Executor(image="alpine", command=["cp", "/scratch/t", "/data/both.txt"]),
        ],
    )
    full = ended(cli, cli.create_task(task))
    assert full.state == "COMPLETE"
    assert (gateway.files / "out" / "both.txt").read_text() == "from a file\ninline\n"
    assert [o.url for o in full.logs[0].outputs] == [f"file://{gateway.files}/out/both.txt"]
    assert len(full.logs[0].logs) == 2


def test_a_malformed_task_is_refused_naming_the_field(gateway):
    cli = client(gateway)
    bad = tes.Task(executors=[tes.Executor(image="alpine", command=["true"], workdir="relative")])
    with pytest.raises(Exception) as refused:
        cli.create_task(bad)
    problem = refused.value.response.json()
    assert refused.value.response.status_code == 400
    assert problem["errors"][0]["field"] == "executors[0].workdir"
