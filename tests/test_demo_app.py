"""The pure parts of images/app/demo_app.py (the demo image's frontend/signing/certtransparency)."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

APP = Path(__file__).resolve().parent.parent / "images" / "app" / "demo_app.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("demo_app", APP)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["demo_app"] = module
    spec.loader.exec_module(module)
    return module


demo_app = _load()


def db_up(sql: str) -> None:
    return None


def db_down(sql: str) -> None:
    raise OSError('connection to server at "postgres-frontend" failed: Connection refused\nmore')


def no_table(sql: str) -> None:
    if "certificate_logs" in sql:
        raise RuntimeError('relation "certificate_logs" does not exist')


@pytest.mark.parametrize(
    ("role", "path", "query", "status"),
    [
        ("frontend", "/health", db_up, 200),
        ("frontend", "/health", db_down, 503),
        ("signing", "/health", db_down, 200),  # signing's health never asks a database
        ("certtransparency", "/health", db_down, 503),
        ("certtransparency", "/health", no_table, 200),
        ("certtransparency", "/ready", no_table, 503),  # until the migration made the table
        ("certtransparency", "/ready", db_up, 200),
        ("certtransparency", "/live", db_down, 200),
        ("frontend", "/ready", db_up, 404),
        ("frontend", "/nope", db_up, 404),
    ],
)
def test_probe_endpoints_answer_like_the_real_services(
    role: str, path: str, query: Callable[[str], None], status: int
) -> None:
    got, body = demo_app.health_reply(role, path, query)
    assert got == status
    if status == 503:
        assert body["status"] == "unhealthy"
        assert "\n" not in body["error"]  # the first line of the database's complaint
        assert body["error"]


def test_health_runs_select_1_and_ready_counts_certificate_logs() -> None:
    seen: list[str] = []
    demo_app.health_reply("frontend", "/health", seen.append)
    demo_app.health_reply("certtransparency", "/ready", seen.append)
    assert seen == ["SELECT 1", "SELECT COUNT(*) FROM certificate_logs"]


@pytest.mark.parametrize(
    ("value", "enabled"),
    [
        (None, True),
        ("true", True),
        ("1", True),
        ("false", False),
        ("No", False),
        ("off", False),
        ("0", False),
        (" FALSE ", False),
    ],
)
def test_application_tls_defaults_to_on(value: str | None, enabled: bool) -> None:
    env = {} if value is None else {"ENABLE_APPLICATION_TLS": value}
    assert demo_app.tls_enabled(env) is enabled


def test_a_setting_is_read_from_its_file_first(tmp_path: Path) -> None:
    secret = tmp_path / "url"
    secret.write_text("postgresql://u:p@db/x\n")
    env = {"DATABASE_URL": "postgresql://ignored@h/x", "DATABASE_URL_FILE": str(secret)}
    assert demo_app.setting("DATABASE_URL", environ=env) == "postgresql://u:p@db/x"
    assert demo_app.setting("DATABASE_URL", environ={"DATABASE_URL": "u"}) == "u"
    assert demo_app.setting("PORT", "8600", environ={}) == "8600"


@pytest.mark.parametrize(
    ("url", "address"),
    [
        ("postgresql://frontend:pw@postgres-frontend:5432/frontend", ("postgres-frontend", 5432)),
        ("postgres://u:p@db/x", ("db", 5432)),
        ("postgresql://u:p@db:6543/x", ("db", 6543)),
    ],
)
def test_migrate_waits_on_the_database_url_s_host_and_port(
    url: str, address: tuple[str, int]
) -> None:
    assert demo_app.database_address(url) == address


@pytest.mark.parametrize("url", ["", "sqlite:///x.db", "postgresql:///only-a-socket"])
def test_a_database_url_the_migration_cannot_wait_on_is_an_error(url: str) -> None:
    with pytest.raises(ValueError, match="DATABASE_URL"):
        demo_app.database_address(url)


def test_bad_usage_exits_2(capsys: Any) -> None:
    assert demo_app.main(["serve", "nginx"]) == 2
    assert demo_app.main(["migrate", "signing"]) == 2  # signing has no database
    assert "usage" in capsys.readouterr().err
