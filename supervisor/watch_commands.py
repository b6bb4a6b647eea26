"""CLI subcommands that watch the stack through the daemon: `events` and `logs`.

Both go through the daemon's API, not to the Docker Engine: the operator needs no docker group
membership (root-equivalent), and the API's access rules apply. `--follow` streams until the
daemon ends it or Ctrl-C, which ends it at once (exit 130, as a shell reports SIGINT).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from urllib.parse import quote, urlencode

from supervisor.client import ApiClient
from supervisor.config import parse_duration
from supervisor.exit_codes import EX_INTERRUPTED

Command = Callable[[ApiClient], int]
SubCommand = Callable[[str, str, Callable[[argparse.Namespace], Command]], argparse.ArgumentParser]


def since_argument(text: str) -> float:
    """`--since 10m`: a duration back from now, as epoch seconds (argparse: exit 2 if bad)."""
    try:
        return time.time() - parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def tail_argument(text: str) -> str:
    if text != "all" and not (text.isdigit() and int(text) <= 1_000_000):
        raise argparse.ArgumentTypeError(f"expected a number of lines or all, got {text!r}")
    return text


def sse_events(chunks: Iterable[bytes]) -> Iterator[dict[str, Any]]:
    """The `data:` payloads of a Server-Sent Events stream, decoded (comments skipped)."""
    buffer = b""
    data: list[str] = []
    for chunk in chunks:
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for raw in lines:
            line = raw.decode("utf-8", "replace").rstrip("\r")
            if line.startswith("data:"):
                data.append(line[5:].removeprefix(" "))
            elif not line and data:
                payload, data = "\n".join(data), []
                value = json.loads(payload)
                if isinstance(value, dict) and "id" in value:
                    yield value


def event_line(event: dict[str, Any]) -> str:
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(event["at"]))
    return f"{when}  {event['kind']:<12} {event['service'] or '-':<20} {event['message']}"


def _events(args: argparse.Namespace) -> Command:
    def show(event: dict[str, Any]) -> None:
        print(json.dumps(event) if args.json else event_line(event), flush=True)

    def call(client: ApiClient) -> int:
        query: dict[str, str] = {}
        if args.service:
            query["service"] = args.service
        if args.since is not None:
            query["since_time"] = f"{args.since:.3f}"
        held = client.get("/v1/events?" + urlencode(query))
        for event in held["events"]:
            show(event)
        if not args.follow:
            return 0
        live = {k: v for k, v in query.items() if k == "service"}
        live["last_event_id"] = str(held["last_id"])
        for event in sse_events(client.stream("/v1/events/stream?" + urlencode(live))):
            show(event)
        return 0

    return interruptible(call)


def _logs(args: argparse.Namespace) -> Command:
    def call(client: ApiClient) -> int:
        query = {"tail": args.tail, "timestamps": "true" if args.timestamps else "false"}
        if args.since is not None:
            query["since"] = f"{args.since:.3f}"
        path = f"/v1/services/{quote(args.service, safe='')}/logs"
        out = sys.stdout.buffer
        for chunk in client.stream(
            path + ("/stream" if args.follow else "") + "?" + urlencode(query)
        ):
            out.write(chunk)
            out.flush()
        return 0

    return interruptible(call)


def interruptible(call: Command) -> Command:
    """Ctrl-C ends the command at once, without a traceback."""

    def run(client: ApiClient) -> int:
        try:
            return call(client)
        except KeyboardInterrupt:
            return EX_INTERRUPTED
        except BrokenPipeError:
            return 0  # `| head`: the reader has all it wanted

    return run


def add_watch_commands(sub: SubCommand) -> None:
    """Register `events` and `logs` (through `remote_commands`' `sub`: --api, --token-file)."""
    events = sub("events", "show the daemon's event history; --follow for live events", _events)
    events.add_argument("-f", "--follow", action="store_true", help="then print live events")
    events.add_argument(
        "--since", type=since_argument, help="only events of this long ago or newer (e.g. 10m)"
    )
    events.add_argument("--service", help="only events of this service")
    events.add_argument("--json", action="store_true", help="one JSON object per line")
    logs = sub("logs", "show a service's container output (also of a stopped one)", _logs)
    logs.add_argument("service")
    logs.add_argument("-f", "--follow", action="store_true", help="then follow new output")
    logs.add_argument("--tail", type=tail_argument, default="all", help="last N lines (or all)")
    logs.add_argument("--since", type=since_argument, help="only output this recent (e.g. 10m)")
    logs.add_argument("--timestamps", action="store_true", help="prefix each line with its time")
