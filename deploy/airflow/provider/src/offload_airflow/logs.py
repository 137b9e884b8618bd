"""The job's log in the task log: its new lines while the job runs, the rest when it ends.

Each read asks for the log's last lines only (`GET /v1/jobs/{id}/logs?tail=N`), so neither a
read nor what reaches the task log grows with the log. What was shown is remembered as the
digests of the last lines read (the deferred wait hands them from the trigger to the task in
its event, so no line of the log, which may hold secrets, is stored in Airflow's database);
a read shows only the lines after the place where those lines end in it. Lines identical to
earlier ones can make that place ambiguous: then a line may be shown twice, never skipped.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import httpx

from offload_airflow.hook import OffloadHook, OnPoll

#: What the task log's copy of a job's line starts with.
PREFIX = "[offload]"


def digest(line: str) -> str:
    """A line as `LogProgress.seen` remembers it."""
    return hashlib.sha256(line.encode()).hexdigest()[:16]


def unseen(seen: Sequence[str], lines: Sequence[str]) -> tuple[list[str], bool]:
    """The lines of a read that come after what `seen` (digests of the lines last shown)
    ends with, and whether lines between the two were missed (no overlap, and something
    was shown before).

    The place is where the longest run of `seen`'s last lines ends in `lines`, provided the
    run reaches back to the start of `lines` or covers all of `seen`; the earliest such
    place when several are as long.
    """
    if not seen:
        return list(lines), False
    digests = [digest(line) for line in lines]
    best, best_length = 0, 0
    for end in range(1, len(digests) + 1):
        if digests[end - 1] != seen[-1]:
            continue
        length = 1
        while length < min(end, len(seen)) and digests[end - 1 - length] == seen[-1 - length]:
            length += 1
        if length in (end, len(seen)) and length > best_length:
            best, best_length = end, length
    if best_length == 0:
        return list(lines), bool(lines)
    return list(lines[best:]), False


class LogProgress:
    """What of one job's log the task log has shown, and the reads that show the rest.

    :param job_id: the job.
    :param lines: how many of the log's last lines each poll reads.
    :param seen: digests of the lines last shown (from an earlier `LogProgress`).
    """

    def __init__(self, job_id: str, lines: int, seen: Sequence[str] | None = None):
        self.job_id = job_id
        self.lines = lines
        self.seen: list[str] = list(seen or [])

    def update(self, text: str) -> tuple[list[str], bool]:
        """The new lines of a read of the log's tail, and whether lines before them were
        missed. A last line without its newline waits for a later read."""
        read = text.splitlines()
        if text and not text.endswith("\n"):
            read = read[:-1]
        new, skipped = unseen(self.seen, read)
        if read:
            self.seen = [digest(line) for line in read[-max(self.lines, 1):]]
        return new, skipped

    def final(self, text: str) -> tuple[list[str], bool]:
        """`update` for the read made once the job has ended: its last line counts whole."""
        read = text.splitlines()
        new, skipped = unseen(self.seen, read)
        if read:
            self.seen = [digest(line) for line in read[-max(self.lines, 1):]]
        return new, skipped

    async def poll(self, hook: OffloadHook, client: httpx.AsyncClient) -> tuple[list[str], bool]:
        """Reads the log's last lines once (no retry: the next poll reads again)."""
        text = await hook.arequest(client, "GET", f"/v1/jobs/{self.job_id}/logs", retry=False,
                                   params={"tail": self.lines}, headers={"Accept": "text/plain"})
        return self.update(text if isinstance(text, str) else "")


def show(log: Any, new: Sequence[str], skipped: bool) -> None:
    """Writes a read's new lines into the task log."""
    if skipped:
        log.info("%s (earlier lines not shown)", PREFIX)
    for line in new:
        log.info("%s %s", PREFIX, line)


def progress_poll(hook: OffloadHook, progress: LogProgress | None, log: Any) -> OnPoll | None:
    """An `OffloadHook.await_job` `on_poll` that copies the job's new log lines into `log`
    (the task log); None without `progress`. Best effort: a failed read is skipped and the
    wait goes on."""
    if progress is None or progress.lines <= 0:
        return None

    async def on_poll(client: httpx.AsyncClient, job: dict[str, Any]) -> None:
        try:
            new, skipped = await progress.poll(hook, client)
        except Exception as e:  # noqa: BLE001
            log.debug("reading the log of offload job %s: %s", progress.job_id, e)
            return
        show(log, new, skipped)

    return on_poll
