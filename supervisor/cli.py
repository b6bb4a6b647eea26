"""The `ovpn-supervisor` command: run | check | down | import-compose | export | schema."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from supervisor import __version__
from supervisor.config import ConfigError, ExecProbe, Probe, StackConfig, TcpProbe

# Re-exported: scripts and tests have read it from here.
from supervisor.exit_codes import EX_CONFIG as EX_CONFIG  # noqa: PLC0414 - re-export
from supervisor.logs import configure_logging
from supervisor.remote_commands import add_commands
from supervisor.stack_file import load_stack

DEFAULT_CONFIG = "/etc/ovpn-supervisor/supervisor.yaml"
CONFIG_ENV = "OVPN_SUPERVISOR_CONFIG"


def _config_path(args: argparse.Namespace) -> Path:
    return Path(args.config or os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG)


def _load(args: argparse.Namespace) -> StackConfig | None:
    try:
        # A Compose file is detected and converted with the same code as import-compose.
        return load_stack(_config_path(args))
    except ConfigError as exc:
        _print_problems(f"invalid config {_config_path(args)}:", exc)
        return None
    except Exception as exc:
        print(f"invalid config {_config_path(args)}:", file=sys.stderr)
        print(f"  cannot be read: {type(exc).__name__}: {exc}", file=sys.stderr)
        return None


def _print_problems(heading: str, exc: ConfigError) -> None:
    print(heading, file=sys.stderr)
    for problem in exc.problems:
        print(f"  {problem}", file=sys.stderr)


def start_plan(config: StackConfig) -> list[str]:
    """Human-readable start plan: one line per dependency level."""
    lines = []
    for index, level in enumerate(config.graph().levels()):
        parts = []
        for name in level:
            service = config.services[name]
            after = ", ".join(f"{dep} {d.condition.value}" for dep, d in service.depends_on.items())
            kind = " [job]" if service.type.value == "job" else ""
            parts.append(f"{name}{kind}" + (f" (after {after})" if after else ""))
        together = " in parallel" if len(level) > 1 else ""
        lines.append(f"  {index + 1}.{together}: " + "; ".join(parts))
    return lines


def probe_summary(probe: Probe) -> str:
    """One probe as `check` prints it: `https :8600/health (certificate not verified)`."""
    if isinstance(probe, TcpProbe):
        return f"tcp :{probe.port}"
    if isinstance(probe, ExecProbe):
        return "exec " + shlex.join(probe.command)
    where = probe.url or f"{probe.scheme} :{probe.port}{probe.path}"
    if probe.scheme != "https":
        return where
    if not probe.tls_verify:
        return f"{where} (certificate not verified)"
    return f"{where} (trusting {probe.ca_file})" if probe.ca_file else where


def cmd_check(args: argparse.Namespace) -> int:
    config = _load(args)
    if config is None:
        return EX_CONFIG
    print(
        f"{_config_path(args)}: valid (project {config.project}, {len(config.services)} services)"
    )
    print("start plan:")
    print("\n".join(start_plan(config)))
    probed = [(n, s.health.probe) for n, s in config.services.items() if s.health is not None]
    if probed:
        print("health probes:")
        print("\n".join(f"  {name}: {probe_summary(probe)}" for name, probe in probed))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    configure_logging(args.log_level, json=True if args.log_format == "json" else None)
    config = _load(args)
    if config is None:
        return EX_CONFIG
    from supervisor import daemon_commands  # noqa: PLC0415 - heavy; see that module

    return daemon_commands.run(_config_path(args), config)


def cmd_down(args: argparse.Namespace) -> int:
    configure_logging(args.log_level)
    config = _load(args)
    if config is None:
        return EX_CONFIG
    from supervisor import daemon_commands  # noqa: PLC0415 - heavy; see that module

    return daemon_commands.down(config, volumes=args.volumes)


def cmd_import_compose(args: argparse.Namespace) -> int:
    """Convert a Compose file; the report goes to stderr, the config to -o or stdout."""
    source = Path(args.compose_file)
    output = Path(args.output) if args.output else None
    out_dir = output.absolute().parent if output else Path.cwd()
    env_file = Path(args.env_file) if args.env_file else None
    # Imported here: `run`, `check` and `status` need none of the importer (~40 ms).
    from supervisor.compose import load_compose  # noqa: PLC0415 - see above

    try:
        # Converted and validated exactly as `check` would read the written file.
        _, result = load_compose(source, env_file=env_file, lenient=args.lenient, out_dir=out_dir)
    except ConfigError as exc:
        _print_problems(f"cannot import {source}:", exc)
        return EX_CONFIG
    except Exception as exc:
        print(f"cannot import {source}:\n  {type(exc).__name__}: {exc}", file=sys.stderr)
        return EX_CONFIG
    for note in result.notes:
        print(note, file=sys.stderr)
    text = result.yaml_text()
    if output is None:
        sys.stdout.write(text)
    else:
        # Whole or not at all: a failed write leaves no half a config behind.
        partial = output.with_name(f".{output.name}.partial")
        try:
            partial.write_text(text, encoding="utf-8")
            partial.replace(output)
        except OSError as exc:
            partial.unlink(missing_ok=True)
            print(f"cannot write {output}: {exc.strerror or exc}", file=sys.stderr)
            return 1
        print(f"wrote {output} ({len(result.config['services'])} services)", file=sys.stderr)
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    """Print the config file's JSON Schema (config/supervisor.schema.json is this output)."""
    # Imported here: building the pydantic models takes ~0.3 s that no other command needs.
    from supervisor.config.schema import schema_text  # noqa: PLC0415 - heavy, see above

    sys.stdout.write(schema_text())
    return 0


def cmd_export_kubernetes(args: argparse.Namespace) -> int:
    # Imported here: the exporter's modules are of no use to any other command.
    from supervisor.kube_output import cmd_export_kubernetes  # noqa: PLC0415 - see above

    return cmd_export_kubernetes(args, _load)


def add_export_command(commands: Any, config_help: str) -> None:
    """`export kubernetes` on the CLI's subcommands."""
    export = commands.add_parser("export", help="write the stack for another platform")
    formats = export.add_subparsers(dest="format", required=True)
    kube = formats.add_parser(
        "kubernetes", help="manifests and kustomization.yaml for the same stack on Kubernetes"
    )
    kube.add_argument("--config", "-c", help=config_help)
    kube.add_argument(
        "-o",
        "--output",
        default="kubernetes",
        help="folder to write, or - for stdout (default: ./kubernetes)",
    )
    kube.add_argument("--namespace", help="namespace (default: the project's name)")
    kube.add_argument(
        "--expose-as",
        choices=["LoadBalancer", "NodePort"],
        default="LoadBalancer",
        help="Service type for ports published beyond loopback (default: LoadBalancer)",
    )
    kube.add_argument(
        "--include-secret-values",
        action="store_true",
        help="write the secrets' values as Secret manifests (default: references only)",
    )
    kube.set_defaults(func=cmd_export_kubernetes)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ovpn-supervisor", description="Supervise the OIDC VPN Manager container stack."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument(
            "--config",
            "-c",
            help=f"config file (default: ${CONFIG_ENV} or {DEFAULT_CONFIG})",
        )
        sub.add_argument(
            "--log-level", default="info", choices=["debug", "info", "warning", "error"]
        )
        return sub

    run = add("run", "run the stack in the foreground until SIGTERM/SIGINT")
    run.add_argument("--log-format", choices=["auto", "json"], default="auto")
    run.set_defaults(func=cmd_run)
    add("check", "validate a config and print the start plan").set_defaults(func=cmd_check)
    down = add("down", "stop and remove the project's containers and networks")
    down.add_argument(
        "--volumes", action="store_true", help="also remove named volumes (deletes their data)"
    )
    down.set_defaults(func=cmd_down)
    add_commands(add, _config_path)
    imp = commands.add_parser(
        "import-compose", help="convert a Docker Compose file to an ovpn-supervisor config"
    )
    imp.add_argument("compose_file", help="the Compose file, e.g. docker-compose.yml")
    imp.add_argument(
        "--env-file", help="variables for ${VAR} interpolation (default: .env beside the file)"
    )
    imp.add_argument("-o", "--output", help="write the config here (default: stdout)")
    imp.add_argument(
        "--lenient",
        action="store_true",
        help="drop keys that cannot be honoured, with a warning, instead of failing",
    )
    imp.set_defaults(func=cmd_import_compose)
    schema = commands.add_parser("schema", help="print the config file's JSON Schema")
    schema.set_defaults(func=cmd_schema)
    add_export_command(commands, f"config file (default: ${CONFIG_ENV} or {DEFAULT_CONFIG})")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
