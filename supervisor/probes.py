"""Health probes: HTTP (one shared aiohttp session), TCP connect, and exec inside the container."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Protocol

import aiohttp

from supervisor.config import ExecProbe, HttpProbe, Probe, TcpProbe
from supervisor.docker_api import DockerError, ExecResult


@dataclass(frozen=True)
class ProbeResult:
    """One probe's outcome, kept for the status API."""

    ok: bool
    detail: str
    latency: float
    at: float
    status: int | None = None


@dataclass(frozen=True)
class ProbeTarget:
    """Where a probe goes: the container and the address the host reaches it on."""

    container_id: str
    address: str | None


class ExecRunner(Protocol):
    async def exec_in(self, container_id: str, argv: tuple[str, ...]) -> ExecResult: ...


class Prober:
    """Runs probes; owns the one HTTP session they share."""

    def __init__(self, exec_runner: ExecRunner) -> None:
        self._exec = exec_runner
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Prober:
        # No connection reuse: a probe must see a fresh connect, as a client would.
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(force_close=True, limit=0),
            trust_env=False,
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def probe(self, probe: Probe, target: ProbeTarget, timeout: float) -> ProbeResult:
        """Run one probe with a deadline; never raises for a failing service."""
        started = time.monotonic()
        try:
            async with asyncio.timeout(timeout):
                ok, detail, status = await self._run(probe, target)
        except TimeoutError:
            ok, detail, status = False, f"timed out after {timeout:g}s", None
        except (OSError, aiohttp.ClientError, DockerError) as exc:
            ok, detail, status = False, _describe(exc), None
        return ProbeResult(ok, detail, time.monotonic() - started, time.time(), status)

    async def _run(self, probe: Probe, target: ProbeTarget) -> tuple[bool, str, int | None]:
        if isinstance(probe, HttpProbe):
            return await self._http(probe, target)
        if isinstance(probe, TcpProbe):
            host = _require_address(target)
            _, writer = await asyncio.open_connection(host, probe.port)
            writer.close()
            await writer.wait_closed()
            return True, f"tcp {probe.port} open", None
        if isinstance(probe, ExecProbe):
            result = await self._exec.exec_in(target.container_id, probe.command)
            return result.exit_code == 0, f"exit {result.exit_code}", None
        raise TypeError(f"unknown probe {probe!r}")

    async def _http(self, probe: HttpProbe, target: ProbeTarget) -> tuple[bool, str, int | None]:
        assert self._session is not None, "Prober used outside `async with`"
        url = probe.url or f"http://{_require_address(target)}:{probe.port}{probe.path}"
        async with self._session.get(url, allow_redirects=False) as response:
            await response.read()
            return 200 <= response.status < 300, f"HTTP {response.status}", response.status


def _require_address(target: ProbeTarget) -> str:
    if not target.address:
        raise OSError("container has no reachable address")
    return target.address


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:200]
