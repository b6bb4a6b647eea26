"""HTTP(S) probes over one shared aiohttp session, with an SSL context per TLS setting.

Apart from the other probes because aiohttp costs a sixth of a second to import: the daemon
imports this module in a worker thread while its first containers start (see api_component).
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from supervisor.config import HttpProbe
from supervisor.model import detail_line


class HttpProber:
    """GETs a probe's URL; a failure to get an answer is a failed probe with its reason."""

    def __init__(self) -> None:
        # No connection reuse: a probe must see a fresh connect, as a client would.
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(force_close=True, limit=0), trust_env=False
        )
        # One SSL context per distinct TLS setting, built once: building one reads CA files.
        self._tls_contexts: dict[_TlsKey, ssl.SSLContext] = {}

    async def close(self) -> None:
        await self._session.close()

    async def get(self, probe: HttpProbe, url: str) -> tuple[bool, str, int | None]:
        """(ok, detail, HTTP status): ok for a 2xx answer; redirects are not followed."""
        tls: ssl.SSLContext | bool = True
        if probe.scheme == "https":
            tls = await self._tls_context(probe)
        try:
            async with self._session.get(url, allow_redirects=False, ssl=tls) as response:
                await response.read()
        except aiohttp.ServerDisconnectedError as exc:
            if probe.scheme == "http":
                # What a TLS server does with a plain-HTTP request: hint at the likely fix.
                hint = "server disconnected without answering (an HTTPS port? set scheme: https)"
                return False, hint, None
            return False, _describe(exc), None
        except aiohttp.ClientError as exc:
            return False, _describe(exc), None
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


def _describe(exc: aiohttp.ClientError) -> str:
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        cert_error = exc.certificate_error
        reason = getattr(cert_error, "verify_message", None) or str(cert_error)
        return (
            f"TLS certificate not trusted: {reason} "
            "(set tls_verify: false for a self-signed certificate, or ca_file)"
        )
    if isinstance(exc, aiohttp.ClientConnectorSSLError):
        return f"TLS handshake failed: {detail_line(str(exc.os_error))}"
    return detail_line(str(exc) or type(exc).__name__)
