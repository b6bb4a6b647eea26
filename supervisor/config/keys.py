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
