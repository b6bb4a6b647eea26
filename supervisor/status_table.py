"""`ovpn-supervisor status` rendering: a table like `docker compose ps`, ANSI colours optional."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from supervisor.config import ServiceType
from supervisor.model import CONTAINER_UP, State

GREEN, YELLOW, RED, DIM, BOLD, RESET = (
    "\033[32m",
    "\033[33m",
    "\033[31m",
    "\033[2m",
    "\033[1m",
    "\033[0m",
)
# Keyed by the daemon's own state names (a StrEnum looks up by its plain string too).
_STATE_COLOUR: dict[str, str] = {
    State.HEALTHY: GREEN,
    State.RUNNING: GREEN,
    State.COMPLETED: GREEN,
    State.PENDING: YELLOW,
    State.STARTING: YELLOW,
    State.RESTARTING: YELLOW,
    State.STOPPING: YELLOW,
    State.UNHEALTHY: RED,
    State.FAILED: RED,
    State.BLOCKED: RED,
    State.STOPPED: DIM,
}
COLUMNS = ("SERVICE", "STATE", "HEALTH", "UPTIME", "RESTARTS", "LAST ERROR")


def state_colour(state: str) -> str:
    """The colour of a state's row ("" for a state this client does not know)."""
    return _STATE_COLOUR.get(state, "")


def duration(seconds: float) -> str:
    """Compact duration: 45s, 3m12s, 5h03m, 2d04h."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def last_error(service: Mapping[str, Any]) -> str:
    """What went wrong last, if anything worth showing."""
    if not service["up_to_target"]:
        if service.get("blocked_by"):
            return f"blocked by {service['blocked_by']}"
        if service.get("reason"):
            return str(service["reason"])
    probe = service.get("last_probe")
    if probe and not probe["ok"]:
        return f"probe: {probe['detail']}"
    code = service.get("last_exit_code")
    if service["type"] == ServiceType.SERVICE and code not in (None, 0):
        return f"last exit {code}"
    return ""


def render(status: Mapping[str, Any], *, colour: bool, now: float | None = None) -> str:
    """The daemon's header line, the summary, and one row per service."""
    now = time.time() if now is None else now
    daemon = status["daemon"]

    def paint(text: str, code: str) -> str:
        return f"{code}{text}{RESET}" if colour and code else text

    docker = "docker connected" if daemon["docker_connected"] else "docker UNREACHABLE"
    header = (
        f"ovpn-supervisor {daemon['version']} {daemon['state']}, up "
        f"{duration(daemon['uptime_seconds'])}; config {daemon['config_file']} "
        f"({daemon['config_digest'] or 'unreadable'}); {docker}"
    )
    reload = daemon.get("last_reload")
    lines = [paint(header, BOLD)]
    if reload:
        verdict = "applied" if reload["ok"] else "REFUSED"
        ago = duration(now - reload["at"])
        lines.append(f"last reload {verdict} {ago} ago: {reload['message']}")
    lines.append(paint(daemon["summary"], GREEN if daemon["all_up"] else RED))
    rows = [COLUMNS]
    colours = [BOLD]
    for s in status["services"]:
        uptime = duration(now - s["since"]) if s["state"] in CONTAINER_UP else "-"
        rows.append(
            (
                s["name"],
                s["state"],
                s["health"],
                uptime,
                str(s["restarts"]),
                last_error(s),
            )
        )
        colours.append(state_colour(s["state"]))
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines.append("")
    for row, code in zip(rows, colours, strict=True):
        text = "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        lines.append(paint(text, code))
    return "\n".join(lines)


def reload_report(result: Mapping[str, Any]) -> str:
    """A reload's result in a few lines."""
    lines = [f"reload {'applied' if result['ok'] else 'refused'}: {result['message']}"]
    for key in ("added", "changed", "removed"):
        if result.get(key):
            lines.append(f"  {key}: {', '.join(result[key])}")
    lines.extend(f"  error: {e}" for e in result.get("errors") or ())
    return "\n".join(lines)


def update_report(result: Mapping[str, Any]) -> str:
    """An update's result: the plan when it was a dry run, else what happened to each service."""
    verdict = "dry run" if result["dry_run"] else "done" if result["ok"] else "NOT all updated"
    lines = [f"update {verdict}: {result['message']}"]
    if result["dry_run"] or not result["services"]:
        lines.extend(f"  {line}" for line in result["plan"])
    for outcome in result["services"]:
        images = f"{_image(outcome['old_image'])} -> {_image(outcome['new_image'])}"
        lines.append(f"  {outcome['service']}: {outcome['outcome']} ({images}) {outcome['reason']}")
    lines.extend(f"  backup: {file}" for file in result["backups"])
    lines.extend(f"  note: {note}" for note in result["notes"])
    return "\n".join(lines)


def _image(image: str | None) -> str:
    return (image or "none").removeprefix("sha256:")[:12]
