"""Health-gated image updates: pull, plan, back up, recreate in order, roll back what fails.

The plan is pure (`update_plan.py`); this module does it against the running stack. Every step
is written to a journal first, so a daemon killed in the middle finishes or rolls back the
interrupted service when it comes back (`recover`). Backups and restores on demand live here
too: a restore stops the database's dependents around it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Protocol

import structlog

from supervisor.backups import Backup, BackupError, ExecRuntime, restore_backup, take_backup
from supervisor.config import Condition, PullPolicy, ServiceType, StackConfig
from supervisor.container_plan import follower_image
from supervisor.docker_api import ContainerInfo, DockerError
from supervisor.model import CONTAINER_UP, OperatorCommand, State
from supervisor.spec import LABEL_REJECTED_IMAGE, ImageChoice
from supervisor.stack import Stack, StackError
from supervisor.update_plan import (
    ServiceImages,
    Step,
    StepKind,
    UpdatePlan,
    check_names,
    describe,
    plan_update,
)

log = structlog.get_logger(__name__)

JOURNAL_NAME = ".update-journal.json"
ROLLBACK_REPOSITORY = "ovpn-supervisor-rollback"
START_GRACE = 2.0  # beyond the start period: the probe that lands on its edge
UNPROBED_WAIT = 30.0  # a service without a probe: how long to wait for it to run
JOB_WAIT = 300.0  # a job (a migration) without --timeout


class Outcome(StrEnum):
    UPDATED = "updated"
    ROLLED_BACK = "rolled-back"
    FAILED = "failed"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class UpdateRequest:
    """What the operator (or the schedule) asked for."""

    services: tuple[str, ...] = ()
    pull: bool = False
    dry_run: bool = False
    timeout: float | None = None  # per service; default: its start period
    backup: bool = True


@dataclass(frozen=True)
class ServiceOutcome:
    """What happened to one service."""

    service: str
    outcome: Outcome
    old_image: str | None
    new_image: str | None
    reason: str


@dataclass(frozen=True)
class UpdateResult:
    """The whole update: ok only when every planned service was updated."""

    ok: bool
    at: float  # wall-clock epoch seconds
    message: str
    dry_run: bool = False
    plan: tuple[str, ...] = ()
    services: tuple[ServiceOutcome, ...] = ()
    backups: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()


class UpdateRuntime(ExecRuntime, Protocol):
    """The part of the Docker facade updates use."""

    async def pull_image(self, image: str) -> None: ...
    async def image_id(self, image: str) -> str | None: ...
    async def tag_image(self, image: str, repository: str, tag: str) -> None: ...
    async def inspect_container(self, name_or_id: str) -> ContainerInfo | None: ...


def journal_path(config: StackConfig) -> Path:
    return config.backups_dir / JOURNAL_NAME


def _short(image: str | None) -> str:
    return (image or "none").removeprefix("sha256:")[:12]


class Updater:
    """Runs updates, backups and restores against one running stack."""

    def __init__(self, stack: Stack, runtime: UpdateRuntime) -> None:
        self._stack = stack
        self._runtime = runtime

    @property
    def config(self) -> StackConfig:
        return self._stack.config

    # -- update ---------------------------------------------------------------------------

    async def update(self, request: UpdateRequest) -> UpdateResult:
        """Pull (if asked), plan, back up, then each step gated on its target. UnknownServices
        for a name the config lacks."""
        config = self.config
        check_names(config, request.services)
        scope = self._with_jobs(request.services or tuple(config.services))
        pull_errors = {} if request.dry_run else await self._pull(scope, request.pull)
        images = await self._images(scope, pull_errors)
        plan = plan_update(config, images, request.services)
        lines = tuple(describe(plan))
        skipped = tuple(
            ServiceOutcome(s.service, Outcome.SKIPPED, images[s.service].running, None, s.reason)
            for s in plan.skipped
            if s.problem
        )
        notes: tuple[str, ...] = ()
        if request.dry_run:
            notes = ("dry run: nothing pulled, nothing changed",)
        if request.dry_run or plan.empty:
            ok = not skipped
            message = "dry run" if request.dry_run else "nothing to update"
            return UpdateResult(
                ok, time.time(), message, request.dry_run, lines, skipped, (), notes
            )
        log.info("update planned", plan=lines)
        backups: list[Backup] = []
        if request.backup:
            try:
                backups = await self._backup_before(plan)
            except BackupError as exc:
                log.error("update stopped: backup failed; nothing was changed", error=str(exc))
                return UpdateResult(
                    False,
                    time.time(),
                    f"backup failed, nothing changed: {exc} (--no-backup to go on without)",
                    plan=lines,
                    services=skipped,
                )
        elif plan.backups:
            notes += (f"no backup taken of {', '.join(plan.backups)} (--no-backup)",)
        performed, step_notes = await self._perform(plan, request.timeout)
        outcomes = (*skipped, *performed)
        ok = all(o.outcome is Outcome.UPDATED for o in outcomes)
        failed = [o for o in outcomes if o.outcome is not Outcome.UPDATED]
        message = (
            f"updated {len(outcomes)} service(s)"
            if ok
            else "; ".join(f"{o.service} {o.outcome.value}: {o.reason}" for o in failed)
        )
        return UpdateResult(
            ok,
            time.time(),
            message,
            plan=lines,
            services=tuple(outcomes),
            backups=tuple(str(b.path) for b in backups),
            notes=(*notes, *step_notes),
        )

    def _with_jobs(self, names: Sequence[str]) -> list[str]:
        """The names plus the jobs they wait for with `completed` (their migrations)."""
        services = self.config.services
        out = dict.fromkeys(names)
        for name in names:
            for dep, how in services[name].depends_on.items():
                if how.condition is Condition.COMPLETED and services[dep].type is ServiceType.JOB:
                    out.setdefault(dep)
        return list(out)

    async def _pull(self, names: Sequence[str], pull: bool) -> dict[str, str]:
        """Pull each reference once; service -> error for those whose pull failed."""
        users: dict[str, list[str]] = {}
        for name in names:
            service = self.config.services[name]
            if service.pull is PullPolicy.ALWAYS or (pull and service.pull is not PullPolicy.NEVER):
                users.setdefault(service.image, []).append(name)
        errors: dict[str, str] = {}
        for image, services in users.items():
            try:
                await self._runtime.pull_image(image)
            except DockerError as exc:
                log.warning(
                    "pull failed; those services stay as they are", image=image, error=str(exc)
                )
                errors.update(dict.fromkeys(services, str(exc)))
        return errors

    async def _images(
        self, names: Sequence[str], pull_errors: Mapping[str, str]
    ) -> dict[str, ServiceImages]:
        resolved: dict[str, str | None] = {}
        out = {}
        for name in names:
            image = self.config.services[name].image
            if image not in resolved:
                resolved[image] = await self._runtime.image_id(image)
            info = await self._runtime.inspect_container(self._stack.runners[name].spec.name)
            running = info.image_id if info is not None and info.image_id else None
            rejected = info.labels.get(LABEL_REJECTED_IMAGE) if info is not None else None
            out[name] = ServiceImages(running, resolved[image], pull_errors.get(name), rejected)
        return out

    async def _backup_before(self, plan: UpdatePlan) -> list[Backup]:
        """Every database whose migrations are about to rerun, before anything changes."""
        jobs = [s.service for s in plan.steps if s.kind is StepKind.RERUN_JOB]
        taken = []
        for name in plan.backups:
            involved = [name, *(j for j in jobs if name in self.config.services[j].depends_on)]
            taken.append(await self._backup_one(name, involved))
        return taken

    async def _backup_one(self, name: str, involved: Sequence[str]) -> Backup:
        runner = self._stack.runners[name]
        container = runner.machine.container_id
        if container is None or not runner.machine.container_up:
            raise BackupError(f"service {name}: not running ({runner.machine.state.value})")
        images: dict[str, str] = {}
        for service in involved:
            info = await self._runtime.inspect_container(self._stack.runners[service].spec.name)
            images[service] = info.image_id if info is not None else ""
        now = datetime.now().astimezone()
        return await take_backup(
            self._runtime,
            self.config.services[name],
            container,
            self.config.backups_dir,
            images,
            now,
        )

    async def _perform(
        self, plan: UpdatePlan, timeout: float | None
    ) -> tuple[list[ServiceOutcome], list[str]]:
        outcomes: list[ServiceOutcome] = []
        notes: list[str] = []
        try:
            await self._perform_steps(plan, timeout, outcomes, notes)
        except asyncio.CancelledError:
            raise  # the daemon is stopping: the journal lets its next start finish the service
        except Exception:
            self._clear_journal()
            raise
        self._clear_journal()
        return outcomes, notes

    async def _perform_steps(
        self,
        plan: UpdatePlan,
        timeout: float | None,
        outcomes: list[ServiceOutcome],
        notes: list[str],
    ) -> None:
        """Each step in order, until one fails; what happened goes into `outcomes`, `notes`."""
        jobs_ran: list[str] = []
        for step in plan.steps:
            self._write_journal(step, "updating", timeout)
            failure = await self._apply_step(step, timeout)
            if failure is None:
                outcomes.append(
                    ServiceOutcome(
                        step.service, Outcome.UPDATED, step.old_image, step.new_image, step.reason
                    )
                )
                if step.kind is StepKind.RERUN_JOB:
                    jobs_ran.append(step.service)
                log.info("service updated", service=step.service, image=_short(step.new_image))
                continue
            log.error("update step failed", service=step.service, reason=failure)
            outcome, reason = Outcome.FAILED, failure
            if step.kind is StepKind.RERUN_JOB:
                notes.append(
                    f"job {step.service} failed on the new image and cannot be undone; what "
                    "waits for it was not recreated (restore a backup if it changed data)"
                )
            elif step.kind is StepKind.RECREATE:
                self._write_journal(step, "rolling-back", timeout)
                outcome, reason = Outcome.ROLLED_BACK, await self._roll_back(step, failure, timeout)
                notes.extend(
                    f"migration {job} ran on the new image and cannot be undone: the rolled-back "
                    f"{step.service} runs its old image against the migrated database"
                    for job in jobs_ran
                )
            # A follower kept its image: there is nothing to roll back, only to report.
            outcomes.append(
                ServiceOutcome(step.service, outcome, step.old_image, step.new_image, reason)
            )
            return

    async def _apply_step(self, step: Step, timeout: float | None) -> str | None:
        """Recreate the service on its target image; None once it is up, else why not."""
        stack = self._stack
        target = step.new_image
        assert target is not None
        choice = ImageChoice(target)
        if step.kind is StepKind.RESTART:
            choice = follower_image(target, stack.pins.get(step.service))
        if step.kind is not StepKind.RESTART and step.old_image:
            await self._keep_for_rollback(step.service, step.old_image)
        try:
            await stack.replace_service(step.service, choice)
        except (DockerError, StackError) as exc:
            return f"recreating failed: {exc}"
        return await self.reach_target(step.service, timeout)

    async def _keep_for_rollback(self, service: str, image: str) -> None:
        """Tag the image it runs now, so a prune leaves the rollback target alone."""
        tag = f"{self.config.project}.{service}"[:128]
        try:
            await self._runtime.tag_image(image, ROLLBACK_REPOSITORY, tag)
        except DockerError as exc:
            log.warning("cannot tag the rollback image", service=service, error=str(exc))

    async def _roll_back(self, step: Step, failure: str, timeout: float | None) -> str:
        """Back onto the image it ran before, pinned there; its `restart: true` dependents
        follow. Returns the reason to report."""
        stack, name = self._stack, step.service
        assert step.old_image is not None
        log.warning("rolling back", service=name, image=_short(step.old_image), reason=failure)
        try:
            choice = ImageChoice(step.old_image, pinned=True, rejected=step.new_image)
            await stack.replace_service(name, choice)
        except (DockerError, StackError) as exc:
            return f"{failure}; the rollback failed too: {exc}"
        again = await self.reach_target(name, timeout)
        for dependent in sorted(stack.graph.dependents_of(name)):
            follows = self.config.services[dependent].depends_on[name].restart
            if follows and stack.board.state(dependent) in CONTAINER_UP:
                try:
                    info = await self._runtime.inspect_container(stack.runners[dependent].spec.name)
                    if dependent in stack.pins:
                        await stack.replace_service(dependent, stack.pins[dependent][0])
                    elif info is not None and info.image_id:
                        await stack.replace_service(dependent, ImageChoice(info.image_id))
                except (DockerError, StackError) as exc:
                    log.error(
                        "dependent did not follow the rollback", service=dependent, error=str(exc)
                    )
        pinned = f"rolled back to {_short(step.old_image)} (pinned)"
        if again is not None:
            return f"{failure}; {pinned}, but it is not up either: {again}"
        return f"{failure}; {pinned}"

    async def reach_target(self, name: str, timeout: float | None) -> str | None:
        """Wait until the service is where it should be: None, or why it did not get there."""
        stack = self._stack
        service = self.config.services[name]
        is_job = service.type is ServiceType.JOB
        if timeout is None:
            if is_job:
                timeout = JOB_WAIT
            elif service.health is not None:
                timeout = service.health.start_period + START_GRACE
            else:
                timeout = UNPROBED_WAIT
        bad = (
            {State.FAILED, State.BLOCKED, State.STOPPED, State.RESTARTING}
            if is_job
            else {
                State.UNHEALTHY,
                State.RESTARTING,
                State.FAILED,
                State.BLOCKED,
                State.STOPPED,
                State.STOPPING,
                State.COMPLETED,
            }
        )

        def verdict() -> tuple[str | None] | None:
            status = stack.runners[name].status()
            if status.up_to_target:
                return (None,)
            if status.state in bad:
                return (f"{status.state.value}: {status.reason}",)
            return None

        try:
            async with asyncio.timeout(timeout):
                return (await stack.board.wait_for(verdict))[0]
        except TimeoutError:
            status = stack.runners[name].status()
            goal = "completed" if is_job else "healthy" if service.health else "running"
            return f"not {goal} within {timeout:g}s (still {status.state.value})"

    # -- journal: what to finish after a crash ----------------------------------------------

    def _write_journal(self, step: Step, phase: str, timeout: float | None) -> None:
        path = journal_path(self.config)
        record = {**asdict(step), "kind": step.kind.value, "phase": phase, "timeout": timeout}
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            temporary = path.with_suffix(".tmp")
            temporary.write_text(json.dumps(record))
            temporary.replace(path)  # atomic: a crash leaves the old record or the new one
        except OSError as exc:
            log.warning("cannot write the update journal", path=str(path), error=str(exc))

    def _clear_journal(self) -> None:
        journal_path(self.config).unlink(missing_ok=True)

    async def recover(self, first_start: float) -> UpdateResult | None:
        """After a restart: finish or roll back the service an interrupted update left.

        Its dependencies come up first (within `first_start`); then it has its usual time.
        """
        path = journal_path(self.config)
        try:
            record = json.loads(path.read_text())
            step = Step(
                record["service"],
                StepKind(record["kind"]),
                record["old_image"],
                record["new_image"],
                record["reason"],
            )
            phase, timeout = str(record["phase"]), record.get("timeout")
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.error("unreadable update journal; ignored", path=str(path), error=str(exc))
            self._clear_journal()
            return None
        if step.service not in self.config.services:
            self._clear_journal()
            return None
        log.warning("finishing an interrupted update", service=step.service, phase=phase)
        board = self._stack.board
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(first_start):
                await board.wait_for(
                    lambda: True if board.state(step.service) is not State.PENDING else None
                )
        if step.kind is StepKind.RERUN_JOB:
            outcome = ServiceOutcome(
                step.service,
                Outcome.FAILED,
                step.old_image,
                step.new_image,
                "interrupted while the job ran; it cannot be undone",
            )
        elif step.kind is StepKind.RESTART:
            late = await self.reach_target(step.service, timeout)
            outcome = ServiceOutcome(
                step.service,
                Outcome.FAILED if late else Outcome.UPDATED,
                step.old_image,
                step.new_image,
                f"interrupted while following: {late or 'it is up'}",
            )
        elif phase == "updating" and await self._runs_image(step.service, step.old_image):
            outcome = ServiceOutcome(
                step.service,
                Outcome.SKIPPED,
                step.old_image,
                step.new_image,
                "interrupted before it was recreated: still on its old image",
            )
        elif phase == "updating" and await self.reach_target(step.service, timeout) is None:
            outcome = ServiceOutcome(
                step.service,
                Outcome.UPDATED,
                step.old_image,
                step.new_image,
                "interrupted update finished: it came up on the new image",
            )
        else:
            failure = (
                "interrupted update did not come up"
                if phase == "updating"
                else "interrupted rollback"
            )
            reason = await self._roll_back(step, failure, timeout)
            outcome = ServiceOutcome(
                step.service, Outcome.ROLLED_BACK, step.old_image, step.new_image, reason
            )
        self._clear_journal()
        ok = outcome.outcome is Outcome.UPDATED
        return UpdateResult(
            ok, time.time(), f"interrupted update: {outcome.reason}", services=(outcome,)
        )

    async def _runs_image(self, name: str, image: str | None) -> bool:
        info = await self._runtime.inspect_container(self._stack.runners[name].spec.name)
        return info is not None and image is not None and info.image_id == image

    # -- backups and restores on demand ------------------------------------------------------

    async def backup(self, names: Sequence[str]) -> list[Backup]:
        """`ovpn-supervisor backup [SERVICE…]`: the named services, else all with `backup`."""
        check_names(self.config, names)
        chosen = list(names) or [n for n, s in self.config.services.items() if s.backup]
        if not chosen:
            raise BackupError("no service has `backup` configured")
        return [await self._backup_one(name, [name]) for name in chosen]

    async def restore(self, name: str, source: Path) -> str:
        """Stop the service's running dependents (reverse order), restore, start them again."""
        check_names(self.config, [name])
        stack = self._stack
        runner = stack.runners[name]
        if runner.machine.container_id is None or not runner.machine.container_up:
            raise BackupError(f"service {name}: not running ({runner.machine.state.value})")
        dependents = stack.graph.transitive_dependents(name)
        # Jobs stay as they are: starting a migration again after a restore is not wanted.
        stopping = {
            d
            for d in dependents
            if self.config.services[d].type is ServiceType.SERVICE
            and stack.board.state(d) in CONTAINER_UP
        }
        log.info("restore: stopping dependents", service=name, dependents=sorted(stopping))
        await stack.stop_services(stopping)
        try:
            container = runner.machine.container_id
            assert container is not None
            output = await restore_backup(
                self._runtime, self.config.services[name], container, source
            )
        finally:
            # In dependency order, each gated on its own dependencies like at start-up.
            for dependent in stopping:
                stack.request(dependent, OperatorCommand.START)
            late = [d for d in sorted(stopping) if not await self._started_again(d)]
            log.info("restore: dependents started again", service=name, not_up=late)
        if late:
            output += f"\nnot up again yet: {', '.join(late)}"
        return output

    async def _started_again(self, name: str) -> bool:
        """After an operator start: out of STOPPED (the request is queued), then up."""
        board = self._stack.board
        try:
            async with asyncio.timeout(UNPROBED_WAIT):
                await board.wait_for(
                    lambda: True if board.state(name) is not State.STOPPED else None
                )
        except TimeoutError:
            return False
        return await self.reach_target(name, None) is None
