"""What a reload changes: a pure function of the old and the new config."""

from __future__ import annotations

from dataclasses import dataclass, replace

from supervisor.config import StackConfig, config_hash, container_hash


@dataclass(frozen=True)
class ConfigDiff:
    """Services by what a reload must do to them, plus what cannot be applied live."""

    added: tuple[str, ...]
    removed: tuple[str, ...]
    recreated: tuple[str, ...]  # the container itself changes
    updated: tuple[str, ...]  # only how it is supervised changes (probe, restart policy, …)
    unchanged: tuple[str, ...]
    not_applied: tuple[str, ...]  # top-level changes that need a daemon restart or `down`

    @property
    def changed(self) -> tuple[str, ...]:
        return self.recreated + self.updated

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.recreated or self.updated)


def diff_configs(old: StackConfig, new: StackConfig) -> ConfigDiff:
    """Compare per service by config hashes (env-file and secret contents included)."""
    added = tuple(n for n in new.services if n not in old.services)
    removed = tuple(n for n in old.services if n not in new.services)
    recreated, updated, unchanged = [], [], []
    for name in (n for n in new.services if n in old.services):
        before, after = old.services[name], new.services[name]
        if container_hash(old, before) != container_hash(new, after):
            recreated.append(name)
        elif config_hash(old, before) != config_hash(new, after):
            updated.append(name)
        else:
            unchanged.append(name)
    return ConfigDiff(
        added=added,
        removed=removed,
        recreated=tuple(recreated),
        updated=tuple(updated),
        unchanged=tuple(unchanged),
        not_applied=_not_applied(old, new),
    )


def _not_applied(old: StackConfig, new: StackConfig) -> tuple[str, ...]:
    notes = []
    if old.project != new.project:
        notes.append("project renamed: takes effect after `down` and a daemon restart")
    # The event history's length is applied live (`EventLog.resize`); the rest needs a restart,
    # and the old listener and token stay in force until then: say so, never "nothing to change".
    if replace(old.api, events_keep=0) != replace(new.api, events_keep=0):
        changed = [
            f"api.{name}"
            for name in ("listen", "token_file", "socket_mode", "socket_group", "allowed_hosts")
            if getattr(old.api, name) != getattr(new.api, name)
        ]
        if old.api.token_digest != new.api.token_digest:
            changed.append("the token in api.token_file")
        notes.append(
            f"{', '.join(changed)} changed: not applied until the daemon restarts "
            "(the old settings stay in force)"
        )
    for name in old.networks.keys() & new.networks.keys():
        if old.networks[name] != new.networks[name]:
            notes.append(
                f"network {name} redefined: an existing Docker network cannot change in place; "
                "run `ovpn-supervisor down` and start again to apply"
            )
    for name in old.volumes.keys() - new.volumes.keys():
        notes.append(f"volume {name} left the config: kept with its data (never removed)")
    return tuple(notes)
