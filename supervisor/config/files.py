"""Files a config names: env files, CA bundles; and how a failed read is worded."""

from __future__ import annotations

import re
import ssl

__all__ = ["holds_pem_certificate", "parse_env_file", "reason"]


def parse_env_file(text: str) -> tuple[dict[str, str], list[tuple[int, str]]]:
    """KEY=VALUE lines; '#' comments, blank lines, `export ` and surrounding quotes allowed.

    Values are taken verbatim otherwise (no inline comments, no ${} expansion), like
    `docker run --env-file`: a password may contain '#' or '$'. Returns the variables and the
    lines that are not KEY=VALUE (numbered from 1).
    """
    out: dict[str, str] = {}
    bad: list[tuple[int, str]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.startswith("export "):
            stripped = stripped[len("export ") :].lstrip()
        key, sep, value = stripped.partition("=")
        key = key.strip()
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]*", key):
            bad.append((number, line))
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        out[key] = value
    return out, bad


def holds_pem_certificate(data: bytes) -> bool:
    """True if `data` is PEM text with at least one certificate that OpenSSL can load."""
    if b"-----BEGIN CERTIFICATE-----" not in data:
        return False
    try:
        ssl.create_default_context(cadata=data.decode("ascii"))
    except (ssl.SSLError, UnicodeDecodeError, ValueError):
        return False
    return True


def reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__
