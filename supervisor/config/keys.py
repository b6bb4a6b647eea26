"""The keys each section of the config allows, and Compose spellings pointed at ours."""

from __future__ import annotations

TOP_KEYS = (
    "version",
    "project",
    "api",
    "systemd",
    "defaults",
    "networks",
    "volumes",
    "secrets",
    "services",
    "update",
    "backups",
)
SERVICE_KEYS = (
    "image",
    "type",
    "command",
    "entrypoint",
    "environment",
    "env_file",
    "volumes",
    "networks",
    "ports",
    "user",
    "working_dir",
    "depends_on",
    "health",
    "restart",
    "stop",
    "pull",
    "secrets",
    "labels",
    "backup",
    "restore",
)
TIMING_KEYS = ("interval", "timeout", "retries", "start_period", "start_interval")
PROBE_KEYS = ("http", "tcp", "exec")
# Compose spellings people will bring along, pointed at ours.
KEY_HINTS = {
    "healthcheck": "health",
    "env_files": "env_file",
    "stop_signal": "stop.signal",
    "stop_grace_period": "stop.timeout",
    "pull_policy": "pull",
}
# The other sections, by name: each reader checks its mapping against one of these, and
# tests/test_config_schema.py holds the schema's models to them.
SECTION_KEYS: dict[str, tuple[str, ...]] = {
    "network": ("internal", "driver", "name"),
    "volume": ("driver", "name"),
    "secret": ("file",),
    "api": ("listen", "token_file", "socket_mode", "socket_group", "events", "allowed_hosts"),
    "events": ("keep",),
    "systemd": ("startup_timeout",),
    "defaults": ("health", "restart", "stop", "pull"),
    "restart": ("policy", "backoff", "limit", "reset_after"),
    "backoff": ("first", "initial", "max"),
    "limit": ("count", "window"),
    "stop": ("signal", "timeout"),
    "update": ("every", "at", "pull"),
    "backups": ("dir",),
    "dependency": ("condition", "restart"),
    "mount": ("type", "source", "target", "read_only"),
    "port": ("target", "published", "host_ip", "protocol"),
    "http": ("port", "path", "url", "scheme", "tls_verify", "ca_file"),
    "tcp": ("port",),
    "backup": ("exec", "keep"),
    "restore": ("exec",),
}
