"""When automatic updates are due: a fake clock walks the schedule."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from supervisor.config import UpdateSchedule, parse_config
from supervisor.update_schedule import next_update

TZ = timezone(timedelta(hours=1))


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=TZ)


@pytest.mark.parametrize(
    ("every", "hhmm", "anchor", "now", "due"),
    [
        # Daily at 04:00: started before 04:00 -> today; after -> tomorrow.
        ("24h", (4, 0), "2026-12-01 02:00", "2026-12-01 02:00", "2026-12-01 04:00"),
        ("24h", (4, 0), "2026-12-01 09:30", "2026-12-01 09:30", "2026-12-02 04:00"),
        # Exactly on the slot: the next one (a run just happened at this instant).
        ("24h", (4, 0), "2026-12-01 02:00", "2026-12-01 04:00", "2026-12-02 04:00"),
        # Days later, still on the grid.
        ("24h", (4, 0), "2026-12-01 02:00", "2026-12-05 17:00", "2026-12-06 04:00"),
        # Every 6 h anchored at 04:00: the grid runs backwards too (22:00, 16:00, 10:00, ...).
        ("6h", (4, 0), "2026-12-01 02:00", "2026-12-01 02:00", "2026-12-01 04:00"),
        ("6h", (4, 0), "2026-12-01 02:00", "2026-12-01 04:00:01", "2026-12-01 10:00"),
        ("1h", (4, 30), "2026-12-01 02:10", "2026-12-01 02:10", "2026-12-01 02:30"),
        # Without `at`: every `every` from the daemon's start.
        ("12h", None, "2026-12-01 02:10", "2026-12-01 02:10", "2026-12-01 14:10"),
        ("12h", None, "2026-12-01 02:10", "2026-12-02 03:00", "2026-12-02 14:10"),
    ],
)
def test_next_update(
    every: str, hhmm: tuple[int, int] | None, anchor: str, now: str, due: str
) -> None:
    hours = float(every.removesuffix("h"))
    schedule = UpdateSchedule(every=hours * 3600, at=hhmm)
    assert next_update(schedule, at(now), at(anchor)) == at(due)


def test_walking_a_fake_clock_runs_once_per_slot() -> None:
    schedule = UpdateSchedule(every=86400, at=(4, 0))
    anchor = now = at("2026-12-01 09:00")
    runs = []
    for _ in range(3):
        due = next_update(schedule, now, anchor)
        runs.append(due)
        now = anchor = due  # the daemon sleeps until then, runs, and re-anchors
    assert runs == [at("2026-12-02 04:00"), at("2026-12-03 04:00"), at("2026-12-04 04:00")]


def test_config_reads_the_schedule_and_defaults_to_off() -> None:
    base = "version: 1\nproject: p\nservices: {a: {image: x}}\n"
    assert parse_config(base).update is None
    config = parse_config(base + 'update: {every: 24h, at: "04:00", pull: false}\n')
    assert config.update == UpdateSchedule(every=86400.0, at=(4, 0), pull=False)
