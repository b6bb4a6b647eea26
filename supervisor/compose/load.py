"""Importing a Compose file: read and parse it once, convert it, validate the result as ours."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import yaml

from supervisor.compose.converter import OWN_EXTENSION, Converter
from supervisor.compose.interpolation import InterpolationError, read_dotenv
from supervisor.compose.report import ComposeImport
from supervisor.config import ConfigError, ConfigProblem, StackConfig, parse_config
from supervisor.yaml_bounds import describe_yaml_error
from supervisor.yaml_source import YamlDocument, read_yaml

__all__ = ["convert_compose", "load_compose"]


def load_compose(
    path: str | os.PathLike[str],
    *,
    env_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    lenient: bool = False,
    out_dir: Path | None = None,
) -> tuple[StackConfig, ComposeImport]:
    """Convert a Compose file and validate the result; every error names a Compose line."""
    result, document = _convert(
        Path(path).absolute(), env_file=env_file, environ=environ, lenient=lenient, out_dir=out_dir
    )
    base = out_dir or result.source.parent
    try:
        stack = parse_config(result.yaml_text(), base_dir=base)
    except ConfigError as exc:
        raise ConfigError(
            ConfigProblem(p.path, p.message, str(result.source), _line(document, p.path))
            for p in exc.problems
        ) from exc
    return stack, result


def _line(document: YamlDocument, path: str) -> int | None:
    """Where the Compose file has what our config has at `path`: at the same path, or (our own
    settings: api, defaults) under the `x-ovpn-supervisor` extension."""
    line = document.line_of_text(path)
    if line is None and path:
        line = document.line_of_text(f"{OWN_EXTENSION}.{path}")
    return line


def convert_compose(
    path: str | os.PathLike[str],
    *,
    env_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    lenient: bool = False,
    out_dir: Path | None = None,
) -> ComposeImport:
    """Convert a Compose file; raise ConfigError listing every error (with its line).

    `environ` defaults to the process environment; `.env` beside the file is read unless
    `env_file` names another. Relative paths in the output are written relative to `out_dir`
    (default: the Compose file's folder), where the converted config is meant to live.
    """
    source = Path(path).absolute()
    return _convert(source, env_file=env_file, environ=environ, lenient=lenient, out_dir=out_dir)[0]


def _convert(
    source: Path,
    *,
    env_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    lenient: bool = False,
    out_dir: Path | None = None,
) -> tuple[ComposeImport, YamlDocument]:
    """The conversion and the Compose file's parsed document (whose lines locate problems)."""
    environ = dict(os.environ if environ is None else environ)
    problems: list[ConfigProblem] = []
    try:
        text = source.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        problem = ConfigProblem("", f"cannot read Compose file: {exc}", str(source))
        raise ConfigError([problem]) from exc
    try:
        document = read_yaml(text) or YamlDocument(None)
    except yaml.YAMLError as exc:
        message, line = describe_yaml_error(exc, text)
        raise ConfigError([ConfigProblem("", message, str(source), line)]) from exc
    dotenv = env_file if env_file is not None else source.parent / ".env"
    variables: dict[str, str] = {}
    if env_file is not None or dotenv.is_file():
        try:
            variables = read_dotenv(dotenv, environ)
        except OSError as exc:
            problems.append(ConfigProblem("", f"cannot read env file: {exc}", str(dotenv)))
        except (InterpolationError, UnicodeDecodeError) as exc:
            problems.append(ConfigProblem("", str(exc), str(dotenv)))
    variables.update(environ)  # the shell's environment wins over .env, as in Compose
    converter = Converter(source, out_dir or source.parent, variables, lenient, document)
    config = converter.convert(document.data)
    problems.extend(
        ConfigProblem(n.path, n.message, str(source), n.line)
        for n in converter.notes
        if n.level == "error"
    )
    if problems:
        raise ConfigError(problems)
    return ComposeImport(source, config, tuple(converter.notes)), document
