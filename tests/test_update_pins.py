"""A rollback pin survives what recreates runners: the daemon's survey at start-up, a reload."""

from __future__ import annotations

from typing import Any

from supervisor.config import parse_config
from supervisor.docker_api import ContainerInfo
from supervisor.spec import (
    LABEL_PINNED_IMAGE,
    LABEL_PINNED_REFERENCE,
    LABEL_REJECTED_IMAGE,
    ImageChoice,
)
from supervisor.stack import Stack

OLD = "sha256:" + "a" * 64
NEW = "sha256:" + "b" * 64
TEXT = "version: 1\nproject: p\nservices:\n  app: {image: %s}\n  db: {image: db:1}\n"


class FakeRuntime:
    def __init__(self, containers: list[ContainerInfo]) -> None:
        self.containers = containers

    async def list_project_containers(self, project: str) -> list[ContainerInfo]:
        return self.containers


def container(service: str, labels: dict[str, str]) -> ContainerInfo:
    return ContainerInfo(
        id=f"id-{service}",
        name=f"p-{service}",
        service=service,
        config_hash=None,
        status="running",
        running=True,
        exit_code=None,
        oom_killed=False,
        started_at="",
        finished_at="",
        image_id=OLD,
        labels=labels,
    )


def stack_with(runtime: Any, image: str = "app:latest") -> Stack:
    return Stack(parse_config(TEXT % image), runtime, prober=None)  # type: ignore[arg-type]


async def test_survey_reads_the_pin_and_the_runner_creates_on_the_pinned_image() -> None:
    pinned = {
        LABEL_PINNED_IMAGE: OLD,
        LABEL_PINNED_REFERENCE: "app:latest",
        LABEL_REJECTED_IMAGE: NEW,
    }
    stack = stack_with(FakeRuntime([container("app", pinned), container("db", {})]))
    await stack._survey()
    spec = stack.runners["app"].spec
    assert spec.image == OLD
    assert spec.labels[LABEL_PINNED_IMAGE] == OLD
    assert spec.labels[LABEL_REJECTED_IMAGE] == NEW  # kept when it is recreated
    assert stack.runners["db"].spec.image == "db:1"


async def test_a_reload_keeps_the_pin_unless_the_image_reference_changed() -> None:
    stack = stack_with(FakeRuntime([]))
    stack.pins["app"] = (ImageChoice(OLD, pinned=True, rejected=NEW), "app:latest")
    labels = stack._runner(stack.config, "app").spec.labels
    assert stack._runner(stack.config, "app").spec.image == OLD
    assert labels[LABEL_PINNED_IMAGE] == OLD and labels[LABEL_REJECTED_IMAGE] == NEW
    changed = parse_config(TEXT % "app:2")
    runner = stack._runner(changed, "app")
    assert runner.spec.image == "app:2"
    assert LABEL_PINNED_IMAGE not in runner.spec.labels


def test_an_update_runs_the_exact_image_id_without_a_pin() -> None:
    stack = stack_with(FakeRuntime([]))
    runner = stack._runner(stack.config, "app", ImageChoice(OLD))
    assert runner.spec.image == OLD
    assert LABEL_PINNED_IMAGE not in runner.spec.labels
    # Same container hash either way: a pinned or updated container is adopted, not recreated.
    assert runner.spec.config_hash == stack._runner(stack.config, "app").spec.config_hash
