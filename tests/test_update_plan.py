"""The update plan: which services change, in which order, what follows, what is backed up."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from supervisor.config import StackConfig, parse_config
from supervisor.update_plan import (
    ServiceImages,
    StepKind,
    UnknownServices,
    describe,
    plan_update,
)

CONFIG = """
version: 1
project: p
services:
  db:
    image: db:15
    health: {exec: [pg_isready]}
    backup: {exec: [pg_dump, app]}
  migrate:
    image: app:latest
    type: job
    depends_on: {db: healthy}
  app:
    image: app:latest
    health: {http: {port: 80}}
    depends_on:
      migrate: completed
      db: {condition: healthy, restart: true}
  web:
    image: web:latest
    depends_on: {app: {condition: healthy, restart: true}}
  cron:
    image: app:latest
    depends_on: {app: started}
  other:
    image: other:1
  seed:
    image: seed:latest
    type: job
    depends_on: {db: healthy}
  reports:
    image: reports:latest
    depends_on: {seed: completed}
"""

OLD, NEW = "sha256:" + "a" * 64, "sha256:" + "b" * 64


@pytest.fixture(scope="module")
def config() -> StackConfig:
    return parse_config(CONFIG)


def images(changed: set[str], **special: ServiceImages) -> dict[str, ServiceImages]:
    """Every service runs OLD; the `changed` ones resolve to NEW now."""
    names = ("db", "migrate", "app", "web", "cron", "other", "seed", "reports")
    out = {n: ServiceImages(OLD, NEW if n in changed else OLD) for n in names}
    out.update(special)
    return out


@dataclass(frozen=True)
class Case:
    name: str
    changed: set[str]
    steps: list[tuple[str, StepKind]]
    requested: tuple[str, ...] = ()
    backups: tuple[str, ...] = ()
    skipped: dict[str, str] = field(default_factory=dict)
    special: dict[str, ServiceImages] = field(default_factory=dict)


R, J, F = StepKind.RECREATE, StepKind.RERUN_JOB, StepKind.RESTART
CASES = [
    Case("nothing changed", set(), []),
    Case(
        "app image: migration first, then the app, its restart:true follower, the other user",
        {"migrate", "app", "cron"},
        [("migrate", J), ("app", R), ("web", F), ("cron", R)],
        backups=("db",),
    ),
    Case(
        "database image: restart:true dependents follow, transitively; jobs do not rerun",
        {"db"},
        [("db", R), ("app", F), ("web", F)],
    ),
    Case(
        "one service named: only it and its migration",
        {"migrate", "app", "cron", "other"},
        [("migrate", J), ("app", R), ("web", F)],
        requested=("app",),
        backups=("db",),
    ),
    Case(
        "a job's image changed on its own: it reruns, after a backup of its database",
        {"seed"},
        [("seed", J)],
        backups=("db",),
    ),
    Case(
        "app changed, its migration's image did not: no rerun, no backup",
        {"app"},
        [("app", R), ("web", F)],
    ),
    Case(
        "failed pull of the shared image: the app and its job stay as they are",
        {"other"},
        [("other", R)],
        skipped={"migrate": "pull failed: no registry", "app": "pull failed: no registry"},
        special={
            "migrate": ServiceImages(OLD, OLD, "no registry"),
            "app": ServiceImages(OLD, NEW, "no registry"),
        },
    ),
    Case(
        "the job's own pull failed: the app must not run ahead of its migration",
        {"reports"},
        [],
        skipped={"seed": "pull failed: down", "reports": "waits for seed, whose pull failed"},
        special={"seed": ServiceImages(OLD, OLD, "down")},
    ),
    Case(
        "no container yet: nothing to update there",
        {"other"},
        [],
        skipped={"other": "no container yet (it starts on the current image)"},
        special={"other": ServiceImages(None, NEW)},
    ),
    Case(
        "the image it was rolled back from: left alone, quietly, unless named",
        {"other"},
        [],
        skipped={"other": "bbbbbbbbbbbb was rolled back before; name it to try again"},
        special={"other": ServiceImages(OLD, NEW, rejected=NEW)},
    ),
    Case(
        "named, the rejected image is tried again",
        {"other"},
        [("other", R)],
        requested=("other",),
        special={"other": ServiceImages(OLD, NEW, rejected=NEW)},
    ),
    Case(
        "a newer image than the rejected one is an update like any other",
        {"other"},
        [("other", R)],
        special={"other": ServiceImages(OLD, NEW, rejected="sha256:" + "c" * 64)},
    ),
    Case(
        "image gone locally: reported, left alone",
        set(),
        [],
        skipped={"other": "image other:1 is not present"},
        special={"other": ServiceImages(OLD, None)},
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_plan(config: StackConfig, case: Case) -> None:
    plan = plan_update(config, images(case.changed, **case.special), case.requested)
    assert [(s.service, s.kind) for s in plan.steps] == case.steps
    assert plan.backups == case.backups
    assert {s.service: s.reason for s in plan.skipped} == case.skipped
    for skipped in plan.skipped:  # reported as an outcome, unless nothing is wrong
        quiet = skipped.reason.startswith("no container yet") or "rolled back" in skipped.reason
        assert skipped.problem is not quiet
    for step in plan.steps:
        if step.kind is StepKind.RESTART:
            assert step.old_image == step.new_image == OLD  # a follower keeps its image
        else:
            assert (step.old_image, step.new_image) == (OLD, NEW)


def test_reasons_say_why(config: StackConfig) -> None:
    plan = plan_update(config, images({"migrate", "app"}))
    reasons = {s.service: s.reason for s in plan.steps}
    assert reasons == {
        "migrate": "migration before app",
        "app": "image changed",
        "web": "follows app (restart: true)",
    }
    lines = describe(plan)
    assert lines[0] == "back up db"
    assert lines[1] == "1. rerun-job migrate (aaaaaaaaaaaa -> bbbbbbbbbbbb): migration before app"


def test_a_pinned_service_whose_reference_still_points_at_the_pin_is_left_alone(
    config: StackConfig,
) -> None:
    # Rolled back to OLD and pinned; the tag was moved back to OLD: nothing to do.
    assert plan_update(config, images(set())).empty


def test_unknown_services_are_named(config: StackConfig) -> None:
    with pytest.raises(UnknownServices, match="unknown services nope, nada"):
        plan_update(config, images(set()), ("app", "nope", "nada"))


def test_empty_plan_says_so(config: StackConfig) -> None:
    assert describe(plan_update(config, images(set()))) == [
        "nothing to update: every image is current"
    ]
