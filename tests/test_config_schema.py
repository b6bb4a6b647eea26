"""The config's JSON Schema: committed as `ovpn-supervisor schema` prints it, named by every
shipped config's modeline, accepting every shipped config, and agreeing with the parser."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from conftest import REPO_ROOT
from pydantic import BaseModel

from supervisor import cli
from supervisor.config import ConfigError, parse_config, schema
from supervisor.config.keys import PROBE_KEYS, SECTION_KEYS, SERVICE_KEYS, TIMING_KEYS, TOP_KEYS
from supervisor.config.schema import MODELINE

SCHEMA_FILE = REPO_ROOT / "config" / "supervisor.schema.json"
SHIPPED = [
    "config/demo.yaml",
    "config/production/supervisor.yaml",
    "tests/fixtures/config/full.yaml",
    "tests/fixtures/standin-demo.yaml",
    "tests/fixtures/kubernetes/stack.yaml",
]


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_the_committed_schema_is_what_the_command_prints(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli.main(["schema"]) == 0
    printed = capsys.readouterr().out
    assert printed == SCHEMA_FILE.read_text(encoding="utf-8"), (
        "config/supervisor.schema.json is stale: "
        ".venv/bin/ovpn-supervisor schema > config/supervisor.schema.json"
    )


@pytest.mark.parametrize("name", SHIPPED)
def test_a_shipped_config_names_the_schema_and_follows_it(
    name: str, validator: jsonschema.Draft202012Validator
) -> None:
    path = REPO_ROOT / name
    first = path.read_text(encoding="utf-8").splitlines()[0]
    prefix = MODELINE.format("")
    assert first.startswith(prefix), f"{name} must start with {prefix}<path to the schema>"
    assert (path.parent / first[len(prefix) :]).resolve() == SCHEMA_FILE
    errors = [
        f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator.iter_errors(yaml.safe_load(path.read_text(encoding="utf-8")))
    ]
    assert errors == []


# Every model of the schema and the keys the parser allows where the model applies.
MODEL_KEYS: dict[str, tuple[str, ...]] = {
    "ConfigFile": TOP_KEYS,
    "Service": SERVICE_KEYS,
    "Timing": TIMING_KEYS,
    "Health": (*TIMING_KEYS, *PROBE_KEYS),
    "HttpProbeSpec": SECTION_KEYS["http"],
    "TcpProbeSpec": SECTION_KEYS["tcp"],
    "Backoff": SECTION_KEYS["backoff"],
    "Limit": SECTION_KEYS["limit"],
    "Restart": SECTION_KEYS["restart"],
    "Stop": SECTION_KEYS["stop"],
    "Defaults": SECTION_KEYS["defaults"],
    "MountSpec": SECTION_KEYS["mount"],
    "PortSpec": SECTION_KEYS["port"],
    "DependencySpec": SECTION_KEYS["dependency"],
    "Backup": SECTION_KEYS["backup"],
    "Restore": SECTION_KEYS["restore"],
    "Events": SECTION_KEYS["events"],
    "Api": SECTION_KEYS["api"],
    "Systemd": SECTION_KEYS["systemd"],
    "Network": SECTION_KEYS["network"],
    "Volume": SECTION_KEYS["volume"],
    "Secret": SECTION_KEYS["secret"],
    "Update": SECTION_KEYS["update"],
    "Backups": SECTION_KEYS["backups"],
}


@pytest.mark.parametrize(("model", "keys"), MODEL_KEYS.items())
def test_the_schema_has_the_keys_the_parser_reads(model: str, keys: tuple[str, ...]) -> None:
    assert sorted(getattr(schema, model).model_fields) == sorted(keys)


def test_every_model_is_held_to_the_parser() -> None:
    models = {
        name
        for name, value in vars(schema).items()
        if isinstance(value, type)
        and issubclass(value, BaseModel)
        and value.__module__ == schema.__name__
        and not name.startswith("_")
    }
    assert models == set(MODEL_KEYS)


BASE = {"version": 1, "project": "p", "services": {"web": {"image": "nginx"}}}


def _with(service: dict[str, Any] | None = None, **top: Any) -> dict[str, Any]:
    config: dict[str, Any] = {**BASE, **top}
    if service is not None:
        config["services"] = {"web": {"image": "nginx", **service}}
    return config


# Each file both the parser and the schema take, or both refuse.
AGREEMENT: list[tuple[str, dict[str, Any], bool]] = [
    ("minimal", _with(), True),
    ("ports: short, number, long", _with({"ports": ["8080:80", 80, {"target": 443}]}), True),
    (
        "volumes: short and long",
        _with({"volumes": ["data:/d", {"source": "./x", "target": "/x"}]}, volumes={"data": None}),
        True,
    ),
    (
        "depends_on: list",
        _with(services={"web": {"image": "a", "depends_on": ["db"]}, "db": {"image": "b"}}),
        True,
    ),
    (
        "depends_on: map",
        _with(
            services={
                "web": {
                    "image": "a",
                    "depends_on": {
                        "db": "started",
                        "j": {"condition": "completed", "restart": True},
                    },
                },
                "db": {"image": "b"},
                "j": {"image": "c", "type": "job"},
            }
        ),
        True,
    ),
    ("restart: shorthand", _with({"restart": "always"}), True),
    ("restart: YAML 1.1 no", _with({"restart": {"policy": False}}), True),
    ("health: tcp port", _with({"health": {"tcp": 80, "interval": "1m30s"}}), True),
    ("health: exec string", _with({"health": {"exec": "true"}}), True),
    ("environment: list", _with({"environment": ["A=1"], "labels": {"x": 1}}), True),
    ("update at a time", _with(update={"every": "24h", "at": "04:00"}), True),
    (
        "api on a unix socket",
        _with(api={"listen": "unix:///run/s.sock", "socket_mode": "0660"}),
        True,
    ),
    ("unknown top key", _with(servics={}), False),
    ("unknown service key", _with({"helth": {"tcp": 80}}), False),
    ("duration without unit", _with({"stop": {"timeout": "10"}}), False),
    ("unknown policy", _with({"restart": {"policy": "sometimes"}}), False),
    ("port out of range", _with({"ports": [{"target": 70000}]}), False),
    ("unknown type", _with({"type": "daemon"}), False),
    ("bad project name", _with(project="Bad Name"), False),
    ("version 2", _with(version=2), False),
    ("no probe", _with({"health": {"interval": "5s"}}), False),
    ("two probes", _with({"health": {"tcp": 80, "exec": "true"}}), False),
    ("http: port and url", _with({"health": {"http": {"port": 80, "url": "http://x/"}}}), False),
    ("relative working_dir", _with({"working_dir": "app"}), False),
    ("update without every", _with(update={"at": "04:00"}), False),
    ("events keep 0", _with(api={"events": {"keep": 0}}), False),
    ("missing image", _with(services={"web": {"type": "job"}}), False),
    ("bad service name", _with(services={"-web": {"image": "a"}}), False),
]


@pytest.mark.parametrize(
    ("config", "valid"), [(c, v) for _, c, v in AGREEMENT], ids=[n for n, _, _ in AGREEMENT]
)
def test_schema_and_parser_agree(
    config: dict[str, Any], valid: bool, validator: jsonschema.Draft202012Validator, tmp_path: Path
) -> None:
    text = yaml.safe_dump(config)
    try:
        parse_config(text, base_dir=tmp_path)
        parsed = True
    except ConfigError:
        parsed = False
    assert (parsed, validator.is_valid(yaml.safe_load(text))) == (valid, valid)


def test_the_schema_describes_durations_and_enums_from_the_model() -> None:
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    assert schema["$defs"]["ServiceType"]["enum"] == ["service", "job"]
    assert schema["$defs"]["RestartPolicy"]["enum"] == [
        "no",
        "on-failure",
        "always",
        "unless-stopped",
    ]
    interval = schema["$defs"]["Timing"]["properties"]["interval"]["anyOf"][0]
    assert "10s" in interval["description"]
