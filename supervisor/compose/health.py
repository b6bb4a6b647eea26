"""A Compose healthcheck -> our health probe: its `test` read as an http, tcp or exec probe."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from supervisor.compose.base import ConverterBase
from supervisor.yaml_source import KeyPath

__all__ = ["HealthConverter"]

_LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1", "0.0.0.0")


class HealthConverter(ConverterBase):
    """Converts a service's `healthcheck`."""

    def _health(self, value: object, path: KeyPath) -> dict[str, Any] | None:
        data = self.mapping(value, path)
        self.check_keys(
            data,
            path,
            ("test", "interval", "timeout", "retries", "start_period", "start_interval", "disable"),
        )
        if data.get("disable") is True:
            self.note("info", path, "disabled: no health probe")
            return None
        test = data.get("test")
        if test is None:
            self.unsupported(
                (*path, "test"), "a healthcheck without test inherits the image's; write it out"
            )
            return None
        probe = self._probe(test, (*path, "test"))
        if probe is None:
            return None
        out: dict[str, Any] = dict(probe)
        for key in ("interval", "timeout", "start_period", "start_interval"):
            if data.get(key) is not None:
                out[key] = self.duration(data[key], (*path, key))
        if data.get("retries") is not None:
            out["retries"] = data["retries"]
        return out

    def _probe(self, test: object, path: KeyPath) -> dict[str, Any] | None:
        if isinstance(test, str):
            shell: str | None = self.text(test, path)
            argv: list[str] | None = None
        else:
            words = [self.text(w, (*path, i)) for i, w in enumerate(self.seq(test, path))]
            if not words or any(w is None for w in words):
                if not words:
                    self.error(path, "empty test")
                return None
            kind, rest = words[0], [w for w in words[1:] if w is not None]
            if kind == "NONE":
                self.note("info", path, "NONE: no health probe")
                return None
            if kind == "CMD-SHELL" and len(rest) == 1:
                shell, argv = rest[0], None
            elif kind == "CMD" and rest:
                shell, argv = None, rest
            else:
                self.error(path, "expected [CMD, ...], [CMD-SHELL, command], [NONE] or a string")
                return None
        if shell is not None:
            argv = _plain_words(shell)
        http = _http_fetch(argv)
        python, remark = _python_fetch(argv if shell is None else _python_words(shell))
        if python is not None:
            http = python
            if remark is not None:
                self.note("info", path, remark)
        elif remark is not None:
            self.note(
                "warning",
                path,
                f"a Python HTTP fetch kept as an exec probe ({remark}); the image must have "
                "Python, or write a native probe: http: {port: PORT, scheme: https, "
                "tls_verify: false}",
            )
        if http is not None:
            tls = ", certificate not verified" if http.get("tls_verify") is False else ""
            self.note(
                "info",
                path,
                f"HTTP fetch of the container's own port: native {http.get('scheme', 'http')} "
                f"probe (port {http['port']}, path {http['path']}{tls})",
            )
            return {"http": http}
        if shell is not None:
            return {"exec": ["/bin/sh", "-c", shell]}
        return {"exec": argv}


def _plain_words(shell: str) -> list[str] | None:
    """Words of a shell command with no shell syntax, ignoring a trailing `|| exit 1`."""
    shell = re.sub(r"\s*\|\|\s*exit\s+1\s*$", "", shell.strip())
    if re.search(r"[|&;<>()`$]", shell):
        return None
    try:
        return shlex.split(shell)
    except ValueError:
        return None


# Options that change nothing about what a fetch proves (quietness, output, retries, timeouts).
_CURL_FLAGS = {"-f", "--fail", "-s", "--silent", "-S", "--show-error", "-L", "--location", "-q"}
_CURL_WITH_VALUE = {"-o", "--output", "-m", "--max-time", "--connect-timeout", "--retry"}
_WGET_FLAGS = {"-q", "--quiet", "--spider", "-O-", "-qO-", "--no-verbose", "-nv"}
_WGET_WITH_VALUE = {"-O", "--output-document", "-T", "--timeout", "-t", "--tries"}
# Options that accept any certificate: the probe gets `tls_verify: false`.
_CURL_INSECURE = {"-k", "--insecure"}
_WGET_INSECURE = {"--no-check-certificate"}


def _http_fetch(argv: list[str] | None) -> dict[str, Any] | None:
    """`curl -f http(s)://localhost:PORT/path` or `wget -q -O- …` -> an http probe; else None."""
    if not argv or Path(argv[0]).name not in ("curl", "wget"):
        return None
    curl = Path(argv[0]).name == "curl"
    flags, with_value = (_CURL_FLAGS, _CURL_WITH_VALUE) if curl else (_WGET_FLAGS, _WGET_WITH_VALUE)
    urls: list[str] = []
    failing = not curl  # wget fails on HTTP errors by itself; curl only with -f
    insecure = False
    words = iter(argv[1:])
    for word in words:
        name = word.split("=", 1)[0]
        if word.startswith("-") and re.fullmatch(r"-[a-zA-Z]{2,}", word) and curl:
            letters = set(word[1:])  # combined short flags such as -fsSk
            if not letters <= {"f", "s", "S", "L", "q", "k"}:
                return None
            failing = failing or "f" in letters
            insecure = insecure or "k" in letters
        elif word in flags:
            failing = failing or word in ("-f", "--fail")
        elif word in (_CURL_INSECURE if curl else _WGET_INSECURE):
            insecure = True
        elif name in with_value:
            if "=" not in word and next(words, None) is None:
                return None
        elif not word.startswith("-"):
            urls.append(word)
        else:
            return None
    if len(urls) != 1 or not failing:
        return None
    return _local_url_probe(urls[0], insecure)


def _local_url_probe(url: str, insecure: bool) -> dict[str, Any] | None:
    """An http probe for a URL on the container itself (localhost), else None."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or parts.hostname not in _LOCAL_HOSTS:
        return None
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return None
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    probe: dict[str, Any] = {"port": port, "path": path}
    if parts.scheme == "https":
        probe["scheme"] = "https"
        if insecure:
            probe["tls_verify"] = False
    return probe


# `python3 -c "…requests.get('https://localhost:8800/health', verify=False)…"` and the like.
_PYTHON_FETCH = re.compile(r"\b(?:requests|httpx)\.get\(|\burlopen\(")
_PYTHON_URL = re.compile(
    r"""(?P<f>f?)(?P<q>['"])(?P<url>[^'"\s]*://(?:localhost|127\.0\.0\.1|0\.0\.0\.0|\[::1\])"""
    r"""(?::\d+)?(?:/[^'"\s]*)?)(?P=q)"""
)
_PYTHON_INSECURE = re.compile(r"verify\s*=\s*False|_create_unverified_context|CERT_NONE")


def _python_words(shell: str) -> list[str] | None:
    """`python3 -c "CODE"` as a shell line -> its three words; None for anything else."""
    if "$" in shell or "`" in shell:
        return None  # the shell would expand these inside double quotes
    try:
        words = shlex.split(shell)
    except ValueError:
        return None
    return words if len(words) == 3 else None


def _python_fetch(argv: list[str] | None) -> tuple[dict[str, Any] | None, str | None]:
    """`python3 -c CODE` fetching one local URL -> (an http probe, a remark or None); a fetch
    that cannot be one -> (None, why not); anything else -> (None, None)."""
    if not argv or len(argv) != 3 or not re.fullmatch(r"python[0-9.]*", Path(argv[0]).name):
        return None, None
    code = argv[2]
    if argv[1] != "-c" or not _PYTHON_FETCH.search(code):
        return None, None
    urls = list(_PYTHON_URL.finditer(code))
    if len(urls) != 1:
        return None, "it fetches no single local URL"
    url = urls[0].group("url")
    if urls[0].group("f") and "{" in url:
        return None, f"its URL {url!r} is computed"
    probe = _local_url_probe(url, bool(_PYTHON_INSECURE.search(code)))
    if probe is None:
        return None, f"its URL {url!r} is not local"
    if "urlopen(" in code or "raise_for_status" in code:
        return probe, None
    # requests/httpx return any answer without raising: the fetch passed on a 503 too.
    return probe, "the native probe passes on 2xx only, where this fetch passed on any answer"
