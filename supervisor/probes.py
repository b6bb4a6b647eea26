"""Health probes: HTTP(S) (see http_probe), TCP connect, and exec in the container."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from supervisor.config import ExecProbe, HttpProbe, Probe, TcpProbe
from supervisor.docker_api import DockerError, ExecResult
from supervisor.model import ProbeResult as ProbeResult  # noqa: PLC0414 - re-export
from supervisor.model import detail_line

if TYPE_CHECKING:
    from supervisor.http_probe import HttpProber


@dataclass(frozen=True)
class ProbeTarget:
    """Where a probe goes: the container and the address the host reaches it on."""

    container_id: str
    address: str | None


class ExecRunner(Protocol):
    async def exec_in(self, container_id: str, argv: tuple[str, ...]) -> ExecResult: ...


class Prober:
    """Runs probes; owns the HTTP prober (made at the first HTTP probe) they share."""

    def __init__(self, exec_runner: ExecRunner) -> None:
        self._exec = exec_runner
        self._http: HttpProber | None = None

    async def __aenter__(self) -> Prober:
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def probe(self, probe: Probe, target: ProbeTarget, timeout: float) -> ProbeResult:
        """Run one probe with a deadline; never raises for a failing service."""
        started = time.monotonic()
        try:
            async with asyncio.timeout(timeout):
                ok, detail, status = await self._run(probe, target)
        except TimeoutError:
            ok, detail, status = False, f"timed out after {timeout:g}s", None
        except (OSError, DockerError) as exc:
            ok, detail, status = False, _describe(exc), None
        return ProbeResult(ok, detail, time.monotonic() - started, time.time(), status)

    async def _run(self, probe: Probe, target: ProbeTarget) -> tuple[bool, str, int | None]:
        if isinstance(probe, HttpProbe):
            url = (
                probe.url or f"{probe.scheme}://{_require_address(target)}:{probe.port}{probe.path}"
            )
            return await self._http_prober().get(probe, url)
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

    def _http_prober(self) -> HttpProber:
        if self._http is None:
            # aiohttp: imported by the first HTTP probe, not by the daemon's start-up.
            from supervisor.http_probe import HttpProber  # noqa: PLC0415 - see the comment

            self._http = HttpProber()
        return self._http


def _require_address(target: ProbeTarget) -> str:
    if not target.address:
        raise OSError("container has no reachable address")
    return target.address


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    return detail_line(str(exc) or type(exc).__name__)
