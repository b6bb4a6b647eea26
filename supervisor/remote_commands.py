"""CLI subcommands that talk to the running daemon: status, start, stop, restart, reload.

The daemon's address comes from `--api`, else from `api.listen` in the config (only the `api`
section is read, so no access to the stack's secret files is needed), else the default.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from supervisor.client import ApiClient, ApiRefused, ClientError, DaemonUnreachable, read_token_file
from supervisor.config import (
    DEFAULT_LISTEN,
    ConfigError,
    is_loopback_host,
    load_api_config,
    parse_duration,
)
from supervisor.exit_codes import EX_CONFIG, EX_FAILURE, EX_REFUSED, EX_UNREACHABLE, EX_USAGE
from supervisor.local_token import generated_token_path
from supervisor.status_table import reload_report, render, update_report
from supervisor.watch_commands import add_watch_commands

RELOAD_TIMEOUT = 600.0  # applying a reload may recreate containers
UPDATE_TIMEOUT = 6 * 3600.0  # pulls, backups and a health-gated recreate per service

AddCommand = Callable[[str, str], argparse.ArgumentParser]


def _client(args: argparse.Namespace, config_path: Path, config_given: bool) -> ApiClient:
    """Where the daemon listens and which token to send.

    A token the operator did not name (`api.token_file`, or the one the daemon generated) goes
    only to the address the config names or to a loopback address, never to an address typed
    after `--api`: that could be anyone's.
    """
    address, token_file = args.api, args.token_file
    configured: str | None = None
    if config_given or config_path.exists():
        try:
            api = load_api_config(config_path)
        except ConfigError:
            if address is None:
                raise
            api = None  # `--api` names the daemon; the config could only have lent a token
        if api is not None:
            configured = api.listen
            address = address or api.listen
            if token_file is None and _same_address(address, api.listen):
                token_file = api.token_file
    address = address or DEFAULT_LISTEN
    loopback = is_loopback_host(address.rpartition(":")[0])
    token = None
    if token_file is None and not address.startswith("unix://") and loopback:
        generated = generated_token_path(address)
        # The daemon made one for local use (no api.token_file configured).
        token_file = generated if generated.exists() else None
    if args.token_file is None and not (loopback or _same_address(address, configured)):
        token_file = None
    if token_file is not None and not address.startswith("unix://"):
        try:
            token = read_token_file(Path(token_file))
        except ClientError:
            # Reading is allowed to fail: GETs need no token; a POST then says why it failed.
            if args.token_file is not None:
                raise
    return ApiClient(address, token)


def _same_address(address: str, other: str | None) -> bool:
    return other is not None and address.strip().lower() == other.strip().lower()


def _run(
    args: argparse.Namespace,
    config_path: Path,
    config_given: bool,
    call: Callable[[ApiClient], int],
) -> int:
    try:
        return call(_client(args, config_path, config_given))
    except ConfigError as exc:
        print(f"invalid config {config_path}:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return EX_CONFIG
    except DaemonUnreachable as exc:
        print(f"ovpn-supervisor: {exc}", file=sys.stderr)
        return EX_UNREACHABLE
    except ApiRefused as exc:
        if exc.status == 400 and str(exc).startswith("unknown service"):
            print(f"ovpn-supervisor: {exc}", file=sys.stderr)
            return EX_USAGE
        hint = ""
        if exc.status == 401:
            hint = " (check --token-file or api.token_file)"
        print(f"ovpn-supervisor: the daemon refused: {exc}{hint}", file=sys.stderr)
        return EX_REFUSED
    except ClientError as exc:
        print(f"ovpn-supervisor: {exc}", file=sys.stderr)
        return EX_REFUSED


def _status(args: argparse.Namespace) -> Callable[[ApiClient], int]:
    def call(client: ApiClient) -> int:
        status: dict[str, Any] = client.get("/v1/status")
        if args.json:
            print(json.dumps(status, indent=2))
        else:
            colour = sys.stdout.isatty() and "NO_COLOR" not in os.environ
            print(render(status, colour=colour))
        return 0 if status["daemon"]["all_up"] else EX_FAILURE

    return call


def _command(args: argparse.Namespace) -> Callable[[ApiClient], int]:
    def call(client: ApiClient) -> int:
        answer = client.request(
            "POST", f"/v1/services/{args.service}/{args.command}", accept=(202,)
        )
        print(f"{args.command} {args.service}: accepted (was {answer['state']})")
        return 0

    return call


def _reload(args: argparse.Namespace) -> Callable[[ApiClient], int]:
    def call(client: ApiClient) -> int:
        result = client.request("POST", "/v1/reload", accept=(200, 422), timeout=RELOAD_TIMEOUT)
        if args.json:
            print(json.dumps(result, indent=2))
        else:
            print(reload_report(result))
        return 0 if result["ok"] else EX_FAILURE

    return call


def _update(args: argparse.Namespace) -> Callable[[ApiClient], int]:
    def call(client: ApiClient) -> int:
        body = {
            "services": args.services,
            "pull": args.pull,
            "dry_run": args.dry_run,
            "timeout": args.timeout,
            "backup": not args.no_backup,
        }
        result = client.request(
            "POST", "/v1/update", accept=(200, 422), timeout=UPDATE_TIMEOUT, body=body
        )
        print(json.dumps(result, indent=2) if args.json else update_report(result))
        return 0 if result["ok"] else EX_FAILURE

    return call


def _backup(args: argparse.Namespace) -> Callable[[ApiClient], int]:
    def call(client: ApiClient) -> int:
        body = {"services": args.services}
        result = client.request(
            "POST", "/v1/backup", accept=(200, 422), timeout=UPDATE_TIMEOUT, body=body
        )
        print(f"backup {'done' if result['ok'] else 'failed'}: {result['message']}")
        for file in result["files"]:
            print(f"  {file}")
        return 0 if result["ok"] else EX_FAILURE

    return call


def _restore(args: argparse.Namespace) -> Callable[[ApiClient], int]:
    def call(client: ApiClient) -> int:
        # A path is the operator's (made absolute here); a bare name is looked up by the daemon.
        backup = str(Path(args.backup).absolute()) if "/" in args.backup else args.backup
        body = {"service": args.service, "backup": backup}
        result = client.request(
            "POST", "/v1/restore", accept=(200, 422), timeout=UPDATE_TIMEOUT, body=body
        )
        print(f"restore {'done' if result['ok'] else 'failed'}: {result['message']}")
        return 0 if result["ok"] else EX_FAILURE

    return call


def _duration(text: str) -> float:
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"must be longer than 0, got {text!r}")
    return seconds


def add_commands(add: AddCommand, config_path: Callable[[argparse.Namespace], Path]) -> None:
    """Register the daemon-facing subcommands; `add` gives them --config like the others."""

    def sub(name: str, help_text: str, action: Callable[..., Callable[[ApiClient], int]]) -> Any:
        parser = add(name, help_text)
        parser.add_argument("--api", help="daemon address, HOST:PORT or unix:///path")
        parser.add_argument("--token-file", help="bearer token file (default: api.token_file)")

        def func(args: argparse.Namespace) -> int:
            return _run(args, config_path(args), args.config is not None, action(args))

        parser.set_defaults(func=func)
        return parser

    status = sub("status", "show the daemon and every service; non-zero unless all up", _status)
    status.add_argument("--json", action="store_true", help="the API's JSON, for scripts")
    for verb in ("start", "stop", "restart"):
        sub(verb, f"{verb} one service", _command).add_argument("service")
    reload = sub("reload", "re-read the config and apply it; non-zero if refused", _reload)
    reload.add_argument("--json", action="store_true", help="the result as JSON")
    add_watch_commands(sub)
    update = sub(
        "update",
        "recreate services whose image changed, health-gated; roll back what does not come up",
        _update,
    )
    update.add_argument("services", nargs="*", metavar="SERVICE", help="default: all")
    update.add_argument("--pull", action="store_true", help="pull the images first")
    update.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    update.add_argument(
        "--timeout",
        type=_duration,
        help="how long each service may take to come up (default: its start period)",
    )
    update.add_argument(
        "--no-backup", action="store_true", help="go on without the backups before migrations"
    )
    update.add_argument("--json", action="store_true", help="the result as JSON")
    backup = sub("backup", "back up services through their backup.exec", _backup)
    backup.add_argument("services", nargs="*", metavar="SERVICE", help="default: all with backup")
    restore = sub("restore", "restore a backup; the service's dependents stop meanwhile", _restore)
    restore.add_argument("service")
    restore.add_argument("backup", help="a file name in the service's backup folder, or a path")
