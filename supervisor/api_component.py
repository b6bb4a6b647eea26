"""The daemon component that serves the API: bound at once, served once its server is imported.

The address is bound and the token read before the daemon touches Docker, so a second daemon
or an unreadable token file still stops start-up with exit 78. The server itself (aiohttp and
the route modules, a quarter of a second of imports) is imported in a worker thread while the
first containers start, and serves on the bound socket from then on: connections made before
wait in the socket's backlog. systemd hears READY=1 only once it serves.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import structlog

from supervisor.api_setup import BoundApi, Liveness, bind_api, read_token
from supervisor.daemon import Supervisor
from supervisor.local_token import create_token, generated_token_path, remove_token
from supervisor.metrics import SupervisorMetrics

log = structlog.get_logger(__name__)

COMPONENT = "api"
# What the server needs, imported off the loop: the app and the HTTP probes' client.
SERVER_MODULES = ("supervisor.api", "supervisor.http_probe")


def api_component(supervisor: Supervisor) -> contextlib.AbstractAsyncContextManager[Any]:
    """Read the token and bind the address now (ApiSetupError if either fails); serve later."""
    config = supervisor.config.api
    token = read_token(config.token_file) if config.token_file is not None else None
    return _serving(supervisor, bind_api(config), token)


@contextlib.asynccontextmanager
async def _serving(
    supervisor: Supervisor, bound: BoundApi, token: str | None
) -> AsyncIterator[None]:
    # Made here, not above: whatever writes the generated token also takes it away.
    generated = None
    if token is None and supervisor.config.api.unix_path is None:
        generated, token = _generate_token(supervisor.config.api.listen)
    # Metrics observe from the start, so the first state changes are counted too.
    liveness = Liveness()
    metrics = SupervisorMetrics(
        version=supervisor.version,
        statuses=supervisor.service_statuses,
        docker_connected=lambda: supervisor.docker_connected and liveness.docker_reachable,
        services=lambda: supervisor.config.services,
        loop_lag=lambda: liveness.loop_lag,
    )
    supervisor.observers.add(metrics)
    supervisor.coming_up.add(COMPONENT)
    server = asyncio.create_task(
        _serve_when_imported(supervisor, bound, token, metrics, liveness), name="api"
    )
    try:
        yield
    finally:
        server.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await server
        bound.close()
        if generated is not None:
            remove_token(generated)


def _generate_token(listen: str) -> tuple[Path | None, str | None]:
    """A token for local clients over TCP (and its file), or none if it cannot be written."""
    path = generated_token_path(listen)
    try:
        token = create_token(path)
    except OSError as exc:
        log.warning(
            "no api.token_file and cannot write one: changes over TCP disabled",
            path=str(path),
            error=str(exc),
        )
        return None, None
    log.info("api token generated for local use", path=str(path))
    return path, token


async def _serve_when_imported(
    supervisor: Supervisor,
    bound: BoundApi,
    token: str | None,
    metrics: SupervisorMetrics,
    liveness: Liveness,
) -> None:
    try:
        for name in SERVER_MODULES:
            await asyncio.to_thread(importlib.import_module, name)
        from supervisor import api  # noqa: PLC0415 - imported above, off the loop

        app = api.daemon_app(supervisor, metrics, token, liveness)
        async with api.serve(app, supervisor.config.api, supervisor.runtime.ping, bound=bound):
            supervisor.came_up(COMPONENT)
            await asyncio.Future()  # until the daemon stops
    except Exception as exc:
        # The stack runs on without its API; systemd is not kept waiting for it.
        log.exception("api not served; the stack runs on without it", error=str(exc) or repr(exc))
        supervisor.came_up(COMPONENT)
