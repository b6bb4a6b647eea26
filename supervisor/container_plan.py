"""What to do with a service's container: a pure function of the wanted config and what the
engine reports, so every choice is tested without an engine.

The runner looks the container up, asks `plan_start` (or `plan_ahead` while the dependencies
are on their way up) and carries the plan out. Which image a runner is given (an update's exact
ID, a rollback's pin) is decided here too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from supervisor.docker_types import ContainerInfo
from supervisor.spec import (
    LABEL_PINNED_IMAGE,
    LABEL_PINNED_REFERENCE,
    LABEL_REJECTED_IMAGE,
    ImageChoice,
)


@dataclass(frozen=True)
class Adopt:
    """It runs with the current config already (the daemon restarted): take it over."""

    container_id: str


@dataclass(frozen=True)
class Start:
    """It exists, stopped, with the current config: start it."""

    container_id: str


@dataclass(frozen=True)
class Recreate:
    """It was made from another config (or cannot start any more): remove it (stopping it
    first if it runs), then create and start a new one."""

    container_id: str
    stop_first: bool
    why: str


@dataclass(frozen=True)
class Create:
    """There is none: create one (its image first) and start it."""


@dataclass(frozen=True)
class KeepCompleted:
    """A job that finished with 0 after what it depends on was created: done, not run again."""

    container_id: str


@dataclass(frozen=True)
class Nothing:
    """Leave it as it is."""


Plan = Adopt | Start | Recreate | Create | KeepCompleted | Nothing


def plan_start(
    config_hash: str,
    observed: ContainerInfo | None,
    *,
    adopt_completed_job: bool = False,
    refused: bool = False,
) -> Plan:
    """How to get the service's container running with the config `config_hash` names.

    `adopt_completed_job`: the stack found the job's dependents running from before the daemon
    restarted. `refused`: the engine refused to start `observed` (not an outage): an engine
    that died during a start can leave the container's task behind in containerd, and that
    container never starts again while a new one from the same spec (same volumes) does.
    """
    if observed is None:
        return Create()
    if observed.config_hash != config_hash:
        return Recreate(observed.id, observed.running, "config changed")
    if adopt_completed_job and not observed.running and observed.exit_code == 0:
        return KeepCompleted(observed.id)
    if observed.running:
        return Adopt(observed.id)
    if refused:
        return Recreate(observed.id, False, "the engine cannot start it")
    return Start(observed.id)


def plan_ahead(config_hash: str, observed: ContainerInfo | None) -> Create | Recreate | Nothing:
    """While the dependencies come up: have a container with the current config ready, so that
    meeting them costs only a start. A running container is never touched ahead of time."""
    if observed is None:
        return Create()
    if observed.config_hash != config_hash and not observed.running:
        return Recreate(observed.id, False, "config changed")
    return Nothing()


def known_container(config_hash: str, known: tuple[str, str] | None) -> str | None:
    """The container this runner made or ran itself, if with the current config: it is started
    with no look-up first."""
    if known is not None and known[1] == config_hash:
        return known[0]
    return None


# -- images -------------------------------------------------------------------------------------

# A rollback's pin: the image a service was put back on, and the reference it was pinned for.
Pin = tuple[ImageChoice, str]


def runner_image(
    reference: str, requested: ImageChoice | None, pin: Pin | None
) -> ImageChoice | None:
    """The exact image a new runner runs: the one asked for (an update), else the pin while the
    config still names the reference it was pinned for (a reload must not bring the bad one
    back), else None (what the reference resolves to)."""
    if requested is not None:
        return requested
    if pin is not None and pin[1] == reference:
        return pin[0]
    return None


def pin_after_replace(choice: ImageChoice, reference: str) -> Pin | None:
    """A service recreated on `choice`: pinned there (a rollback) or free again (an update)."""
    return (choice, reference) if choice.pinned else None


def pin_from_labels(labels: Mapping[str, str]) -> Pin | None:
    """The pin a container carries, as a restarted daemon finds it."""
    pinned = labels.get(LABEL_PINNED_IMAGE)
    if not pinned:
        return None
    rejected = labels.get(LABEL_REJECTED_IMAGE)
    return ImageChoice(pinned, True, rejected), labels.get(LABEL_PINNED_REFERENCE, "")


def follower_image(target: str, pin: Pin | None) -> ImageChoice:
    """A `restart: true` follower recreated by an update: on its target, unless pinned."""
    return pin[0] if pin is not None else ImageChoice(target)
