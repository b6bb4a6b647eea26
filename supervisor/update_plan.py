"""What an image update does, as a pure function of the config and the image IDs seen.

No I/O: the updater (`updates.py`) looks up image IDs (after pulling), asks `plan_update` what to
do, and performs the steps in order. Migrations come before the app that needs them, and the
`restart: true` dependents of a recreated service follow it, as they would at runtime.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from supervisor.config import Condition, ServiceType, StackConfig


class StepKind(StrEnum):
    RECREATE = "recreate"  # a long-running service, on its new image
    RERUN_JOB = "rerun-job"  # a job (a migration) runs again, on its new image
    RESTART = "restart"  # a `restart: true` dependent follows a recreated service


@dataclass(frozen=True)
class ServiceImages:
    """What one service runs and what its image reference resolves to now."""

    running: str | None  # image ID of its current container; None: no container yet
    resolved: str | None  # image ID its reference resolves to locally; None: not present
    pull_error: str | None = None  # the pull asked for failed (the service is left alone)
    rejected: str | None = None  # rolled back from this image ID before (pinned since)


@dataclass(frozen=True)
class Step:
    """One thing to do, in order."""

    service: str
    kind: StepKind
    old_image: str | None
    new_image: str | None
    reason: str


@dataclass(frozen=True)
class Skipped:
    """A service the update leaves as it is, and why."""

    service: str
    reason: str
    problem: bool = True  # worth reporting (a failed pull), not just "nothing to do here"


@dataclass(frozen=True)
class UpdatePlan:
    """Backups first (databases whose migrations rerun), then the steps in dependency order."""

    steps: tuple[Step, ...]
    backups: tuple[str, ...] = ()
    skipped: tuple[Skipped, ...] = ()
    unchanged: tuple[str, ...] = field(default=())

    @property
    def empty(self) -> bool:
        return not self.steps


class UnknownServices(ValueError):
    """Services named on the command line that the config does not have."""

    def __init__(self, names: Sequence[str]) -> None:
        super().__init__("unknown service" + ("s " if len(names) > 1 else " ") + ", ".join(names))
        self.names = tuple(names)


def check_names(config: StackConfig, names: Iterable[str]) -> None:
    """Raise UnknownServices naming every requested service the config lacks."""
    unknown = [n for n in names if n not in config.services]
    if unknown:
        raise UnknownServices(unknown)


def _short(image: str | None) -> str:
    return (image or "none").removeprefix("sha256:")[:12]


def _skip(seen: ServiceImages | None, image: str, named: bool) -> tuple[str, bool] | None:
    """Why a service is left alone (None: it is not), and whether that is worth reporting."""
    if seen is not None and seen.pull_error is not None:
        return f"pull failed: {seen.pull_error}", True
    if seen is None or seen.running is None:
        return "no container yet (it starts on the current image)", False
    if seen.resolved is None:
        return f"image {image} is not present", True
    if seen.resolved == seen.rejected and not named:
        return f"{_short(seen.resolved)} was rolled back before; name it to try again", False
    return None


def plan_update(
    config: StackConfig, images: Mapping[str, ServiceImages], requested: Sequence[str] = ()
) -> UpdatePlan:
    """The steps that bring every requested service (all when none are named) to its image.

    A service changes when its reference now resolves to another image ID than its container
    runs. Jobs a changed service waits for with `completed` rerun first when their own image
    changed too; `restart: true` dependents of a recreated service follow it (transitively).
    """
    check_names(config, requested)
    services, graph = config.services, config.graph()
    scope = list(requested) or list(services)

    def changed(name: str) -> bool:
        seen = images.get(name)
        why = _skip(seen, services[name].image, name in requested)
        return why is None and seen is not None and seen.running != seen.resolved

    skipped: dict[str, str] = {}
    quiet: set[str] = set()  # skipped with nothing wrong: not reported as an outcome
    for name in scope:
        why = _skip(images.get(name), services[name].image, name in requested)
        if why is not None:
            skipped[name] = why[0]
            if not why[1]:
                quiet.add(name)

    chosen: dict[str, str] = {}  # service -> why it is in the plan
    for name in scope:
        if changed(name):
            chosen[name] = "image changed"
    # Migrations before the app: a changed app's `completed` jobs with a changed image rerun.
    for name in list(chosen):
        for dep, how in services[name].depends_on.items():
            if how.condition is not Condition.COMPLETED:
                continue
            if services[dep].type is ServiceType.JOB and changed(dep):
                if not chosen.get(dep, "").startswith("migration"):
                    chosen[dep] = f"migration before {name}"
            elif images.get(dep, ServiceImages(None, None)).pull_error:
                # Its job could not be pulled: the app must not run ahead of its migrations.
                del chosen[name]
                skipped[name] = f"waits for {dep}, whose pull failed"
                break
    # `restart: true` dependents follow every recreated long-running service.
    followers: dict[str, str] = {}
    todo = [n for n in chosen if services[n].type is ServiceType.SERVICE]
    while todo:
        leader = todo.pop()
        for dependent in sorted(graph.dependents_of(leader)):
            if dependent in chosen or dependent in followers or dependent in skipped:
                continue
            if services[dependent].depends_on[leader].restart:
                followers[dependent] = f"follows {leader} (restart: true)"
                todo.append(dependent)

    order = [n for level in graph.levels() for n in level]
    steps: list[Step] = []
    for name in order:
        seen = images.get(name, ServiceImages(None, None))
        if name in chosen:
            kind = (
                StepKind.RERUN_JOB if services[name].type is ServiceType.JOB else StepKind.RECREATE
            )
            steps.append(Step(name, kind, seen.running, seen.resolved, chosen[name]))
        elif name in followers:
            steps.append(Step(name, StepKind.RESTART, seen.running, seen.running, followers[name]))
    jobs = [s.service for s in steps if s.kind is StepKind.RERUN_JOB]
    backups = [
        name
        for name in order
        if services[name].backup is not None
        and any(name in services[job].depends_on for job in jobs)
    ]
    planned = set(chosen) | set(followers)
    return UpdatePlan(
        steps=tuple(steps),
        backups=tuple(backups),
        skipped=tuple(
            Skipped(n, skipped[n], problem=n not in quiet)
            for n in order
            if n in skipped and n not in planned
        ),
        unchanged=tuple(n for n in order if n in scope and n not in planned and n not in skipped),
    )


def describe(plan: UpdatePlan) -> list[str]:
    """The plan as lines for the operator (dry run, logs)."""
    skips = [f"skip {s.service}: {s.reason}" for s in plan.skipped]
    if plan.empty:
        return ["nothing to update" + ("" if skips else ": every image is current"), *skips]
    lines = [f"back up {name}" for name in plan.backups]
    for index, step in enumerate(plan.steps, 1):
        images = (
            f"{_short(step.old_image)} -> {_short(step.new_image)}"
            if step.kind is not StepKind.RESTART
            else f"on {_short(step.old_image)}"
        )
        lines.append(f"{index}. {step.kind.value} {step.service} ({images}): {step.reason}")
    return [*lines, *skips]
