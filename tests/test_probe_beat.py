"""`ProbeBeat`: when a steady probe runs next, so services at one interval probe together."""

from __future__ import annotations

import pytest

from supervisor.probe_beat import GROUP, GROUP_GAP, ProbeBeat


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
        beat.next_probe(i, b, "first")
    assert beat.next_probe(interval, began, "svc") == pytest.approx(due)
    assert 0 < due - began <= interval + 0.001  # what counts as on the beat


def test_a_beat_probes_in_bursts_of_a_group_each_service_keeping_its_burst() -> None:
    beat = ProbeBeat()
    names = [f"s{i:02d}" for i in range(2 * GROUP + 1)]
    due = {n: beat.next_probe(1.0, 100.0 + i * 0.013, n) for i, n in enumerate(names)}
    bursts = sorted(set(due.values()))
    assert bursts == pytest.approx([101.0, 101.0 + GROUP_GAP, 101.0 + 2 * GROUP_GAP])
    assert [sum(1 for d in due.values() if d == b) for b in bursts] == [GROUP, GROUP, 1]
    # On its burst, each service stays there, a whole interval on.
    again = {n: beat.next_probe(1.0, d, n) for n, d in due.items()}
    assert all(again[n] == pytest.approx(due[n] + 1.0) for n in names)


def test_bursts_wrap_within_a_short_interval() -> None:
    beat = ProbeBeat()
    interval = 2 * GROUP_GAP  # room for two bursts
    for i in range(2 * GROUP):
        beat.next_probe(interval, 100.0, f"s{i}")
    assert beat.next_probe(interval, 100.0, "late") == pytest.approx(100.0 + interval)
