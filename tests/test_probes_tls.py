"""HTTPS probes against a real TLS server on 127.0.0.1, with certificates made by `openssl`."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from supervisor import cli, http_probe
from supervisor.config import HttpProbe, TcpProbe
from supervisor.docker_api import ExecResult
from supervisor.probes import Prober, ProbeTarget

TARGET = ProbeTarget("no-container", "127.0.0.1")


@dataclass(frozen=True)
class Certificates:
    """A self-signed server certificate, and a CA with a server certificate it signed."""

    self_signed: tuple[Path, Path]  # (certificate, key)
    ca: Path
    ca_signed: tuple[Path, Path]


def _openssl(*args: str, cwd: Path) -> None:
    openssl = shutil.which("openssl")
    assert openssl, "openssl is missing: run scripts/ensure-test-tools"
    subprocess.run([openssl, *args], cwd=cwd, check=True, capture_output=True, timeout=30)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    folder = tmp_path_factory.mktemp("tls")
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2")
    # Both server certificates name 127.0.0.1, so only trust decides the outcome below.
    san = "subjectAltName=IP:127.0.0.1"
    _openssl(
        "req", "-x509", *ec, "-keyout", "self.key", "-out", "self.crt",
        "-subj", "/CN=self-signed", "-addext", san, cwd=folder,
    )  # fmt: skip
    _openssl(
        "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-subj", "/CN=probe test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=folder,
    )  # fmt: skip
    _openssl(
        "req", "-new", *ec[:-2], "-keyout", "app.key", "-out", "app.csr", "-subj", "/CN=app",
        cwd=folder,
    )  # fmt: skip
    (folder / "app.ext").write_text(
        f"{san}\nbasicConstraints=CA:FALSE\nauthorityKeyIdentifier=keyid\n"
        "subjectKeyIdentifier=hash\nextendedKeyUsage=serverAuth\n"
    )
    _openssl(
        "x509", "-req", "-in", "app.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "2", "-extfile", "app.ext", "-out", "app.crt", cwd=folder,
    )  # fmt: skip
    return Certificates(
        self_signed=(folder / "self.crt", folder / "self.key"),
        ca=folder / "ca.crt",
        ca_signed=(folder / "app.crt", folder / "app.key"),
    )


class _NoExec:
    async def exec_in(self, container_id: str, argv: tuple[str, ...]) -> ExecResult:
        raise AssertionError("no exec probes here")


async def _serve(cert: tuple[Path, Path]) -> tuple[web.AppRunner, int]:
    """An HTTPS server on 127.0.0.1 whose /health answers 200."""

    async def health(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/health", health)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*cert)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    port = runner.addresses[0][1]
    return runner, port


Serve = Callable[[tuple[Path, Path]], Any]


@pytest.fixture
async def https_server() -> AsyncIterator[Serve]:
    runners: list[web.AppRunner] = []

    async def start(cert: tuple[Path, Path]) -> int:
        runner, port = await _serve(cert)
        runners.append(runner)
        return port

    yield start
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
async def prober() -> AsyncIterator[Prober]:
    async with Prober(_NoExec()) as running:
        yield running


async def test_self_signed_is_healthy_without_verification(
    certs: Certificates, https_server: Serve, prober: Prober
) -> None:
    port = await https_server(certs.self_signed)
    probe = HttpProbe(port=port, scheme="https", tls_verify=False)
    result = await prober.probe(probe, TARGET, timeout=5)
    assert (result.ok, result.detail, result.status) == (True, "HTTPS 200", 200)


async def test_self_signed_is_unhealthy_when_verified(
    certs: Certificates, https_server: Serve, prober: Prober
) -> None:
    port = await https_server(certs.self_signed)
    result = await prober.probe(HttpProbe(port=port, scheme="https"), TARGET, timeout=5)
    assert not result.ok
    assert result.detail.startswith("TLS certificate not trusted: self-signed certificate")
    assert "tls_verify: false" in result.detail


async def test_ca_file_trusts_what_the_ca_signed_and_nothing_else(
    certs: Certificates, https_server: Serve, prober: Prober
) -> None:
    signed = await https_server(certs.ca_signed)
    other = await https_server(certs.self_signed)
    trusting = HttpProbe(port=signed, scheme="https", ca_file=certs.ca, ca_digest="d1")
    result = await prober.probe(trusting, TARGET, timeout=5)
    assert (result.ok, result.detail) == (True, "HTTPS 200")
    result = await prober.probe(HttpProbe(port=signed, scheme="https"), TARGET, timeout=5)
    assert not result.ok and "certificate not trusted" in result.detail
    result = await prober.probe(
        HttpProbe(port=other, scheme="https", ca_file=certs.ca, ca_digest="d1"), TARGET, timeout=5
    )
    assert not result.ok and "certificate not trusted" in result.detail


async def test_url_probe_checks_the_name_in_the_url(
    certs: Certificates, https_server: Serve, prober: Prober
) -> None:
    port = await https_server(certs.ca_signed)
    named = HttpProbe(
        url=f"https://127.0.0.1:{port}/health", scheme="https", ca_file=certs.ca, ca_digest="d"
    )
    assert (await prober.probe(named, TARGET, timeout=5)).ok
    # The certificate names 127.0.0.1 only: "localhost" is a mismatch when the URL says it.
    misnamed = HttpProbe(
        url=f"https://localhost:{port}/health", scheme="https", ca_file=certs.ca, ca_digest="d"
    )
    result = await prober.probe(misnamed, TARGET, timeout=5)
    assert not result.ok
    assert "certificate not trusted" in result.detail and "localhost" in result.detail


async def test_http_probe_to_an_https_port_is_unhealthy(
    certs: Certificates, https_server: Serve, prober: Prober
) -> None:
    port = await https_server(certs.self_signed)
    result = await prober.probe(HttpProbe(port=port), TARGET, timeout=5)
    assert not result.ok
    assert "set scheme: https" in result.detail
    # And the TCP port is open all the same: only the scheme is wrong.
    assert (await prober.probe(TcpProbe(port), TARGET, timeout=5)).ok


async def test_ssl_contexts_are_built_once_per_tls_setting(
    certs: Certificates,
    https_server: Serve,
    prober: Prober,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    built: list[object] = []
    real = http_probe._build_tls_context

    def counting(key: Any) -> ssl.SSLContext:
        built.append(key)
        return real(key)

    monkeypatch.setattr(http_probe, "_build_tls_context", counting)
    port = await https_server(certs.ca_signed)
    insecure = HttpProbe(port=port, scheme="https", tls_verify=False)
    trusting = HttpProbe(port=port, scheme="https", ca_file=certs.ca, ca_digest="one")
    for probe in (insecure, trusting, insecure, trusting, HttpProbe(port=port, path="/x")):
        await prober.probe(probe, TARGET, timeout=5)
    assert len(built) == 2
    # An edited CA bundle (a new digest after reload) gets a context of its own.
    edited = HttpProbe(port=port, scheme="https", ca_file=certs.ca, ca_digest="two")
    assert (await prober.probe(edited, TARGET, timeout=5)).ok
    assert len(built) == 3


def test_check_prints_each_probe_with_its_scheme(
    certs: Certificates, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "supervisor.yaml"
    config.write_text(
        "version: 1\nproject: p\nservices:\n"
        "  app: {image: x, health: {http: {port: 8600, scheme: https, tls_verify: false}}}\n"
        "  ct:\n    image: x\n"
        f"    health: {{http: {{port: 8800, scheme: https, ca_file: {certs.ca}}}}}\n"
        "  web: {image: x, health: {http: {port: 80, path: /ready}}}\n"
        "  db: {image: x, health: {exec: [pg_isready, -U, a b]}}\n"
    )
    assert cli.main(["check", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert out.split("health probes:\n")[1].splitlines() == [
        "  app: https :8600/health (certificate not verified)",
        f"  ct: https :8800/health (trusting {certs.ca})",
        "  web: http :80/ready",
        "  db: exec pg_isready -U 'a b'",
    ]
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "version: 1\nproject: p\nservices:\n"
        "  app: {image: x, health: {http: {port: 1, scheme: https, ca_file: nope.pem}}}\n"
    )
    assert cli.main(["check", "--config", str(bad)]) == 78
    assert "services.app.health.http.ca_file: cannot read CA file" in capsys.readouterr().err


async def test_https_probe_to_a_plain_http_port_is_unhealthy(prober: Prober) -> None:
    async def health(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/health", health)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        port = runner.addresses[0][1]
        assert (await prober.probe(HttpProbe(port=port), TARGET, timeout=5)).ok
        probe = HttpProbe(port=port, scheme="https", tls_verify=False)
        result = await prober.probe(probe, TARGET, timeout=5)
        assert not result.ok
        assert result.detail.startswith("TLS handshake failed: "), result.detail
    finally:
        await runner.cleanup()
