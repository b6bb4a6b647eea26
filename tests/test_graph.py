"""The dependency graph: levels, stop order, dependents, cycles."""

from __future__ import annotations

import pytest

from supervisor.graph import CycleError, DependencyGraph

# The production stack's shape (DESIGN.md), in declaration order.
STACK = {
    "postgres-frontend": [],
    "postgres-ct": [],
    "signing-init": [],
    "certtransparency-migrate": ["postgres-ct"],
    "frontend-migrate": ["postgres-frontend"],
    "certtransparency": ["certtransparency-migrate"],
    "signing": ["signing-init", "certtransparency"],
    "frontend": ["frontend-migrate", "signing"],
    "nginx": ["frontend"],
}


def test_levels_follow_dependencies_and_declaration_order() -> None:
    assert DependencyGraph(STACK).levels() == [
        ["postgres-frontend", "postgres-ct", "signing-init"],
        ["certtransparency-migrate", "frontend-migrate"],
        ["certtransparency"],
        ["signing"],
        ["frontend"],
        ["nginx"],
    ]


def test_reverse_levels_stop_dependents_first() -> None:
    levels = DependencyGraph(STACK).reverse_levels()
    assert levels == [
        ["nginx"],
        ["frontend"],
        ["frontend-migrate", "signing"],
        ["postgres-frontend", "signing-init", "certtransparency"],
        ["certtransparency-migrate"],
        ["postgres-ct"],
    ]
    stopped: set[str] = set()
    for level in levels:
        for name in level:
            # Everything that depends on `name` is already stopped.
            assert DependencyGraph(STACK).dependents_of(name) <= stopped
        stopped.update(level)


def test_direct_and_transitive_relations() -> None:
    graph = DependencyGraph(STACK)
    assert graph.names() == tuple(STACK)
    assert graph.dependencies_of("signing") == {"signing-init", "certtransparency"}
    assert graph.dependencies_of("postgres-ct") == frozenset()
    assert graph.dependents_of("postgres-ct") == {"certtransparency-migrate"}
    assert graph.dependents_of("nginx") == frozenset()
    assert graph.transitive_dependents("postgres-ct") == {
        "certtransparency-migrate",
        "certtransparency",
        "signing",
        "frontend",
        "nginx",
    }
    assert graph.transitive_dependents("nginx") == frozenset()
    assert graph.transitive_dependencies("signing") == {
        "signing-init",
        "certtransparency",
        "certtransparency-migrate",
        "postgres-ct",
    }


def test_empty_graph() -> None:
    graph = DependencyGraph({})
    assert graph.levels() == []
    assert graph.reverse_levels() == []
    assert graph.find_cycle() is None
    assert graph.names() == ()


def test_repeated_dependency_counts_once() -> None:
    graph = DependencyGraph({"a": [], "b": ["a", "a"]})
    assert graph.levels() == [["a"], ["b"]]
    assert graph.dependents_of("a") == {"b"}


def test_acyclic_has_no_cycle() -> None:
    assert DependencyGraph(STACK).find_cycle() is None
    # A diamond shares a dependency without being a cycle.
    assert DependencyGraph({"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"]}).find_cycle() is None


def test_find_cycle_is_closed_and_deterministic() -> None:
    graph = DependencyGraph({"x": [], "a": ["x", "b"], "b": ["c"], "c": ["a"]})
    assert graph.find_cycle() == ("a", "b", "c", "a")
    assert graph.find_cycle() == ("a", "b", "c", "a")


def test_find_cycle_starts_where_the_walk_meets_it() -> None:
    # The walk from "entry" reaches the cycle at b: the cycle is reported from b.
    graph = DependencyGraph({"entry": ["b"], "b": ["c"], "c": ["b"]})
    assert graph.find_cycle() == ("b", "c", "b")


def test_self_dependency_is_a_cycle() -> None:
    assert DependencyGraph({"a": ["a"]}).find_cycle() == ("a", "a")


@pytest.mark.parametrize("method", ["levels", "reverse_levels"])
def test_levels_raise_on_cycle(method: str) -> None:
    graph = DependencyGraph({"a": ["b"], "b": ["a"]})
    with pytest.raises(CycleError) as info:
        getattr(graph, method)()
    assert info.value.cycle == ("a", "b", "a")
    assert str(info.value) == "dependency cycle a -> b -> a"


def test_unknown_dependency_is_refused() -> None:
    with pytest.raises(ValueError, match=r"unknown service: a -> ghost"):
        DependencyGraph({"a": ["ghost"]})


def test_unknown_name_lookup_raises_key_error() -> None:
    with pytest.raises(KeyError):
        DependencyGraph({"a": []}).dependents_of("ghost")


def test_long_chain() -> None:
    names = [f"s{i}" for i in range(3000)]
    deps = {name: [names[i - 1]] if i else [] for i, name in enumerate(names)}
    levels = DependencyGraph(deps).levels()
    assert levels == [[name] for name in names]
