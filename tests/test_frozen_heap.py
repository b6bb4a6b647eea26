"""`frozen_heap`: while the stack runs, the cyclic GC leaves what start-up made alone."""

from __future__ import annotations

import gc
import weakref

from supervisor.daemon import frozen_heap


class _Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cyclic collector can free it


def test_start_up_objects_are_frozen_while_the_stack_runs_and_thawed_after() -> None:
    before = gc.get_freeze_count()
    kept = _Node()
    garbage = weakref.ref(_Node())  # start-up garbage: collected, not frozen in for good
    with frozen_heap():
        assert garbage() is None
        frozen = gc.get_freeze_count()
        assert frozen > before
        assert not any(isinstance(o, _Node) for o in gc.get_objects())  # kept is frozen
        later = _Node()
        assert any(o is later for o in gc.get_objects())  # new objects are tracked as ever
    assert gc.get_freeze_count() == before
    assert any(o is kept for o in gc.get_objects())
