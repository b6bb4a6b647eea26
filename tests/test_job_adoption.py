"""A restarted daemon adopts a completed job unless a dependency was recreated since it ran
(found by the chaos soak: a job nobody running depended on was run again on every restart)."""

from __future__ import annotations

import pytest

from supervisor.docker_api import ContainerInfo
from supervisor.stack import completed_since


def info(
    *, created: str = "", finished: str = "", running: bool = False, code: int | None = 0
) -> ContainerInfo:
    return ContainerInfo(
        id="c",
        name="n",
        service="s",
        config_hash="h",
        status="running" if running else "exited",
        running=running,
        exit_code=code,
        oom_killed=False,
        started_at="",
        finished_at=finished,
        created=created,
    )


T0 = "2026-12-01T10:00:00.100000001Z"
T1 = "2026-12-01T10:00:00.200000002Z"
T2 = "2026-12-01T10:00:01Z"
JOB = info(finished=T1)


@pytest.mark.parametrize(
    ("job", "deps", "adopted"),
    [
        (JOB, [], True),  # no dependencies: it ran, it is done
        (JOB, [info(created=T0, running=True)], True),  # dependency as it was
        (JOB, [info(created=T0, running=False)], True),  # stopped (a reboot): not recreated
        (JOB, [info(created=T2, running=True)], False),  # recreated after the job ran
        (JOB, [None], False),  # dependency gone: it will be created, the job runs after
        (info(finished=T1, code=3), [], False),  # failed: runs again
        (info(finished=T1, running=True), [], False),  # still at work
        (None, [], False),
        (info(finished="0001-01-01T00:00:00Z"), [], False),  # never finished
        (JOB, [info(created="garbage")], False),  # unreadable: not proven
    ],
)
def test_completed_since(
    job: ContainerInfo | None, deps: list[ContainerInfo | None], adopted: bool
) -> None:
    assert completed_since(job, deps) is adopted
