"""A shared beat for steady-state health probes: every service probing at the same interval
probes at the same moments, so 50 services wake the daemon once a second, not 50 times.

Each wake-up of the event loop costs far more than the probe's own work once the process has
slept (a cold cache, an epoll round trip per step of each probe). A burst of probes shares those
steps; probes spread over the second pay them one by one: about 2.5x the CPU per probe.
"""

from __future__ import annotations

import math

# A probe that began this little before a beat counts as on it: the loop's timers may fire a
# hair early, and the float arithmetic of `phase + n * interval` is not exact.
_ON_BEAT = 0.001


class ProbeBeat:
    """Beats per interval; the first service to probe at an interval sets where they fall."""

    def __init__(self) -> None:
        self._phases: dict[float, float] = {}

    def next_probe(self, interval: float, began: float) -> float:
        """When to probe next after a steady probe that began at `began` (monotonic seconds).

        At a fixed rate on the beat: never later than `interval` after the beat the probe began
        on, so failure detection stays within `retries x interval + timeout`. A service joining
        a beat that is already running probes at its next beat, sooner than `interval` once.
        """
        phase = self._phases.setdefault(interval, began)
        beats = math.floor((began - phase + _ON_BEAT) / interval) + 1
        return phase + beats * interval
