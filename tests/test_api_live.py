"""The API of a real daemon supervising real containers: OpenAPI conformance, gates, no secrets."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import wait_until
from live_api import CANARY_ENV, CANARY_SECRET, TOKEN, LiveApi, live_api

pytestmark = pytest.mark.docker


@pytest.fixture
def live(tmp_path: Path, project_name: str, stand_in_image: str) -> Iterator[LiveApi]:
    with live_api(tmp_path, project_name) as api:
        yield api


def test_live_daemon_conforms_to_its_openapi_document(live: LiveApi, tmp_path: Path) -> None:
    # schemathesis's CLI: its pytest plugin does not run under pytest 9. Authorised, so POSTs
    # reach the handlers; every answer must match the document, and none may be a 5xx.
    proc = subprocess.run(
        [
            str(Path(sys.executable).with_name("schemathesis")),
            "run",
            live.base + "/openapi.json",
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,"
            "response_schema_conformance,response_headers_conformance",
            "--header",
            f"Authorization: Bearer {TOKEN}",
            # Endless answers (the event stream, following logs) cannot be read to the end;
            # tests/test_api_events.py and tests/test_operator_window.py cover them.
            "--exclude-path-regex",
            "/stream$",
            "--max-examples",
            "25",
            "--seed",
            "1",
            "--no-color",
        ],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
        cwd=tmp_path,
        env={**os.environ, "SCHEMATHESIS_HOOKS": ""},
    )
    report = proc.stdout + proc.stderr
    assert proc.returncode == 0, report
    assert "No issues found" in report or "passed" in report, report


def post(live: LiveApi, path: str, token: str | None) -> tuple[int, str]:
    request = urllib.request.Request(live.base + path, method="POST")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_token_gate_and_operator_restart_with_canary_never_shown(live: LiveApi) -> None:
    assert post(live, "/v1/services/web/restart", None)[0] == 401
    assert post(live, "/v1/services/web/restart", "wrong")[0] == 401
    assert post(live, "/v1/reload", None)[0] == 401
    status, _ = post(live, "/v1/services/web/restart", TOKEN)
    assert status == 202

    live.daemon.wait_logged(
        lambda r: (
            r.get("event") == "state changed"
            and r.get("service") == "web"
            and r.get("new") == "restarting"
        ),
        timeout=10,
        what="web restarting on the operator's request",
    )
    live.daemon.wait_states({"web": "healthy"}, timeout=30)
    # /metrics is served from a copy re-rendered every second: wait for it to catch up.
    wait_until(
        lambda: (
            'ovpn_supervisor_restarts_total{reason="operator",service="web"} 1.0'
            in (text := live.get_text("/metrics"))
            and 'ovpn_supervisor_service_state{service="web",state="healthy"} 1.0' in text
        ),
        timeout=10,
        message="operator restart and healthy state in /metrics",
    )
    reload_status, reload_body = post(live, "/v1/reload", TOKEN)
    assert reload_status == 200, reload_body
    live.daemon.wait_logged(
        lambda r: r.get("event") == "operator command" and r.get("service") == "web",
        timeout=5,
        what="the operator command logged",
    )

    # The canary sits in web's environment and in its secret file: only the key may show.
    answers = [
        live.get_text("/v1/status"),
        live.get_text("/v1/services/web"),
        live.get_text("/metrics"),
        live.get_text("/openapi.json"),
        live.get_text("/healthz"),
        reload_body,
    ]
    assert "API_SECRET_VALUE" in answers[1]
    live.daemon.close()  # flush and end the log before reading all of it
    log_text = live.daemon.log_path.read_text()
    for text in [*answers, log_text]:
        assert CANARY_ENV not in text
        assert CANARY_SECRET not in text
