"""Addresses in the config: IPs, loopback hosts, the API's listen address."""

from __future__ import annotations

import ipaddress

__all__ = ["UNIX_SCHEME", "is_loopback_host", "valid_ip", "valid_listen"]

UNIX_SCHEME = "unix://"


def valid_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return False
    return True


def is_loopback_host(host: str) -> bool:
    """True for localhost and loopback IP literals ("127.0.0.1", "[::1]")."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def valid_listen(text: str) -> bool:
    if text.startswith(UNIX_SCHEME):
        return text[len(UNIX_SCHEME) :].startswith("/")
    host, sep, port = text.rpartition(":")
    return bool(sep and host and port.isdigit() and 1 <= int(port) <= 65535)
