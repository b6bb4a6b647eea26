"""Health probes: HTTP(S) (one shared aiohttp session), TCP connect, and exec in the container."""

from __future__ import annotations

import asyncio
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import aiohttp

from supervisor.config import ExecProbe, HttpProbe, Probe, TcpProbe
from supervisor.docker_api import DockerError, ExecResult
from supervisor.model import ProbeResult as ProbeResult  # noqa: PLC0414 - re-export


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
        # One SSL context per distinct TLS setting, built once: building one reads CA files.
        self._tls_contexts: dict[_TlsKey, ssl.SSLContext] = {}

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
        url = probe.url or f"{probe.scheme}://{_require_address(target)}:{probe.port}{probe.path}"
        tls: ssl.SSLContext | bool = True
        if probe.scheme == "https":
            tls = await self._tls_context(probe)
        try:
            async with self._session.get(url, allow_redirects=False, ssl=tls) as response:
                await response.read()
        except aiohttp.ServerDisconnectedError as exc:
            if probe.scheme == "http":
                # What a TLS server does with a plain-HTTP request: hint at the likely fix.
                raise OSError(
                    "server disconnected without answering (an HTTPS port? set scheme: https)"
                ) from exc
            raise
        label = probe.scheme.upper()
        return 200 <= response.status < 300, f"{label} {response.status}", response.status

    async def _tls_context(self, probe: HttpProbe) -> ssl.SSLContext:
        key = _TlsKey(probe.tls_verify, probe.ca_file, probe.ca_digest, probe.url is not None)
        context = self._tls_contexts.get(key)
        if context is None:
            # Reads the CA bundle (or the system's): off the event loop.
            context = await asyncio.to_thread(_build_tls_context, key)
            self._tls_contexts[key] = context
        return context


@dataclass(frozen=True)
class _TlsKey:
    """What an SSL context depends on; `ca_digest` makes an edited CA bundle a new context."""

    verify: bool
    ca_file: Path | None
    ca_digest: str | None
    check_hostname: bool


def _build_tls_context(key: _TlsKey) -> ssl.SSLContext:
    if not key.verify:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # tls_verify: false, a self-signed certificate
        return context
    context = ssl.create_default_context(cafile=str(key.ca_file) if key.ca_file else None)
    # A probe on the container's address dials an IP that no certificate names: check the
    # chain only. A probe `url` names its host, and that name is checked.
    context.check_hostname = key.check_hostname
    return context


def _require_address(target: ProbeTarget) -> str:
    if not target.address:
        raise OSError("container has no reachable address")
    return target.address


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        cert_error = exc.certificate_error
        reason = getattr(cert_error, "verify_message", None) or str(cert_error)
        return (
            f"TLS certificate not trusted: {reason} "
            "(set tls_verify: false for a self-signed certificate, or ca_file)"
        )
    if isinstance(exc, aiohttp.ClientConnectorSSLError):
        return f"TLS handshake failed: {_first_line(str(exc.os_error))}"
    return _first_line(str(exc) or type(exc).__name__)


def _first_line(text: str) -> str:
    return text.splitlines()[0][:200] if text else ""
