"""When the next automatic update is due: a pure function of the schedule and the clock.

`update: {every: 24h, at: "04:00"}` runs at 04:00 local time and then every 24 h after it
(the grid is anchored at `at` on the day the daemon started); without `at`, every `every`
from the daemon's start. A run missed while the daemon was down is not made up at start-up.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from supervisor.config import UpdateSchedule


def next_update(schedule: UpdateSchedule, now: datetime, anchor: datetime) -> datetime:
    """The first slot of the schedule strictly after `now`.

    `now` and `anchor` (the daemon's start) are timezone-aware local times; slots are
    `base + k * every`, where `base` is `anchor` moved to the time of day `at`.
    """
    every = timedelta(seconds=schedule.every)
    base = anchor
    if schedule.at is not None:
        hour, minute = schedule.at
        base = anchor.replace(hour=hour, minute=minute, second=0, microsecond=0)
    if base > now:
        # The first slot of the day is still ahead (or the grid's earlier slots are).
        steps_back = math.floor((base - now) / every)
        candidate = base - steps_back * every
        return candidate if candidate > now else candidate + every
    steps = math.floor((now - base) / every) + 1
    return base + steps * every
