"""`ProbeBeat`: when a steady probe runs next, so services at one interval probe together."""

from __future__ import annotations

import pytest

from supervisor.probe_beat import ProbeBeat


@pytest.mark.parametrize(
    ("earlier", "interval", "began", "due"),
    [
        ([], 5.0, 100.0, 105.0),  # the first sets the beat: a plain fixed rate
        ([(5.0, 100.0)], 5.0, 105.0, 110.0),  # on the beat
        ([(5.0, 100.0)], 5.0, 105.3, 110.0),  # late: the next beat, no drift
        ([(5.0, 100.0)], 5.0, 104.9995, 110.0),  # a timer a hair early is still on the beat
        ([(5.0, 100.0)], 5.0, 102.0, 105.0),  # joins the running beat, sooner once
        ([(5.0, 100.0)], 5.0, 99.0, 100.0),  # began before the beat was set: still joins it
        ([(5.0, 100.0)], 2.0, 101.0, 103.0),  # another interval has a beat of its own
    ],
)
def test_the_next_probe_falls_on_the_beat_of_its_interval_and_never_later_than_interval(
    earlier: list[tuple[float, float]], interval: float, began: float, due: float
) -> None:
    beat = ProbeBeat()
    for i, b in earlier:
        beat.next_probe(i, b)
    assert beat.next_probe(interval, began) == pytest.approx(due)
    assert 0 < due - began <= interval + 0.001  # what counts as on the beat
