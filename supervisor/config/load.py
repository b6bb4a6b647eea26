"""Loading a config: file -> YAML (parsed once) -> validated, frozen `StackConfig`."""

from __future__ import annotations

import os
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from supervisor.config.checks import CrossChecks
from supervisor.config.keys import SECTION_KEYS, TOP_KEYS
from supervisor.config.model import (
    NAME_RE,
    PROJECT_RE,
    ApiConfig,
    NetworkConfig,
    ServiceConfig,
    StackConfig,
)
from supervisor.config.problems import ConfigError, ConfigProblem, KeyPath
from supervisor.config.services import ServiceReaders
from supervisor.yaml_bounds import describe_yaml_error
from supervisor.yaml_source import YamlDocument, read_yaml

__all__ = [
    "load_api_config",
    "load_config",
    "parse_config",
    "read_config_text",
    "read_document",
    "stack_from_document",
]


class _Parser(ServiceReaders, CrossChecks):
    """One parse of one config file."""

    def parse(self, document: YamlDocument) -> StackConfig | None:
        data = self.use(document)
        return None if data is None else self._stack(data)

    def parse_api(self, text: str) -> ApiConfig:
        """Only the `api` section (the CLI must not need to read the stack's secret files)."""
        data = self.document(text) or {}
        return self._api(self.mapping(data.get("api"), ("api",)))

    def _stack(self, data: dict[str, Any]) -> StackConfig | None:
        data = self.mapping(data, ())
        self.keys(data, (), TOP_KEYS, required=("version", "project"))
        version = 1
        if "version" in data:
            version = self.integer(data["version"], ("version",), 1)
            if version != 1:
                self.problem(("version",), f"unsupported version {version} (only 1 is known)")
        project = ""
        if "project" in data:
            project = self.string(data["project"], ("project",))
            if project and not PROJECT_RE.match(project):
                self.problem(
                    ("project",),
                    f"invalid project name {project!r} "
                    "(lowercase letters, digits, '_', '.', '-'; starting with a letter or digit)",
                )
        api = self._api(self.mapping(data.get("api"), ("api",)))
        if api.token_file is not None:
            api = replace(api, token_digest=self._check_token_file(api.token_file))
        systemd = self._systemd(self.mapping(data.get("systemd"), ("systemd",)))
        defaults = self._defaults(self.mapping(data.get("defaults"), ("defaults",)))
        networks = self._named(data, "networks", self._network)
        volumes = self._named(data, "volumes", self._volume)
        secrets = self._named(data, "secrets", self._secret)

        raw_services = self.mapping(data.get("services"), ("services",))
        services: dict[str, ServiceConfig] = {}
        for name, body in raw_services.items():
            path: KeyPath = ("services", name)
            if not NAME_RE.match(name):
                self.problem(
                    path,
                    f"invalid service name {name!r} "
                    "(letters, digits, '_', '.', '-'; starting with a letter or digit)",
                )
            services[name] = self._service(name, self.mapping(body, path), path, defaults)

        self._check_references(services, networks, volumes, secrets)
        self._check_dependencies(services)
        self._check_ports(services)
        update = self._update(data.get("update"), ("update",))
        backups = self.mapping(data.get("backups"), ("backups",))
        self.keys(backups, ("backups",), SECTION_KEYS["backups"])
        backups_dir = self.optional(backups, "dir", ("backups",), self.string) or _default_backups()

        if any(s.networks and "default" in s.networks for s in services.values()):
            networks.setdefault("default", NetworkConfig())
        if self.problems:
            return None
        return StackConfig(
            version=version,
            project=project,
            api=api,
            systemd=systemd,
            defaults=defaults,
            networks=networks,
            volumes=volumes,
            secrets=secrets,
            services=services,
            source=self.source,
            update=update,
            backups_dir=self.resolve(backups_dir),
        )


def _default_backups() -> str:
    """`backups/` next to the config; under systemd its state directory's, since the unit's
    sandbox (ProtectSystem=strict) keeps the config's folder read-only to the daemon."""
    state = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    return str(Path(state) / "backups") if state else "backups"


def load_config(path: str | os.PathLike[str]) -> StackConfig:
    """Read and validate a config file; relative paths in it resolve against its folder."""
    source = Path(path).absolute()
    return parse_config(read_config_text(source), source=source, base_dir=source.parent)


def read_config_text(source: Path) -> str:
    """The text of a config file; ConfigError if it cannot be read or is not UTF-8."""
    try:
        data = source.read_bytes()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigError(
            [ConfigProblem("", f"cannot read config: {reason}", str(source))]
        ) from exc
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        message = f"not UTF-8 text ({exc.reason} at byte {exc.start})"
        raise ConfigError([ConfigProblem("", message, str(source))]) from exc


def read_document(text: str, source: Path | None = None) -> YamlDocument:
    """Config text parsed (once) and indexed; ConfigError if it is not YAML or is empty."""
    file = str(source) if source is not None else None
    try:
        document = read_yaml(text)
    except yaml.YAMLError as exc:
        message, line = describe_yaml_error(exc, text)
        raise ConfigError([ConfigProblem("", message, file, line)]) from exc
    if document is None:
        raise ConfigError([ConfigProblem("", "empty config file", file, None)])
    return document


def parse_config(
    text: str, *, source: Path | None = None, base_dir: Path | None = None
) -> StackConfig:
    """Validate config text; `base_dir` (default: source's folder, else cwd) anchors paths."""
    return stack_from_document(read_document(text, source), source=source, base_dir=base_dir)


def stack_from_document(
    document: YamlDocument, *, source: Path | None = None, base_dir: Path | None = None
) -> StackConfig:
    """Validate a parsed config; ConfigError listing every problem."""
    if base_dir is None:
        base_dir = source.parent if source is not None else Path.cwd()
    parser = _Parser(source, Path(base_dir).absolute())
    stack = parser.parse(document)
    if parser.problems or stack is None:
        raise ConfigError(parser.problems)
    return stack


def load_api_config(path: str | os.PathLike[str]) -> ApiConfig:
    """Read only the `api` section of a config file (for the CLI); ConfigError if invalid."""
    source = Path(path).absolute()
    try:
        text = source.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([ConfigProblem("", f"cannot read config: {exc}", str(source))]) from exc
    parser = _Parser(source, source.parent)
    api = parser.parse_api(text)
    if parser.problems:
        # A file broken elsewhere may still say where the daemon listens: `reload` must reach
        # the daemon to have the broken config refused (and the refusal shown) there.
        salvaged = _api_block(text)
        if salvaged is not None:
            retry = _Parser(source, source.parent)
            api = retry.parse_api(salvaged)
            if not retry.problems:
                return api
        raise ConfigError(parser.problems)
    return api


def _api_block(text: str) -> str | None:
    """The top-level `api:` block of a config on its own, if it has one."""
    lines = text.splitlines()
    for start, line in enumerate(lines):
        if re.match(r"^api\s*:", line):
            end = start + 1
            while end < len(lines) and (not lines[end].strip() or lines[end][0] in " \t#"):
                end += 1
            return "\n".join(lines[start:end]) + "\n"
    return None
