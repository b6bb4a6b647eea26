"""The services' dependency DAG: cycle check, start levels, stop order, dependents.

Pure: no I/O. Every result follows declaration order, so plans and messages are deterministic.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping


class CycleError(Exception):
    """The dependencies form a cycle; `cycle` is closed, e.g. ("a", "b", "a")."""

    def __init__(self, cycle: tuple[str, ...]) -> None:
        super().__init__("dependency cycle " + " -> ".join(cycle))
        self.cycle = cycle


class DependencyGraph:
    """Services and the services each one depends on."""

    def __init__(self, deps: Mapping[str, Iterable[str]]) -> None:
        # dict.fromkeys keeps declaration order and drops repeats.
        self._deps: dict[str, tuple[str, ...]] = {
            name: tuple(dict.fromkeys(targets)) for name, targets in deps.items()
        }
        unknown = [
            f"{name} -> {target}"
            for name, targets in self._deps.items()
            for target in targets
            if target not in self._deps
        ]
        if unknown:
            raise ValueError("dependency on an unknown service: " + ", ".join(unknown))
        dependents: dict[str, list[str]] = {name: [] for name in self._deps}
        for name, targets in self._deps.items():
            for target in targets:
                dependents[target].append(name)
        self._dependents = {name: tuple(users) for name, users in dependents.items()}

    def names(self) -> tuple[str, ...]:
        """All services, in declaration order."""
        return tuple(self._deps)

    def dependencies_of(self, name: str) -> frozenset[str]:
        """Services `name` depends on directly."""
        return frozenset(self._deps[name])

    def dependents_of(self, name: str) -> frozenset[str]:
        """Services that depend on `name` directly."""
        return frozenset(self._dependents[name])

    def transitive_dependents(self, name: str) -> frozenset[str]:
        """Everything that depends on `name`, directly or not (without `name` itself)."""
        return self._reach(name, self._dependents)

    def transitive_dependencies(self, name: str) -> frozenset[str]:
        """Everything `name` depends on, directly or not (without `name` itself)."""
        return self._reach(name, self._deps)

    def find_cycle(self) -> tuple[str, ...] | None:
        """The first cycle met walking services in declaration order, closed; None if acyclic."""
        done: set[str] = set()
        for root in self._deps:
            if root in done:
                continue
            # Iterative DFS: `path` is the current chain, `edges` each member's untried edges.
            path: list[str] = [root]
            on_path = {root}
            edges = [iter(self._deps[root])]
            while path:
                target = next(edges[-1], None)
                if target is None:
                    finished = path.pop()
                    on_path.discard(finished)
                    done.add(finished)
                    edges.pop()
                    continue
                if target in on_path:
                    start = path.index(target)
                    return (*path[start:], target)
                if target in done:
                    continue
                path.append(target)
                on_path.add(target)
                edges.append(iter(self._deps[target]))
        return None

    def levels(self) -> list[list[str]]:
        """Start levels: level 0 depends on nothing, level n only on levels below n."""
        return self._layers(self._deps)

    def reverse_levels(self) -> list[list[str]]:
        """Stop levels: level 0 has no dependents, level n is needed only by levels below n."""
        return self._layers(self._dependents)

    def _layers(self, edges: Mapping[str, tuple[str, ...]]) -> list[list[str]]:
        cycle = self.find_cycle()
        if cycle is not None:
            raise CycleError(cycle)
        # Longest-path layering: a service sits one level above its deepest prerequisite.
        # Explicit stack, not recursion: a long chain must not hit the recursion limit.
        depth: dict[str, int] = {}
        for root in self._deps:
            stack = [root]
            while stack:
                name = stack[-1]
                pending = [t for t in edges[name] if t not in depth]
                if pending:
                    stack.extend(pending)
                    continue
                stack.pop()
                depth[name] = 1 + max((depth[t] for t in edges[name]), default=-1)

        layers: list[list[str]] = []
        for name in self._deps:
            level = depth[name]
            while len(layers) <= level:
                layers.append([])
            layers[level].append(name)
        # Every layer is non-empty: a service at level n has a prerequisite at level n-1.
        return layers

    @staticmethod
    def _reach(name: str, edges: Mapping[str, tuple[str, ...]]) -> frozenset[str]:
        seen: set[str] = set()
        todo = list(edges[name])
        while todo:
            current = todo.pop()
            if current not in seen:
                seen.add(current)
                todo.extend(edges[current])
        seen.discard(name)
        return frozenset(seen)
