"""The commands that drive Docker themselves (`run`, `down`), apart from the light CLI client.

Imported only when one of them runs: the daemon's dependencies (aiohttp's server, docker-py,
prometheus) cost a third of a second to import, which `status` and `reload` should not pay.
"""

from __future__ import annotations

import asyncio
import gc
import sys
from pathlib import Path

from supervisor.api_component import api_component
from supervisor.api_setup import ApiSetupError
from supervisor.config import StackConfig
from supervisor.daemon import Component, run_daemon
from supervisor.docker_api import DockerError, DockerRuntime
from supervisor.exit_codes import EX_CONFIG, EX_FAILURE, EX_OK
from supervisor.stack import remove_stack
from supervisor.systemd import systemd_component


def run(config_path: Path, config: StackConfig) -> int:
    """The daemon in the foreground; its exit code."""
    # What runs beside the stack for the daemon's lifetime (API server, systemd notifier).
    components: list[Component] = [api_component, systemd_component()]
    try:
        return asyncio.run(run_daemon(config_path, config, components=components))
    except ApiSetupError as exc:
        print(f"cannot serve the API: {exc}", file=sys.stderr)
        return EX_CONFIG
    finally:
        # Everything is stopped and flushed; the process ends next. The interpreter's last
        # collection would walk the whole heap for nothing (0.15-0.25 s, most of the time
        # between the last container's stop and the exit): leave it out of the collector.
        gc.freeze()


def down(config: StackConfig, *, volumes: bool) -> int:
    """Stop and remove the project's containers and networks (volumes only if asked)."""

    async def remove() -> int:
        runtime = DockerRuntime()
        try:
            await remove_stack(config, runtime, volumes=volumes)
        except DockerError as exc:
            print(f"down failed: {exc}", file=sys.stderr)
            return EX_FAILURE
        finally:
            await runtime.close()
        return EX_OK

    return asyncio.run(remove())
