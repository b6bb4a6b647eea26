"""Health probes: http (with its TLS settings), tcp and exec, and their timing."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from supervisor.config.files import holds_pem_certificate, reason
from supervisor.config.keys import PROBE_KEYS, SECTION_KEYS, TIMING_KEYS
from supervisor.config.model import (
    ExecProbe,
    HealthConfig,
    HealthTiming,
    HttpProbe,
    Probe,
    TcpProbe,
)
from supervisor.config.problems import KeyPath
from supervisor.config.sections import SectionReaders

__all__ = ["ProbeReaders"]


class ProbeReaders(SectionReaders):
    """Readers for a service's (or the defaults') `health` section."""

    def _health(self, value: object, path: KeyPath, base: HealthTiming) -> HealthConfig | None:
        data = self.mapping(value, path)
        self.keys(data, path, (*PROBE_KEYS, *TIMING_KEYS))
        timing = self._timing(data, path, base)
        given = [key for key in PROBE_KEYS if key in data]
        if len(given) != 1:
            found = f"got {', '.join(given)}" if given else "got none"
            self.problem(path, f"needs exactly one probe: http, tcp or exec ({found})")
            return None
        key = given[0]
        probe = self._probe(key, data[key], (*path, key))
        if probe is None:
            return None
        return HealthConfig(
            probe=probe,
            interval=timing.interval,
            timeout=timing.timeout,
            retries=timing.retries,
            start_period=timing.start_period,
            start_interval=timing.start_interval,
        )

    def _probe(self, kind: str, value: object, path: KeyPath) -> Probe | None:
        if kind == "exec":
            if isinstance(value, str):
                if not value.strip():
                    self.problem(path, "empty command")
                    return None
                return ExecProbe(("/bin/sh", "-c", value))
            command = self._command(value, path)
            if command is not None and not command:
                self.problem(path, "empty command")
            return ExecProbe(command) if command else None
        if kind == "tcp":
            if isinstance(value, int) and not isinstance(value, bool):
                return TcpProbe(self.integer(value, path, 0, 1, 65535))
            data = self.mapping(value, path)
            self.keys(data, path, SECTION_KEYS["tcp"], required=("port",))
            if "port" not in data:
                return None
            return TcpProbe(self.integer(data["port"], (*path, "port"), 0, 1, 65535))
        return self._http_probe(self.mapping(value, path), path)

    def _http_probe(self, data: dict[str, Any], path: KeyPath) -> HttpProbe | None:
        self.keys(data, path, SECTION_KEYS["http"])
        if ("port" in data) == ("url" in data):
            self.problem(path, "needs exactly one of port or url")
            return None
        tls = self._probe_tls(data, path)
        if "url" in data:
            url = self.string(data["url"], (*path, "url"))
            for key in ("path", "scheme"):
                if key in data:
                    self.problem((*path, key), f"not allowed with url (put the {key} in the url)")
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                self.problem((*path, "url"), f"expected an http:// or https:// URL, got {url!r}")
                return None
            scheme: Literal["http", "https"] = "https" if parts.scheme == "https" else "http"
            self._check_tls_scheme(data, path, scheme)
            return replace(tls, url=url, scheme=scheme)
        port = self.integer(data["port"], (*path, "port"), 0, 1, 65535)
        probe_path = "/health"
        if "path" in data:
            probe_path = self.string(data["path"], (*path, "path"), probe_path)
            if not probe_path.startswith("/"):
                self.problem((*path, "path"), f"must start with '/', got {probe_path!r}")
        scheme = "http"
        if data.get("scheme") is not None:
            if data["scheme"] in ("http", "https"):
                scheme = data["scheme"]
            else:
                self.problem(
                    (*path, "scheme"), f"invalid value {data['scheme']!r} (one of: http, https)"
                )
                return None
        self._check_tls_scheme(data, path, scheme)
        return replace(tls, port=port, path=probe_path, scheme=scheme)

    def _probe_tls(self, data: dict[str, Any], path: KeyPath) -> HttpProbe:
        """An HttpProbe holding only the TLS settings (`tls_verify`, `ca_file` and its digest)."""
        tls_verify = True
        if data.get("tls_verify") is not None:
            tls_verify = self.boolean(data["tls_verify"], (*path, "tls_verify"), True)
        ca_value = self.optional(data, "ca_file", path, self.string)
        if not ca_value:
            return HttpProbe(tls_verify=tls_verify)
        if not tls_verify:
            self.problem(
                (*path, "tls_verify"),
                "false accepts any certificate: it cannot go with ca_file (drop one of them)",
            )
        ca_file = self.resolve(ca_value)
        return HttpProbe(
            tls_verify=tls_verify,
            ca_file=ca_file,
            ca_digest=self._ca_digest(ca_file, (*path, "ca_file")),
        )

    def _ca_digest(self, file: Path, path: KeyPath) -> str | None:
        """The sha256 of a PEM CA bundle; a problem if it cannot be read or holds no certificate."""
        try:
            data = file.read_bytes()
        except OSError as exc:
            self.problem(path, f"cannot read CA file {str(file)!r}: {reason(exc)}")
            return None
        if not holds_pem_certificate(data):
            self.problem(path, f"{str(file)!r} is not a PEM CA bundle (no certificate in it)")
            return None
        return hashlib.sha256(data).hexdigest()

    def _check_tls_scheme(self, data: dict[str, Any], path: KeyPath, scheme: str) -> None:
        if scheme == "https":
            return
        for key in ("tls_verify", "ca_file"):
            if data.get(key) is not None:
                self.problem((*path, key), "applies only to https (set scheme: https)")
