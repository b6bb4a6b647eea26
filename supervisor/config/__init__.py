"""YAML config -> frozen, validated `StackConfig`.

Every problem names its key path and, where the YAML says, its line; all problems are collected
and raised together as one `ConfigError`, so an operator fixes a file in one pass.

Validation is hand-written over the parsed YAML rather than done by pydantic: the config has
many short forms (ports, volumes, depends_on, durations) that need custom parsing anyway, and
walking the data ourselves gives each problem the exact key path, line and did-you-mean with no
error-shape mapping. pydantic describes the file's shape (`schema`: typed, frozen models) for
the JSON Schema that editors and `ovpn-supervisor schema` use; tests hold both to the same keys.

The package, by concern: `model` (the frozen dataclasses the daemon reads), `problems`,
`durations`, `keys`, `readers` (typed readers over the index of `supervisor.yaml_source`),
`sections`, `services`, `probes`, `mounts`, `checks` (across services), `files`, `addresses`,
`hashing`, `load` and `schema`.
"""

from supervisor.config.addresses import UNIX_SCHEME, is_loopback_host
from supervisor.config.durations import DURATION_HINT, parse_duration
from supervisor.config.files import parse_env_file
from supervisor.config.hashing import SUPERVISION_KEYS, config_hash, container_hash
from supervisor.config.load import load_api_config, load_config, parse_config
from supervisor.config.model import (
    DEFAULT_EVENTS_KEEP,
    DEFAULT_LISTEN,
    DEFAULT_SOCKET_MODE,
    MIN_TOKEN_LENGTH,
    NAME_RE,
    PROJECT_RE,
    RESERVED_LABEL_PREFIX,
    VOLUME_NAME_RE,
    ApiConfig,
    BackupConfig,
    Condition,
    Defaults,
    Dependency,
    ExecProbe,
    HealthConfig,
    HealthTiming,
    HttpProbe,
    NetworkConfig,
    PortMapping,
    Probe,
    PullPolicy,
    RestartConfig,
    RestartPolicy,
    RestoreConfig,
    SecretConfig,
    ServiceConfig,
    ServiceType,
    StackConfig,
    StopConfig,
    SystemdConfig,
    TcpProbe,
    UpdateSchedule,
    VolumeConfig,
    VolumeMount,
)
from supervisor.config.problems import ConfigError, ConfigProblem, KeyPath, format_path

__all__ = [
    "DEFAULT_EVENTS_KEEP",
    "DEFAULT_LISTEN",
    "DEFAULT_SOCKET_MODE",
    "DURATION_HINT",
    "MIN_TOKEN_LENGTH",
    "NAME_RE",
    "PROJECT_RE",
    "RESERVED_LABEL_PREFIX",
    "SUPERVISION_KEYS",
    "UNIX_SCHEME",
    "VOLUME_NAME_RE",
    "ApiConfig",
    "BackupConfig",
    "Condition",
    "ConfigError",
    "ConfigProblem",
    "Defaults",
    "Dependency",
    "ExecProbe",
    "HealthConfig",
    "HealthTiming",
    "HttpProbe",
    "KeyPath",
    "NetworkConfig",
    "PortMapping",
    "Probe",
    "PullPolicy",
    "RestartConfig",
    "RestartPolicy",
    "RestoreConfig",
    "SecretConfig",
    "ServiceConfig",
    "ServiceType",
    "StackConfig",
    "StopConfig",
    "SystemdConfig",
    "TcpProbe",
    "UpdateSchedule",
    "VolumeConfig",
    "VolumeMount",
    "config_hash",
    "container_hash",
    "format_path",
    "is_loopback_host",
    "load_api_config",
    "load_config",
    "parse_config",
    "parse_duration",
    "parse_env_file",
]
