"""The reload diff is a pure function of two configs."""

from __future__ import annotations

from pathlib import Path

from supervisor.config import StackConfig, parse_config
from supervisor.config_diff import diff_configs

BASE = """
version: 1
project: p
networks: {back: {}}
services:
  db:
    image: db:1
    health: {exec: [pg_isready]}
    networks: [back]
  app:
    image: app:1
    env_file: [app.env]
    depends_on: {db: healthy}
    health: {http: {port: 80}}
    networks: [back]
  web:
    image: web:1
    depends_on: [app]
"""


def config(tmp_path: Path, text: str = BASE, env: str = "A=1\n") -> StackConfig:
    (tmp_path / "app.env").write_text(env)
    return parse_config(text, base_dir=tmp_path)


def test_nothing_changed(tmp_path: Path) -> None:
    diff = diff_configs(config(tmp_path), config(tmp_path))
    assert diff.empty
    assert diff.unchanged == ("db", "app", "web")


def test_image_change_recreates_only_that_service(tmp_path: Path) -> None:
    diff = diff_configs(config(tmp_path), config(tmp_path, BASE.replace("app:1", "app:2")))
    assert diff.recreated == ("app",)
    assert diff.unchanged == ("db", "web")


def test_env_file_contents_count(tmp_path: Path) -> None:
    old = config(tmp_path)
    new = config(tmp_path, env="A=2\n")
    assert diff_configs(old, new).recreated == ("app",)


def test_probe_change_updates_supervision_without_recreating(tmp_path: Path) -> None:
    new = config(tmp_path, BASE.replace("{port: 80}", "{port: 80}, interval: 1s"))
    diff = diff_configs(config(tmp_path), new)
    assert diff.updated == ("app",)
    assert diff.recreated == ()


def test_added_and_removed(tmp_path: Path) -> None:
    text = BASE.replace(
        "  web:\n    image: web:1\n    depends_on: [app]\n", "  cache: {image: c:1}\n"
    )
    diff = diff_configs(config(tmp_path), config(tmp_path, text))
    assert diff.added == ("cache",)
    assert diff.removed == ("web",)


def test_network_redefinition_is_reported_as_not_applied_live(tmp_path: Path) -> None:
    new = config(tmp_path, BASE.replace("back: {}", "back: {internal: true}"))
    diff = diff_configs(config(tmp_path), new)
    assert set(diff.recreated) == {"db", "app"}  # their network's definition is in their hash
    assert any("network back" in note for note in diff.not_applied)


def test_event_history_length_is_applied_live_other_api_settings_are_not() -> None:
    old = parse_config("version: 1\nproject: p\nservices: {web: {image: x}}\n")
    longer = parse_config(
        "version: 1\nproject: p\napi: {events: {keep: 10}}\nservices: {web: {image: x}}\n"
    )
    assert diff_configs(old, longer).not_applied == ()
    moved = parse_config(
        "version: 1\nproject: p\napi: {listen: '127.0.0.1:9'}\nservices: {web: {image: x}}\n"
    )
    assert diff_configs(old, moved).not_applied
