"""The shipped Prometheus rules and scrape config pass promtool; every alert has a rules test."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml
from conftest import REPO_ROOT

DEPLOY = REPO_ROOT / "deploy" / "prometheus"
RULES_TEST = REPO_ROOT / "tests" / "fixtures" / "prometheus" / "alerts_test.yml"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("promtool")
    assert tool, "promtool missing: scripts/ensure-test-tools installs Debian's prometheus"
    return subprocess.run([tool, *args], capture_output=True, text=True, timeout=60, check=False)


def test_rules_pass_promtool_check() -> None:
    proc = promtool("check", "rules", str(DEPLOY / "alerts.yml"))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_alert_has_a_passing_rules_test() -> None:
    alerts = {
        rule["alert"]
        for group in yaml.safe_load((DEPLOY / "alerts.yml").read_text())["groups"]
        for rule in group["rules"]
    }
    cases = yaml.safe_load(RULES_TEST.read_text())["tests"]
    tested = {check["alertname"] for case in cases for check in case["alert_rule_test"]}
    assert alerts == tested
    fired = {
        check["alertname"]
        for case in cases
        for check in case["alert_rule_test"]
        if check["exp_alerts"]
    }
    assert fired == alerts, "each alert is shown to fire, not only to stay quiet"
    proc = promtool("test", "rules", str(RULES_TEST))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_scrape_example_passes_promtool_check(tmp_path: Path) -> None:
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    job = config["scrape_configs"][0]
    assert job["job_name"] == "ovpn-supervisor"
    assert job["authorization"]["credentials_file"] == "/etc/ovpn-supervisor/api.token"
    token = tmp_path / "api.token"  # promtool checks that the file exists
    token.write_text("token\n")
    job["authorization"]["credentials_file"] = str(token)
    shutil.copy(DEPLOY / "alerts.yml", tmp_path / "alerts.yml")
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    proc = promtool("check", "config", str(tmp_path / "prometheus.yml"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
