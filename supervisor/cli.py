"""The `ovpn-supervisor` command: run | check | down."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from supervisor import __version__
from supervisor.config import ConfigError, StackConfig, load_config
from supervisor.daemon import Component, run_daemon
from supervisor.docker_api import DockerError, DockerRuntime
from supervisor.logs import configure_logging
from supervisor.stack import remove_stack

DEFAULT_CONFIG = "/etc/ovpn-supervisor/supervisor.yaml"
CONFIG_ENV = "OVPN_SUPERVISOR_CONFIG"
EX_CONFIG = 78  # sysexits.h: configuration error; systemd must not restart-loop on it


def _config_path(args: argparse.Namespace) -> Path:
    return Path(args.config or os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG)


def _load(args: argparse.Namespace) -> StackConfig | None:
    try:
        return load_config(_config_path(args))
    except ConfigError as exc:
        print(f"invalid config {_config_path(args)}:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return None


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


def cmd_check(args: argparse.Namespace) -> int:
    config = _load(args)
    if config is None:
        return EX_CONFIG
    print(
        f"{_config_path(args)}: valid (project {config.project}, {len(config.services)} services)"
    )
    print("start plan:")
    print("\n".join(start_plan(config)))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    configure_logging(args.log_level, json=True if args.log_format == "json" else None)
    config = _load(args)
    if config is None:
        return EX_CONFIG
    # What runs beside the stack for the daemon's lifetime (API server, systemd notifier).
    components: list[Component] = []
    return asyncio.run(run_daemon(_config_path(args), config, components=components))


def cmd_down(args: argparse.Namespace) -> int:
    configure_logging(args.log_level)
    config = _load(args)
    if config is None:
        return EX_CONFIG

    async def down() -> int:
        runtime = DockerRuntime()
        try:
            await remove_stack(config, runtime, volumes=args.volumes)
        except DockerError as exc:
            print(f"down failed: {exc}", file=sys.stderr)
            return 1
        finally:
            await runtime.close()
        return 0

    return asyncio.run(down())


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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
