"""Metrics fed through the observer port; the output passes `promtool check metrics`."""

from __future__ import annotations

import shutil
import subprocess

from test_api import service

from supervisor.metrics import SupervisorMetrics
from supervisor.probes import ProbeResult
from supervisor.service import State
from supervisor.status import RestartCause, ServiceStatus

CANARY = "canary-env-value-9f3e"


def metrics_for(statuses: list[ServiceStatus], connected: bool = True) -> SupervisorMetrics:
    return SupervisorMetrics(
        version="9.9.9", statuses=lambda: statuses, docker_connected=lambda: connected
    )


def sample(m: SupervisorMetrics, name: str, **labels: str) -> float | None:
    return m.registry.get_sample_value(name, labels)


def test_state_is_one_gauge_per_state_read_at_scrape_time() -> None:
    statuses = [service("web", State.STARTING)]
    m = metrics_for(statuses)
    assert sample(m, "ovpn_supervisor_service_state", service="web", state="starting") == 1.0
    assert sample(m, "ovpn_supervisor_service_state", service="web", state="healthy") == 0.0
    assert sample(m, "ovpn_supervisor_service_healthy", service="web") == 0.0
    statuses[0] = service("web", State.HEALTHY)
    assert sample(m, "ovpn_supervisor_service_state", service="web", state="healthy") == 1.0
    assert sample(m, "ovpn_supervisor_service_healthy", service="web") == 1.0
    statuses.clear()  # a service that left the config leaves the output
    assert sample(m, "ovpn_supervisor_service_healthy", service="web") is None


def test_observer_calls_feed_counters_and_histograms() -> None:
    m = metrics_for([])
    m.restart_issued("web", RestartCause.UNHEALTHY)
    m.restart_issued("web", RestartCause.UNHEALTHY)
    m.restart_issued("web", RestartCause.OPERATOR)
    assert sample(m, "ovpn_supervisor_restarts_total", service="web", reason="unhealthy") == 2
    assert sample(m, "ovpn_supervisor_restarts_total", service="web", reason="operator") == 1
    m.probe_done("web", ProbeResult(True, "HTTP 200", 0.02, 1.0, 200))
    m.probe_done("web", ProbeResult(False, "connection refused", 0.001, 2.0))
    assert sample(m, "ovpn_supervisor_probe_duration_seconds_count", service="web") == 2
    assert sample(m, "ovpn_supervisor_probe_duration_seconds_bucket", service="web", le="0.005")
    assert sample(m, "ovpn_supervisor_probe_failures_total", service="web") == 1
    m.container_started("web", 1.5)
    assert sample(m, "ovpn_supervisor_container_start_duration_seconds_sum", service="web") == 1.5
    assert sample(m, "ovpn_supervisor_config_reloads_total", result="applied") == 0
    m.reload_done(False, 10.0)
    m.reload_done(True, 20.0)
    assert sample(m, "ovpn_supervisor_config_reloads_total", result="refused") == 1
    assert sample(m, "ovpn_supervisor_config_reloads_total", result="applied") == 1
    assert sample(m, "ovpn_supervisor_config_last_successful_reload_timestamp_seconds") == 20.0


def test_docker_connected_and_build_info() -> None:
    connected = [True]
    m = SupervisorMetrics(version="9.9.9", statuses=list, docker_connected=lambda: connected[0])
    assert sample(m, "ovpn_supervisor_docker_connected") == 1.0
    connected[0] = False
    assert sample(m, "ovpn_supervisor_docker_connected") == 0.0
    text = m.render().decode()
    assert 'ovpn_supervisor_build_info{python="' in text and 'version="9.9.9"' in text


def test_output_passes_promtool_and_holds_no_env_values() -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: scripts/ensure-test-tools installs Debian's prometheus"
    statuses = [service(f"svc-{i}", State.HEALTHY, environment_keys=("SECRET",)) for i in range(3)]
    m = metrics_for(statuses)
    for s in statuses:
        m.probe_done(s.name, ProbeResult(False, CANARY, 0.01, 1.0))
        m.restart_issued(s.name, RestartCause.EXITED)
        m.container_started(s.name, 0.3)
    m.reload_done(True, 5.0)
    text = m.render()
    assert CANARY.encode() not in text
    proc = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, timeout=30, check=False
    )
    assert proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode()
    assert proc.stdout.strip() == b"" and proc.stderr.strip() == b"", "promtool lint findings"


def test_image_updates_are_counted_by_result_and_service_outcome() -> None:
    m = metrics_for([])
    assert sample(m, "ovpn_supervisor_image_updates_total", result="updated") == 0.0
    m.update_done(False, {"migrate": "updated", "app": "rolled-back"}, 1_700_000_000.0)
    m.update_done(True, {"app": "updated"}, 1_700_000_500.0)
    assert sample(m, "ovpn_supervisor_image_updates_total", result="not-updated") == 1.0
    assert sample(m, "ovpn_supervisor_image_updates_total", result="updated") == 1.0
    outcome = "ovpn_supervisor_image_update_services_total"
    assert sample(m, outcome, service="app", outcome="rolled-back") == 1.0
    assert sample(m, outcome, service="app", outcome="updated") == 1.0
    last = "ovpn_supervisor_image_last_successful_update_timestamp_seconds"
    assert sample(m, last) == 1_700_000_500.0
