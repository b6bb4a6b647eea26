"""Events, logs, metrics and shipped alerting against a real daemon on real containers, and a
real Prometheus scraping it. One small stack (a job and a probed service) for the module."""

from __future__ import annotations

import http.client
import json
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
import yaml
from conftest import REPO_ROOT, remove_project
from daemon_process import free_port, run_cli
from helpers import wait_until
from live_api import TOKEN, LiveApi, live_api
from test_api_live import post

from supervisor.watch_commands import sse_events

pytestmark = pytest.mark.docker

ALERTS = REPO_ROOT / "deploy" / "prometheus" / "alerts.yml"
DASHBOARD = REPO_ROOT / "deploy" / "grafana" / "ovpn-supervisor.json"


@pytest.fixture(scope="module")
def live(
    tmp_path_factory: pytest.TempPathFactory,
    docker_client: docker.DockerClient,
    stand_in_image: str,
) -> Iterator[LiveApi]:
    project = f"t-{uuid.uuid4().hex[:8]}"
    try:
        with live_api(tmp_path_factory.mktemp("window"), project) as api:
            yield api
    finally:
        remove_project(docker_client, project)


def cli(live: LiveApi, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(args[0], "--config", str(live.config_path), *args[1:])


def events(live: LiveApi, **query: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = live.get_json("/v1/events?" + urllib.parse.urlencode(query))[
        "events"
    ]
    return found


def kill_web(live: LiveApi, docker_client: docker.DockerClient) -> None:
    project = yaml.safe_load(live.config_path.read_text())["project"]
    docker_client.containers.get(f"{project}-web").kill()


class StreamReader:
    """Reads /v1/events/stream in a thread; `events` fills as they arrive."""

    def __init__(self, live: LiveApi, last_event_id: int) -> None:
        host, port = live.address.split(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=30)
        self.conn.request("GET", "/v1/events/stream", headers={"Last-Event-ID": str(last_event_id)})
        self.response = self.conn.getresponse()
        assert self.response.status == 200
        self.events: list[dict[str, Any]] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        chunks = iter(lambda: self.response.read1(65536), b"")
        try:
            for event in sse_events(chunks):
                self.events.append(event)
        except (OSError, ValueError, http.client.HTTPException):
            pass  # the socket shut under it by close()

    def close(self) -> None:
        # shutdown() wakes the reader thread's blocking read; the connection is closed only
        # once that thread is done with it.
        if self.conn.sock is not None:
            self.conn.sock.shutdown(socket.SHUT_RDWR)
        self.thread.join(timeout=5)
        self.conn.close()


def test_a_crash_shows_in_the_history_the_stream_and_the_cli(
    live: LiveApi, docker_client: docker.DockerClient
) -> None:
    live.wait_all_up()
    before = live.get_json("/v1/events")["last_id"]
    stream = StreamReader(live, before)
    try:
        kill_web(live, docker_client)

        def seen() -> bool:
            kinds = {(e["kind"], e["data"].get("new")) for e in events(live, since=before)}
            return {("exited", None), ("restart", None), ("state", "healthy")} <= kinds

        wait_until(seen, timeout=30, message="exit, restart and healthy again in /v1/events")
        (exited,) = [e for e in events(live, since=before, service="web") if e["kind"] == "exited"]
        assert exited["data"] == {"exit_code": 137, "signal": "SIGKILL", "removed": False}
        assert exited["message"] == "exited with code 137 (SIGKILL)"
        restart = next(e for e in events(live, since=before) if e["kind"] == "restart")
        assert restart["data"]["cause"] == "exited" and " in " in restart["message"]
        # The live stream got the same events, in order, with no gap.
        wait_until(
            lambda: any(e["id"] == exited["id"] for e in stream.events),
            timeout=5,
            message="the exit on the live stream",
        )
        ids = [e["id"] for e in stream.events]
        assert ids == list(range(before + 1, before + 1 + len(ids)))
    finally:
        stream.close()

    shown = cli(live, "events", "--service", "web", "--since", "5m", "--json")
    assert shown.returncode == 0, shown.stderr
    lines = [json.loads(line) for line in shown.stdout.splitlines()]
    assert exited["id"] in {e["id"] for e in lines}
    assert {e["service"] for e in lines} == {"web"}
    table = cli(live, "events", "--since", "5m")
    assert "exited with code 137 (SIGKILL)" in table.stdout
    unknown = cli(live, "events", "--service", "nope")
    assert unknown.returncode == 4
    assert "no service named 'nope'" in unknown.stderr


def test_logs_of_a_running_a_stopped_service_and_a_completed_job(live: LiveApi) -> None:
    live.wait_all_up()
    running = cli(live, "logs", "web", "--tail", "20", "--timestamps")
    assert running.returncode == 0, running.stderr
    assert "stand-in: ready" in running.stdout
    assert re.match(r"\d{4}-\d\d-\d\dT", running.stdout), "timestamps asked for"
    job = cli(live, "logs", "init")
    assert "stand-in: exiting with code 0" in job.stdout, job.stdout + job.stderr
    assert cli(live, "logs", "nope").returncode == 4

    assert post(live, "/v1/services/web/stop", TOKEN)[0] == 202
    live.daemon.wait_states({"web": "stopped"}, timeout=30)
    stopped = cli(live, "logs", "web", "--tail", "3")
    assert "got SIGTERM" in stopped.stdout, stopped.stdout  # its last words are still there
    recent = cli(live, "logs", "web", "--since", "1h")
    assert "got SIGTERM" in recent.stdout
    assert post(live, "/v1/services/web/start", TOKEN)[0] == 202
    live.wait_all_up()


def test_logs_follow_ends_at_once_on_ctrl_c(live: LiveApi) -> None:
    live.wait_all_up()
    argv = [sys.executable, "-m", "supervisor", "logs", "-f", "web", "-c", str(live.config_path)]
    with subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO_ROOT
    ) as proc:
        try:
            assert proc.stdout is not None and proc.stderr is not None
            first = proc.stdout.readline()  # the output so far arrives before anything new
            assert first.startswith(b"stand-in:"), first
            proc.send_signal(signal.SIGINT)
            began = time.monotonic()
            code = proc.wait(timeout=10)
            assert code == 130, proc.stderr.read()
            assert time.monotonic() - began < 2
        finally:
            if proc.poll() is None:
                proc.kill()


def exported_names(metrics_text: str) -> set[str]:
    return {
        line.split("{")[0].split(" ")[0]
        for line in metrics_text.splitlines()
        if line and not line.startswith("#")
    }


def test_every_series_exists_from_the_start_and_the_dashboard_queries_real_metrics(
    live: LiveApi,
) -> None:
    text = live.get_text("/metrics")
    for service in ("init", "web"):
        for reason in ("exited", "oom", "unhealthy", "operator"):
            assert (
                f'ovpn_supervisor_restarts_total{{reason="{reason}",service="{service}"}}' in text
            )
        assert f'ovpn_supervisor_probe_failures_total{{service="{service}"}}' in text
    assert "_created" not in text
    names = exported_names(text)
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    assert queries
    for query in queries:
        for metric in re.findall(r"\b(ovpn_supervisor_\w+|up)\b", query):
            assert metric == "up" or metric in names, f"{metric} (in {query}) is not exported"


def test_prometheus_sees_the_first_restart_and_an_alert_fires(
    live: LiveApi, docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    prometheus = shutil.which("prometheus")
    assert prometheus, "prometheus missing: scripts/ensure-test-tools installs Debian's package"
    live.wait_all_up()
    # The shipped rules with every `for:` cut to 1s, evaluated every second.
    rules = ALERTS.read_text()
    (tmp_path / "alerts.yml").write_text(re.sub(r"(?m)^(\s+for:) .*$", r"\1 1s", rules))
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": ["alerts.yml"],
        "scrape_configs": [
            {
                "job_name": "ovpn-supervisor",
                "authorization": {"type": "Bearer", "credentials_file": str(live.token_file)},
                "static_configs": [{"targets": [live.address]}],
            }
        ],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = (tmp_path / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [
            prometheus,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )

    def query(promql: str) -> list[dict[str, Any]]:
        url = f"/api/v1/query?query={urllib.parse.quote(promql)}"
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            conn.request("GET", url)
            result: list[dict[str, Any]] = json.load(conn.getresponse())["data"]["result"]
            return result
        finally:
            conn.close()

    try:
        restarts = 'ovpn_supervisor_restarts_total{service="web",reason="exited"}'
        # Scraped at 0 for a few seconds before the first crash: the series exists already.
        wait_until(
            lambda: len(query(f"{restarts}[10s]")[0]["values"]) >= 3 if query(restarts) else False,
            timeout=30,
            message="three scrapes of the restart counter at 0",
        )
        kill_web(live, docker_client)
        seen = wait_until(
            lambda: query(f"increase({restarts}[1m]) > 0"),
            timeout=30,
            message="increase() of the restart counter after the first restart",
        )
        assert float(seen[0]["value"][1]) > 0
        live.wait_all_up()
        assert post(live, "/v1/services/web/stop", TOKEN)[0] == 202
        firing = 'ALERTS{alertname="OvpnSupervisorServiceDown",service="web",alertstate="firing"}'
        wait_until(lambda: query(firing), timeout=30, message="ServiceDown firing for web")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        post(live, "/v1/services/web/start", TOKEN)
