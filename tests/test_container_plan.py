"""The container plan, table-driven: (wanted config, what the engine has, facts) -> plan."""

from __future__ import annotations

from typing import Any

import pytest

from supervisor.container_plan import (
    Adopt,
    Create,
    KeepCompleted,
    Nothing,
    Plan,
    Recreate,
    Start,
    follower_image,
    known_container,
    pin_after_replace,
    pin_from_labels,
    plan_ahead,
    plan_start,
    runner_image,
)
from supervisor.docker_api import ContainerInfo
from supervisor.spec import (
    LABEL_PINNED_IMAGE,
    LABEL_PINNED_REFERENCE,
    LABEL_REJECTED_IMAGE,
    ImageChoice,
)

HASH = "h-now"


def seen(
    *, hash_: str = HASH, running: bool = False, exit_code: int | None = None
) -> ContainerInfo:
    return ContainerInfo("cid", "p-svc", "svc", hash_, "x", running, exit_code, False, "", "")


RUNNING = seen(running=True)
STOPPED = seen(exit_code=1)
EXITED_0 = seen(exit_code=0)
OLD_RUNNING = seen(hash_="h-old", running=True)
OLD_STOPPED = seen(hash_="h-old", exit_code=0)


@pytest.mark.parametrize(
    ("observed", "facts", "plan"),
    [
        (None, {}, Create()),
        (RUNNING, {}, Adopt("cid")),
        (STOPPED, {}, Start("cid")),
        (EXITED_0, {}, Start("cid")),  # a job runs again unless proven completed
        (OLD_RUNNING, {}, Recreate("cid", True, "config changed")),
        (OLD_STOPPED, {}, Recreate("cid", False, "config changed")),
        (EXITED_0, {"adopt_completed_job": True}, KeepCompleted("cid")),
        (STOPPED, {"adopt_completed_job": True}, Start("cid")),  # failed: not completed
        (RUNNING, {"adopt_completed_job": True}, Adopt("cid")),  # still at work
        (OLD_STOPPED, {"adopt_completed_job": True}, Recreate("cid", False, "config changed")),
        (STOPPED, {"refused": True}, Recreate("cid", False, "the engine cannot start it")),
        (None, {"refused": True}, Create()),
    ],
)
def test_plan_start(observed: ContainerInfo | None, facts: dict[str, Any], plan: Plan) -> None:
    assert plan_start(HASH, observed, **facts) == plan


@pytest.mark.parametrize(
    ("observed", "plan"),
    [
        (None, Create()),
        (STOPPED, Nothing()),
        (RUNNING, Nothing()),
        (OLD_STOPPED, Recreate("cid", False, "config changed")),
        (OLD_RUNNING, Nothing()),  # never stopped ahead of time: that happens at the start
    ],
)
def test_plan_ahead(observed: ContainerInfo | None, plan: Plan) -> None:
    assert plan_ahead(HASH, observed) == plan


@pytest.mark.parametrize(
    ("known", "expected"),
    [(None, None), (("c1", HASH), "c1"), (("c1", "h-old"), None)],
)
def test_known_container_only_with_the_current_config(
    known: tuple[str, str] | None, expected: str | None
) -> None:
    assert known_container(HASH, known) == expected


PIN = (ImageChoice("sha256:old", pinned=True, rejected="sha256:new"), "app:latest")
UPDATE = ImageChoice("sha256:new")


@pytest.mark.parametrize(
    ("reference", "requested", "pin", "expected"),
    [
        ("app:latest", None, None, None),
        ("app:latest", None, PIN, PIN[0]),  # a reload keeps the rollback
        ("app:2", None, PIN, None),  # the config names another image now: the pin is over
        ("app:latest", UPDATE, PIN, UPDATE),  # an update asks for an exact image
    ],
)
def test_runner_image(
    reference: str,
    requested: ImageChoice | None,
    pin: tuple[ImageChoice, str] | None,
    expected: ImageChoice | None,
) -> None:
    assert runner_image(reference, requested, pin) == expected


def test_pins_are_set_by_a_rollback_and_cleared_by_an_update() -> None:
    assert pin_after_replace(PIN[0], "app:latest") == PIN
    assert pin_after_replace(UPDATE, "app:latest") is None


def test_a_pin_is_read_back_from_the_container_labels() -> None:
    labels = {
        LABEL_PINNED_IMAGE: "sha256:old",
        LABEL_PINNED_REFERENCE: "app:latest",
        LABEL_REJECTED_IMAGE: "sha256:new",
    }
    assert pin_from_labels(labels) == PIN
    assert pin_from_labels({}) is None


def test_a_follower_keeps_its_pin_through_an_update() -> None:
    assert follower_image("sha256:new", PIN) == PIN[0]
    assert follower_image("sha256:new", None) == UPDATE
