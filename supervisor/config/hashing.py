"""Stable hashes of a service's effective config, which decide when a container is recreated."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import fields, is_dataclass
from enum import Enum
from pathlib import Path

from supervisor.config.model import (
    NetworkConfig,
    SecretConfig,
    ServiceConfig,
    StackConfig,
    VolumeConfig,
)

__all__ = ["SUPERVISION_KEYS", "config_hash", "container_hash"]

_HASH_SCHEMA = "ovpn-supervisor/config-hash/1"


def _canonical(value: object) -> object:
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: _canonical(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_canonical(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def _file_digest(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as exc:
        # Hashing must not crash the reconciler; an unreadable file still hashes differently.
        return f"unreadable:{exc.errno}"


# How the daemon supervises a container, not what the container is: a change here is applied
# to the running service without recreating its container.
SUPERVISION_KEYS = ("health", "restart", "depends_on", "pull", "backup", "restore")


def container_hash(stack: StackConfig, service: ServiceConfig) -> str:
    """Like `config_hash`, without the supervision-only keys: what the container label carries."""
    return config_hash(stack, service, without=SUPERVISION_KEYS)


def config_hash(stack: StackConfig, service: ServiceConfig, *, without: Iterable[str] = ()) -> str:
    """Stable 16-hex-digit hash of all that shapes the service's container.

    Covers the service's effective config (env-file contents are already in `environment`),
    the definitions of its networks, and the contents of its secret files.
    """
    body = _canonical(service)
    assert isinstance(body, dict)
    # The files' paths do not matter once their contents are merged into `environment`.
    body.pop("env_files", None)
    for key in without:
        body.pop(key, None)
    document = {
        "schema": _HASH_SCHEMA,
        "service": body,
        "networks": {
            name: _canonical(stack.networks.get(name, NetworkConfig())) for name in service.networks
        },
        # Which Docker volume a mount gets is part of the container.
        "volumes": {
            m.source: _canonical(stack.volumes.get(m.source, VolumeConfig()))
            for m in service.volumes
            if m.kind == "volume"
        },
        "secrets": {
            name: _secret_digest(stack.secrets[name]) if name in stack.secrets else None
            for name in service.secrets
        },
    }
    text = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _secret_digest(secret: SecretConfig) -> str:
    return secret.digest if secret.digest is not None else _file_digest(secret.file)
