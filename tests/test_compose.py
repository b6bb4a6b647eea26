"""Compose conversion: each supported key, interpolation, and each rejected key (no engine)."""

from __future__ import annotations

import re
import shutil
import stat
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO_ROOT

from supervisor.compose import (
    ComposeImport,
    InterpolationError,
    convert_compose,
    interpolate,
    load_compose,
    read_dotenv,
)
from supervisor.config import (
    Condition,
    ConfigError,
    ExecProbe,
    HttpProbe,
    PortMapping,
    PullPolicy,
    RestartPolicy,
    ServiceType,
    VolumeMount,
)
from supervisor.spec import container_spec, network_specs
from supervisor.stack_file import load_stack, looks_like_compose

# --------------------------------------------------------------------------- helpers


def write(tmp_path: Path, body: str, name: str = "docker-compose.yml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body).lstrip("\n"))
    return path


def convert(
    tmp_path: Path, body: str, env: dict[str, str] | None = None, **kwargs: Any
) -> ComposeImport:
    return convert_compose(write(tmp_path, body), environ=env or {}, **kwargs)


def one(tmp_path: Path, service_body: str, **kwargs: Any) -> dict[str, Any]:
    """The converted dict of a one-service file "app"; its keys start on line 4."""
    body = "name: p\nservices:\n  app:\n" + textwrap.indent(textwrap.dedent(service_body), "    ")
    result = convert(tmp_path, body, **kwargs)
    service: dict[str, Any] = result.config["services"]["app"]
    return service


def errors(tmp_path: Path, body: str, **kwargs: Any) -> list[tuple[str, int | None, str]]:
    with pytest.raises(ConfigError) as info:
        convert(tmp_path, body, **kwargs)
    return [(p.path, p.line, p.message) for p in info.value.problems]


def notes(result: ComposeImport, level: str) -> list[str]:
    return [f"{n.path}: {n.message}" for n in result.notes if n.level == level]


# --------------------------------------------------------------------------- interpolation


# Compose's own behaviour (compose-go's template package), case by case, with the variables
# FOO=first, BAR="" (set but empty) and JSON='{"json":2}'; UNSET is not set.
COMPOSE_VARIABLES = {"FOO": "first", "BAR": "", "JSON": '{"json":2}'}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # escapes and text without variables
        ("$${foo}", "${foo}"),
        ("$$FOO and $${FOO}", "$FOO and ${FOO}"),
        ("no variables", "no variables"),
        # a `$` that starts nothing is kept as written
        ("a $ string", "a $ string"),
        ("^REGEX$", "^REGEX$"),
        ("$}", "$}"),
        ("$", "$"),
        ("cost: $5", "cost: $5"),
        ("$(cat /run/secrets/db)", "$(cat /run/secrets/db)"),
        ("pre-$-post $FOO", "pre-$-post first"),
        # plain and braced names
        ("$FOO-bar", "first-bar"),
        ("This $FOO var", "This first var"),
        ("This ${FOO} var", "This first var"),
        ("This ${UNSET} var", "This  var"),
        ("This ${BAR} var", "This  var"),
        # defaults: `:-` when unset or empty, `-` when unset
        ("ok ${UNSET:-def}", "ok def"),
        ("ok ${UNSET-def}", "ok def"),
        ("ok ${BAR:-def}", "ok def"),
        ("ok ${FOO:-def}", "ok first"),
        ("ok ${BAR-def}", "ok "),
        ("ok ${BAR:-/non:-alphanumeric}", "ok /non:-alphanumeric"),
        # alternatives: `:+` when set and non-empty, `+` when set
        ("ok ${UNSET:+presence}", "ok "),
        ("ok ${UNSET+presence}", "ok "),
        ("ok ${FOO:+presence}", "ok presence"),
        ("ok ${FOO+presence}", "ok presence"),
        ("ok ${BAR+presence}", "ok presence"),
        ("ok ${BAR:+presence}", "ok "),
        # text around the expression does not change it
        ("-ok ${BAR:-dflt}", "-ok dflt"),
        ("+ok ${UNSET:-${BAR-dflt}}", "+ok "),
        (":-ok ${UNSET-dflt}", ":-ok dflt"),
        (":?ok ${BAR-dflt}", ":?ok "),
        (":+ok ${BAR:-dflt}", ":+ok dflt"),
        ("?ok ${BAR:-dflt}", "?ok dflt"),
        # nested expansion in the word
        ("ok ${UNSET-$FOO}", "ok first"),
        ("ok ${UNSET-${FOO}}", "ok first"),
        ("ok ${UNSET-${FOO} ${FOO}}", "ok first first"),
        ("ok ${BAR:-${FOO} ${FOO}}", "ok first first"),
        ("ok ${BAR+$FOO}", "ok first"),
        ("ok ${BAR+$FOO ${FOO:+second}}", "ok first second"),
        # required: the value when set; an untaken word is never evaluated
        ("ok ${FOO:?err}", "ok first"),
        ("ok ${FOO?err}", "ok first"),
        ("ok ${BAR?err}", "ok "),
        ("${FOO:-${UNSET:?not evaluated}}", "first"),
        # the first operator after the name decides
        ("${UNSET-myerror?msg}", "myerror?msg"),
        ("${FOO?bar-baz}", "first"),
        # braces inside a default pair up
        ('ok ${UNSET:-{"json":1}}', 'ok {"json":1}'),
        ('ok ${UNSET-{"json":1}}', 'ok {"json":1}'),
        ('ok ${JSON:-{"json":1}}', 'ok {"json":2}'),
        ('ok ${JSON-{"json":1}}', 'ok {"json":2}'),
        ("${FOO:-a}b}", "firstb}"),
    ],
)
def test_interpolation_matches_compose(text: str, expected: str) -> None:
    assert interpolate(text, COMPOSE_VARIABLES) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("${", "unclosed '${'"),
        ("${FOO", "unclosed '${'"),
        ("${FOO:-x", "unclosed '${'"),
        ("${}", "invalid variable name"),
        ("${ }", "invalid variable name"),
        ("${ FOO}", "invalid variable name"),
        ("${1A}", "invalid variable name"),
        ("${FOO }", "invalid expression"),
        ("${FOO!}", "invalid expression"),
        ("not ok ${UNSET:?Mandatory}", "required variable UNSET is not set: Mandatory"),
        ("not ok ${BAR:?Mandatory}", "required variable BAR is empty: Mandatory"),
        ("not ok ${UNSET:?}", "required variable UNSET is not set"),
        ("not ok ${UNSET?Mandatory}", "required variable UNSET is not set: Mandatory"),
        ("not ok ${UNSET?}", "required variable UNSET is not set"),
        ("${UNSET:?Mandatory ${FOO}}", "required variable UNSET is not set: Mandatory first"),
        ("${UNSET?bar-baz}", "required variable UNSET is not set: bar-baz"),
    ],
)
def test_interpolation_errors_match_compose(text: str, message: str) -> None:
    with pytest.raises(InterpolationError, match=re.escape(message)):
        interpolate(text, COMPOSE_VARIABLES)


def test_unset_variable_reads_empty_with_a_warning(tmp_path: Path) -> None:
    result = convert(tmp_path, "name: p\nservices:\n  app:\n    image: x:${TAG}\n")
    assert result.config["services"]["app"]["image"] == "x:"
    assert notes(result, "warning") == [
        "services.app.image: variable TAG is not set; it reads as an empty string"
    ]


def test_required_variable_error_names_the_key_and_line(tmp_path: Path) -> None:
    body = "name: p\nservices:\n  app:\n    image: x\n    user: ${RUN_AS:?who runs it}\n"
    assert errors(tmp_path, body) == [
        ("services.app.user", 5, "required variable RUN_AS is not set: who runs it")
    ]


def test_dotenv_beside_the_file_and_the_environment_wins(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("TAG=1.2\nREG=ghcr.io\nexport USER_ID='1000'\n")
    result = convert(
        tmp_path,
        "name: p\nservices:\n  app:\n    image: ${REG}/app:${TAG}\n    user: ${USER_ID}\n",
        env={"TAG": "2.0"},
    )
    assert result.config["services"]["app"]["image"] == "ghcr.io/app:2.0"
    assert result.config["services"]["app"]["user"] == "1000"


def test_env_file_option_replaces_dotenv(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("TAG=from-dotenv\n")
    other = tmp_path / "prod.env"
    other.write_text("TAG=from-option\n")
    result = convert(tmp_path, "name: p\nservices:\n  app:\n    image: x:${TAG}\n", env_file=other)
    assert result.config["services"]["app"]["image"] == "x:from-option"


def test_read_dotenv_forms(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    path.write_text(
        "# comment\n\nA=plain # inline comment\nB='lit $A'\nC=\"dq ${A}\"\nexport D=${HOME_X:-h}\n"
    )
    assert read_dotenv(path, {}) == {"A": "plain", "B": "lit $A", "C": "dq plain", "D": "h"}
    path.write_text("not a pair\n")
    with pytest.raises(InterpolationError, match=r"\.env:1: expected KEY=VALUE"):
        read_dotenv(path, {})


# --------------------------------------------------------------------------- services


def test_image_command_entrypoint_user_working_dir_labels(tmp_path: Path) -> None:
    service = one(
        tmp_path,
        """
        image: ghcr.io/openvpn-manager/frontend:latest
        command: ["gunicorn", "-b", 8600]
        entrypoint: /docker-entrypoint.sh
        user: 1000
        working_dir: /app
        labels: ["team=vpn"]
        """,
    )
    assert service == {
        "image": "ghcr.io/openvpn-manager/frontend:latest",
        "command": ["gunicorn", "-b", "8600"],
        "entrypoint": "/docker-entrypoint.sh",
        "user": "1000",
        "working_dir": "/app",
        "labels": {"team": "vpn"},
    }


def test_environment_map_and_list_with_passthrough(tmp_path: Path) -> None:
    as_map = one(
        tmp_path,
        "image: x\nenvironment: {A: 1, B: true, C: '${X}', PASS:, GONE:}\n",
        env={"X": "x", "PASS": "from-shell"},
    )
    assert as_map["environment"] == {"A": "1", "B": "true", "C": "x", "PASS": "from-shell"}
    as_list = convert(
        tmp_path,
        "name: p\nservices:\n  app:\n    image: x\n    environment: [A=1, 'B=a=b', PASS, GONE]\n",
        env={"PASS": "p"},
    )
    assert as_list.config["services"]["app"]["environment"] == {"A": "1", "B": "a=b", "PASS": "p"}
    assert notes(as_list, "warning") == [
        "services.app.environment[3]: GONE is not set here; left out"
    ]


def test_env_file_string_list_and_optional(tmp_path: Path) -> None:
    (tmp_path / "a.env").write_text("A=1\n")
    service = one(
        tmp_path,
        "image: x\nenv_file: [a.env, {path: ./missing.env, required: false}]\n",
    )
    assert service["env_file"] == ["./a.env"]
    assert one(tmp_path, "image: x\nenv_file: a.env\n")["env_file"] == ["./a.env"]


def test_env_files_read_as_compose_reads_them(tmp_path: Path) -> None:
    # No final newline, quotes, '=' in values, a default, a command substitution, a comment.
    (tmp_path / "app.env").write_text(
        "QUOTED='sqlite:////data/x.db'\n"
        'DQ="two words"\n'
        "SECRET=Super-+Secret_=Key0123\n"
        "URL=${IDP_URL:-https://idp.example/.well-known}\n"
        "DB=postgresql://u:$(cat /run/secrets/pw)@db:5432/x\n"
        "PRICE=$5\n"
        "TRAILING=value # a comment\n"
        "LAST=false"
    )
    body = "image: x\nenv_file: [app.env]\nenvironment: {TRAILING: explicit}\n"
    path = write(tmp_path, "name: p\nservices:\n  app:\n" + textwrap.indent(body, "    "))
    stack, result = load_compose(path, environ={})
    assert dict(stack.services["app"].environment) == {
        "QUOTED": "sqlite:////data/x.db",
        "DQ": "two words",
        "SECRET": "Super-+Secret_=Key0123",
        "URL": "https://idp.example/.well-known",
        "DB": "postgresql://u:$(cat /run/secrets/pw)@db:5432/x",
        "PRICE": "$5",
        "TRAILING": "explicit",
        "LAST": "false",
    }
    # Only what our verbatim env-file reader would read differently is pinned in environment.
    assert result.config["services"]["app"]["environment"] == {
        "URL": "https://idp.example/.well-known",
        "TRAILING": "explicit",
    }
    assert notes(result, "info")[0] == (
        "services.app.env_file: URL set in environment to the value Compose expands from "
        "the env file (which is itself read verbatim, like `docker run --env-file`)"
    )
    # The importing shell's (or .env's) value wins over the default, as in Compose.
    stack, _ = load_compose(path, environ={"IDP_URL": "https://other/"})
    assert stack.services["app"].environment["URL"] == "https://other/"


def test_env_file_with_a_broken_expression_names_file_line_and_key_only(tmp_path: Path) -> None:
    (tmp_path / "app.env").write_text("A=1\nB=${UNCLOSED\n")
    found = errors(tmp_path, "name: p\nservices:\n  app: {image: x, env_file: app.env}\n")
    # The value is never echoed: it may be a password.
    assert found == [
        (
            "services.app.env_file",
            3,
            f"{tmp_path / 'app.env'}:2: B: invalid '$' expression or required variable unset "
            "(value not shown; write '$$' for a literal '$')",
        )
    ]


def test_paths_are_rewritten_relative_to_the_output_folder(tmp_path: Path) -> None:
    compose_dir = tmp_path / "compose"
    compose_dir.mkdir()
    (compose_dir / "app.env").write_text("A=1\n")
    (compose_dir / "pw").write_text("secret\n")
    path = write(
        compose_dir,
        """
        name: p
        services:
          app:
            image: x
            env_file: app.env
            volumes: ["./conf:/etc/app:ro", "/srv/data:/data"]
            secrets: [pw]
        secrets:
          pw: {file: ./pw}
        """,
    )
    stack, result = load_compose(path, environ={}, out_dir=tmp_path)
    app = result.config["services"]["app"]
    assert app["env_file"] == ["./compose/app.env"]
    assert app["volumes"] == ["./compose/conf:/etc/app:ro", "/srv/data:/data"]
    assert result.config["secrets"] == {"pw": {"file": "./compose/pw"}}
    assert stack.services["app"].environment == {"A": "1"}
    assert stack.secrets["pw"].file == compose_dir / "pw"


def test_volumes_short_long_named_bind_and_read_only(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        name: p
        services:
          app:
            image: x
            volumes:
              - data:/data
              - ./pki:/pki:ro
              - ./cache:/cache:rw,cached
              - type: volume
                source: data
                target: /more
                read_only: true
              - {type: bind, source: /etc/ssl, target: /ssl}
        volumes:
          data: {driver: local}
        """,
    )
    stack, result = load_compose(path, environ={})
    assert stack.services["app"].volumes == (
        VolumeMount("volume", "data", "/data"),
        VolumeMount("bind", str(tmp_path / "pki"), "/pki", read_only=True),
        VolumeMount("bind", str(tmp_path / "cache"), "/cache"),
        VolumeMount("volume", "data", "/more", read_only=True),
        VolumeMount("bind", "/etc/ssl", "/ssl"),
    )
    assert any("cached" in n for n in notes(result, "info"))
    # Compose named it p_data: the stack keeps that Docker name, so the data stays in use.
    assert stack.volumes["data"].name == "p_data"
    assert any("p_data" in n for n in notes(result, "info"))


def test_networks_list_and_map_and_top_level(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        name: p
        services:
          a: {image: x, networks: [front, db]}
          b:
            image: x
            networks:
              front:
          c: {image: x}
        networks:
          front: {}
          db: {internal: true, driver: bridge}
        """,
    )
    stack, _ = load_compose(path, environ={})
    assert stack.services["a"].networks == ("front", "db")
    assert stack.services["b"].networks == ("front",)
    assert stack.services["c"].networks == ("default",)
    assert stack.networks["db"].internal


def test_network_name_is_kept_as_the_docker_name(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        name: p
        services:
          a: {image: x}
          b: {image: x, networks: [back]}
        networks:
          default: {name: shared-tests}
          back: {}
        """,
    )
    stack, result = load_compose(path, environ={})
    assert result.config["networks"] == {"default": {"name": "shared-tests"}, "back": {}}
    assert container_spec(stack, stack.services["a"]).networks == ("shared-tests",)
    assert container_spec(stack, stack.services["b"]).networks == ("p-back",)
    assert sorted(n.name for n in network_specs(stack)) == ["p-back", "shared-tests"]


def test_ports_short_and_long_and_expose(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        name: p
        services:
          nginx:
            image: x
            ports:
              - "127.0.0.1:443:8443"
              - 80:8080
              - 9000
              - "127.0.0.1::9100/udp"
              - {target: 8500, published: "8501", host_ip: 127.0.0.1, protocol: tcp}
            expose: ["8600", 8601]
        """,
    )
    stack, result = load_compose(path, environ={})
    assert stack.services["nginx"].ports == (
        PortMapping(8443, 443, "127.0.0.1"),
        PortMapping(8080, 80),
        PortMapping(9000),
        PortMapping(9100, None, "127.0.0.1", "udp"),
        PortMapping(8500, 8501, "127.0.0.1"),
    )
    assert any(n.startswith("services.nginx.expose: 8600, 8601") for n in notes(result, "info"))


@pytest.mark.parametrize(
    ("restart", "policy", "limit"),
    [
        ('"no"', RestartPolicy.NO, None),
        ("no", RestartPolicy.NO, None),
        ("always", RestartPolicy.ALWAYS, None),
        ("unless-stopped", RestartPolicy.UNLESS_STOPPED, None),
        ("on-failure", RestartPolicy.ON_FAILURE, None),
        ("on-failure:3", RestartPolicy.ON_FAILURE, 3),
    ],
)
def test_restart_policies(
    tmp_path: Path, restart: str, policy: RestartPolicy, limit: int | None
) -> None:
    path = write(tmp_path, f"name: p\nservices:\n  app:\n    image: x\n    restart: {restart}\n")
    stack, _ = load_compose(path, environ={})
    assert stack.services["app"].restart.policy is policy
    if limit is not None:
        assert stack.services["app"].restart.limit_count == limit


def test_missing_restart_uses_our_default_and_says_so(tmp_path: Path) -> None:
    path = write(tmp_path, "name: p\nservices:\n  app: {image: x}\n")
    stack, result = load_compose(path, environ={})
    assert stack.services["app"].restart.policy is RestartPolicy.ON_FAILURE
    assert any("no restart policy on app" in n for n in notes(result, "info"))


def test_depends_on_short_and_long_forms_and_jobs(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        name: p
        services:
          db:
            image: x
            healthcheck: {test: [CMD, pg_isready]}
          migrate:
            image: x
            restart: "no"
            depends_on: {db: {condition: service_healthy}}
          once:
            image: x
          app:
            image: x
            depends_on:
              db: {condition: service_healthy, restart: true}
              migrate: {condition: service_completed_successfully}
              once: {condition: service_started}
          side:
            image: x
            depends_on: [app]
        """,
    )
    stack, result = load_compose(path, environ={})
    app = stack.services["app"]
    assert app.depends_on["db"].condition is Condition.HEALTHY
    assert app.depends_on["db"].restart
    assert app.depends_on["migrate"].condition is Condition.COMPLETED
    assert app.depends_on["once"].condition is Condition.STARTED
    assert stack.services["side"].depends_on["app"].condition is Condition.STARTED
    assert stack.services["migrate"].type is ServiceType.JOB
    # Not waited on for completion: stays a service, even with no restart.
    assert stack.services["once"].type is ServiceType.SERVICE
    assert "services.migrate: becomes a job: others wait for it to complete" in notes(
        result, "info"
    )


@pytest.mark.parametrize("restart", ["", "restart: no", 'restart: "no"', "restart: on-failure"])
def test_a_service_waited_on_for_completion_is_a_job_with_or_without_restart(
    tmp_path: Path, restart: str
) -> None:
    body = f"""
    name: p
    services:
      init: {{image: x, {restart}}}
      app:
        image: x
        depends_on: {{init: {{condition: service_completed_successfully}}}}
    """.replace(", }", "}")
    stack, result = load_compose(write(tmp_path, body), environ={})
    assert stack.services["init"].type is ServiceType.JOB
    expected = RestartPolicy.ON_FAILURE if "on-failure" in restart else RestartPolicy.NO
    assert stack.services["init"].restart.policy is expected
    assert not notes(result, "warning")


def test_a_waited_on_job_with_restart_always_is_an_error(tmp_path: Path) -> None:
    body = """
    name: p
    services:
      migrate: {image: x, restart: always}
      app:
        image: x
        depends_on: {migrate: {condition: service_completed_successfully}}
    """
    [(path, line, message)] = errors(tmp_path, body)
    assert (path, line) == ("services.migrate.restart", 3)
    assert "app waits on with service_completed_successfully" in message


def test_job_with_on_failure_keeps_it_and_drops_a_healthcheck(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        name: p
        services:
          migrate:
            image: x
            restart: on-failure
            healthcheck: {test: [CMD, "true"]}
          app:
            image: x
            depends_on: {migrate: {condition: service_completed_successfully}}
        """,
    )
    stack, result = load_compose(path, environ={})
    assert stack.services["migrate"].type is ServiceType.JOB
    assert stack.services["migrate"].restart.policy is RestartPolicy.ON_FAILURE
    assert stack.services["migrate"].health is None
    assert "services.migrate.healthcheck: dropped: a job's exit code is its result" in notes(
        result, "info"
    )


# --------------------------------------------------------------------------- health checks


HTTPS_INSECURE = {"scheme": "https", "tls_verify": False}
PY_CT = (
    "import os, requests; scheme = 'https'; "
    "requests.get('https://localhost:8800/health', timeout=5, verify=False)"
)


@pytest.mark.parametrize(
    ("test", "port", "path", "tls"),
    [
        ('["CMD", "curl", "-f", "http://localhost:8800/health"]', 8800, "/health", {}),
        ('["CMD-SHELL", "curl -f http://localhost:8800/health || exit 1"]', 8800, "/health", {}),
        ("curl -fsS http://127.0.0.1:8500/health?full=1", 8500, "/health?full=1", {}),
        ("curl --fail --silent -o /dev/null --max-time 2 http://localhost/", 80, "/", {}),
        ("wget -q -O- http://localhost:8600/health", 8600, "/health", {}),
        ("wget -qO- --tries=1 http://localhost:8600/status", 8600, "/status", {}),
        ("wget --spider -q http://0.0.0.0:8080/health", 8080, "/health", {}),
        # https: verified unless the fetch accepts any certificate
        (
            '["CMD", "curl", "-f", "https://localhost:8443/health"]',
            8443,
            "/health",
            {"scheme": "https"},
        ),
        ("curl -fk https://localhost:8600/health", 8600, "/health", HTTPS_INSECURE),
        ("curl -fsSk https://localhost/health", 443, "/health", HTTPS_INSECURE),
        ("curl --insecure -f https://127.0.0.1:8500/", 8500, "/", HTTPS_INSECURE),
        ("curl -k -f http://localhost:8500/", 8500, "/", {}),
        (
            "wget -q --no-check-certificate -O- https://localhost:8800/ready",
            8800,
            "/ready",
            HTTPS_INSECURE,
        ),
        # Python fetches (the certtransparency image's own HEALTHCHECK is one)
        (f'["CMD", "python3", "-c", "{PY_CT}"]', 8800, "/health", HTTPS_INSECURE),
        (f'python3 -c "{PY_CT}"', 8800, "/health", HTTPS_INSECURE),
        (
            '["CMD", "python3", "-c", "import urllib.request as u; '
            "u.urlopen('http://localhost:8500/health')\"]",
            8500,
            "/health",
            {},
        ),
    ],
)
def test_http_fetch_of_own_port_becomes_a_native_http_probe(
    tmp_path: Path, test: str, port: int, path: str, tls: dict[str, Any]
) -> None:
    compose = write(
        tmp_path,
        f"name: p\nservices:\n  app:\n    image: x\n    healthcheck:\n      test: {test}\n",
    )
    stack, result = load_compose(compose, environ={})
    health = stack.services["app"].health
    assert health is not None
    assert health.probe == HttpProbe(port=port, path=path, **tls)
    [note] = [n for n in notes(result, "info") if "container's own port" in n]
    assert f"native {tls.get('scheme', 'http')} probe (port {port}, path {path}" in note
    assert ("certificate not verified" in note) == ("tls_verify" in tls)


def test_python_fetch_of_a_computed_url_stays_exec_with_a_warning(tmp_path: Path) -> None:
    code = (
        "import os, requests; scheme = 'https' if os.environ.get('TLS', 'true') else 'http'; "
        "requests.get(f'{scheme}://localhost:8800/health', timeout=5, verify=False)"
    )
    compose = write(
        tmp_path,
        "name: p\nservices:\n  app:\n    image: x\n    healthcheck:\n"
        f'      test: ["CMD", "python3", "-c", "{code}"]\n',
    )
    stack, result = load_compose(compose, environ={})
    health = stack.services["app"].health
    assert health is not None and health.probe == ExecProbe(("python3", "-c", code))
    assert notes(result, "warning") == [
        "services.app.healthcheck.test: a Python HTTP fetch kept as an exec probe (its URL "
        "'{scheme}://localhost:8800/health' is computed); the image must have Python, or write "
        "a native probe: http: {port: PORT, scheme: https, tls_verify: false}"
    ]


@pytest.mark.parametrize(
    ("test", "command"),
    [
        ('["CMD", "pg_isready", "-U", "ct"]', ("pg_isready", "-U", "ct")),
        ('["CMD-SHELL", "pg_isready -U ct"]', ("/bin/sh", "-c", "pg_isready -U ct")),
        ("pg_isready -U ct", ("/bin/sh", "-c", "pg_isready -U ct")),
        # curl without -f passes on any status; another host is not the container's own port.
        ('["CMD", "curl", "http://localhost:8800/health"]', None),
        ('["CMD", "curl", "-f", "http://signing:8500/health"]', None),
        ('["CMD", "curl", "-f", "--cacert", "/ca.pem", "https://localhost:8443/"]', None),
        ('["CMD", "curl", "-f", "-H", "X: y", "http://localhost:8800/health"]', None),
        ('["CMD-SHELL", "curl -f http://localhost:8800/health && test -f /ok"]', None),
    ],
)
def test_other_healthchecks_become_exec_probes(
    tmp_path: Path, test: str, command: tuple[str, ...] | None
) -> None:
    compose = write(
        tmp_path,
        f"name: p\nservices:\n  app:\n    image: x\n    healthcheck:\n      test: {test}\n",
    )
    stack, _ = load_compose(compose, environ={})
    health = stack.services["app"].health
    assert health is not None
    assert isinstance(health.probe, ExecProbe)
    if command is not None:
        assert health.probe.command == command


def test_healthcheck_timing_and_none_and_disable(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        name: p
        services:
          a:
            image: x
            healthcheck:
              test: [CMD, "true"]
              interval: 1m30s
              timeout: 5s
              retries: 7
              start_period: 0s
              start_interval: 500ms
          b: {image: x, healthcheck: {test: [NONE]}}
          c: {image: x, healthcheck: {test: [CMD, "true"], disable: true}}
        """,
    )
    stack, _ = load_compose(path, environ={})
    health = stack.services["a"].health
    assert health is not None
    assert (health.interval, health.timeout, health.retries) == (90.0, 5.0, 7)
    assert (health.start_period, health.start_interval) == (0.0, 0.5)
    assert stack.services["b"].health is None
    assert stack.services["c"].health is None


def test_healthcheck_bad_duration_names_the_key(tmp_path: Path) -> None:
    body = "name: p\nservices:\n  a:\n    image: x\n    healthcheck:\n      test: [CMD, 'true']\n"
    assert errors(tmp_path, body + "      interval: 30\n") == [
        ("services.a.healthcheck.interval", 7, "invalid duration '30' (use e.g. 500ms, 10s, 5m)")
    ]


# --------------------------------------------------------------------------- stop, secrets, pull


def test_stop_signal_and_grace_period(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "name: p\nservices:\n  web:\n    image: x\n    stop_signal: SIGQUIT\n"
        "    stop_grace_period: 1m30s\n",
    )
    stack, _ = load_compose(path, environ={})
    assert stack.services["web"].stop.signal == "SIGQUIT"
    assert stack.services["web"].stop.timeout == 90.0


def test_file_backed_secrets_short_and_long(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("s3cret\n")
    path = write(
        tmp_path,
        """
        name: p
        services:
          db:
            image: x
            secrets: [pw, {source: key, target: /run/secrets/key}]
        secrets:
          pw: {file: ./pw}
          key: {file: ./pw}
        """,
    )
    stack, _ = load_compose(path, environ={})
    assert stack.services["db"].secrets == ("pw", "key")
    assert stack.secrets["pw"].file == tmp_path / "pw"


@pytest.mark.parametrize(
    ("compose", "ours"),
    [
        ("missing", PullPolicy.MISSING),
        ("if_not_present", PullPolicy.MISSING),
        ("always", PullPolicy.ALWAYS),
        ("never", PullPolicy.NEVER),
    ],
)
def test_pull_policy(tmp_path: Path, compose: str, ours: PullPolicy) -> None:
    path = write(tmp_path, f"name: p\nservices:\n  a:\n    image: x\n    pull_policy: {compose}\n")
    assert load_compose(path, environ={})[0].services["a"].pull is ours


# --------------------------------------------------------------------------- rejected keys


@pytest.mark.parametrize(
    ("key", "value", "why"),
    [
        ("container_name", "web", "<project>-<service>"),
        ("cap_add", "[NET_ADMIN]", None),
        ("deploy", "{replicas: 2}", "one container per service"),
        ("privileged", "true", None),
        ("pull_policy", "daily", "'daily'"),
    ],
)
def test_unsupported_service_keys_are_errors_by_name(
    tmp_path: Path, key: str, value: str, why: str | None
) -> None:
    body = f"name: p\nservices:\n  app:\n    image: x\n    {key}: {value}\n"
    [(path, line, message)] = errors(tmp_path, body)
    assert (path, line) == (f"services.app.{key}", 5)
    assert "not supported" in message
    assert "--lenient" in message
    if why is not None:
        assert why in message


def test_lenient_drops_unsupported_keys_with_a_warning(tmp_path: Path) -> None:
    body = (
        "name: p\nservices:\n  app:\n    image: x\n    cap_add: [NET_ADMIN]\n"
        "    read_only: true\nconfigs:\n  c: {file: ./c}\n"
    )
    result = convert(tmp_path, body, lenient=True)
    assert result.config["services"]["app"] == {"image": "x"}
    warnings = notes(result, "warning")
    assert any(w.startswith("services.app.cap_add:") for w in warnings)
    assert any(w.startswith("services.app.read_only:") for w in warnings)
    assert any(w.startswith("configs:") for w in warnings)


A = "services: {a: {image: x}}\n"
V = "volumes: {v: {}}"
REJECTED = [
    # (key path, a fragment of the message, the file after `name: p`)
    ("networks.n.external", "", A + "networks: {n: {external: true}}"),
    ("volumes.v.external", "", A + "volumes: {v: {external: true}}"),
    ("secrets.s.environment", "", A + "secrets: {s: {environment: PW}}"),
    ("include", "docker compose config", A + "include: [other.yml]"),
    ("services.a.volumes[0]", "anonymous", "services: {a: {image: x, volumes: [/data]}}"),
    ("services.a.volumes[0]", "z", "services: {a: {image: x, volumes: ['v:/d:z']}}\n" + V),
    (
        "services.a.volumes[0].type",
        "tmpfs",
        "services: {a: {image: x, volumes: [{type: tmpfs, target: /t}]}}",
    ),
    ("services.a.ports[0]", "range", "services: {a: {image: x, ports: ['8000-8001:8000-8001']}}"),
    (
        "services.a.networks.n.aliases",
        "",
        "services: {a: {image: x, networks: {n: {aliases: [b]}}}}\nnetworks: {n: {}}",
    ),
    (
        "services.a.secrets[0].target",
        "/run/secrets",
        "services: {a: {image: x, secrets: [{source: s, target: /etc/s}]}}\n"
        "secrets: {s: {file: ./s}}",
    ),
    (
        "services.a.depends_on.b.required",
        "",
        "services: {b: {image: x}, a: {image: x, depends_on: {b: {required: false}}}}",
    ),
]


@pytest.mark.parametrize(("path", "fragment", "body"), REJECTED)
def test_rejected_keys_name_their_path(tmp_path: Path, path: str, fragment: str, body: str) -> None:
    (tmp_path / "s").write_text("x")
    found = errors(tmp_path, "name: p\n" + body)
    assert [p for p, _, _ in found] == [path]
    assert fragment in found[0][2]


def test_extension_keys_are_ignored_and_anchors_merge(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        name: p
        x-common: &common
          restart: unless-stopped
          stop_grace_period: 20s
        services:
          app:
            <<: *common
            image: x
            x-note: ignored
        """,
    )
    stack, result = load_compose(path, environ={})
    assert stack.services["app"].restart.policy is RestartPolicy.UNLESS_STOPPED
    assert stack.services["app"].stop.timeout == 20.0
    assert not notes(result, "warning")


def test_build_without_image_reports_build_only(tmp_path: Path) -> None:
    found = errors(tmp_path, "name: p\nservices:\n  app:\n    build: .\n")
    assert found == [
        (
            "services.app.build",
            4,
            "the supervisor runs images: build and push (or `docker build -t`) it, then set "
            "`image:` (no image given)",
        )
    ]
    # Lenient or not: without an image there is nothing to run.
    assert errors(tmp_path, "name: p\nservices:\n  app:\n    build: .\n", lenient=True) == found


def test_build_next_to_image_is_a_warning_and_the_image_runs(tmp_path: Path) -> None:
    result = convert(
        tmp_path, "name: p\nservices:\n  app:\n    image: x:1\n    build: {context: .}\n"
    )
    assert result.config["services"]["app"] == {"image": "x:1"}
    assert notes(result, "warning") == [
        "services.app.build: ignored: the image x:1 is run as it is (build it beforehand, "
        "e.g. with `docker compose build`)"
    ]


# --------------------------------------------------------------------------- project, detection


def test_project_from_name_env_or_folder(tmp_path: Path) -> None:
    assert convert(tmp_path, "name: vpn\nservices: {a: {image: x}}\n").config["project"] == "vpn"
    folder = tmp_path / "My_Stack.v2"
    folder.mkdir()
    path = write(folder, "services: {a: {image: x}}\n")
    assert convert_compose(path, environ={}).config["project"] == "my_stackv2"
    named = convert_compose(path, environ={"COMPOSE_PROJECT_NAME": "env-name"})
    assert named.config["project"] == "env-name"
    assert errors(tmp_path, "name: Bad Name\nservices: {a: {image: x}}\n")[0][0] == "name"


def test_supervisor_settings_ride_in_an_extension_key(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        name: p
        x-ovpn-supervisor:
          api: {listen: "127.0.0.1:9999"}
          defaults: {pull: never}
        services:
          a: {image: x}
        """,
    )
    stack, _ = load_compose(path, environ={})
    assert stack.api.listen == "127.0.0.1:9999"
    assert stack.services["a"].pull is PullPolicy.NEVER


@pytest.mark.timeout(10)
def test_a_problem_in_the_extension_key_points_at_its_line(tmp_path: Path) -> None:
    """Our `api.listen` sits at `x-ovpn-supervisor.api.listen` in the Compose file (looking
    it up at the top level used to loop forever: `check` and reload hung)."""
    path = write(
        tmp_path,
        """
        name: p
        services:
          a: {image: x}
        x-ovpn-supervisor:
          api:
            listen: "0.0.0.0:9180"
        """,
    )
    with pytest.raises(ConfigError) as info:
        load_compose(path, environ={})
    [problem] = info.value.problems
    assert (problem.path, problem.line) == ("api.listen", 6)
    assert "not a loopback address" in problem.message


def test_validation_problems_point_at_compose_lines(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        name: p
        services:
          app:
            image: x
            depends_on:
              - ghost
        """,
    )
    with pytest.raises(ConfigError) as info:
        load_compose(path, environ={})
    [problem] = info.value.problems
    assert problem.path == "services.app.depends_on.ghost"
    assert problem.file == str(path)
    assert problem.line == 6
    assert "unknown service 'ghost'" in problem.message


@pytest.mark.slow
def test_a_file_that_is_not_yaml_fails_with_line_and_column_and_writes_nothing(
    tmp_path: Path,
) -> None:
    compose = write(
        tmp_path,
        """
        services:
          db:
            image: {{ .Values.image.registry }}/postgres:{{ .Values.image.tag }}
        """,
    )
    [(path, line, message)] = errors(tmp_path, compose.read_text())
    assert (path, line) == ("", 3)
    assert message.startswith("YAML syntax error at column ")
    assert message.endswith("(a template expression {{ … }}: render the template first)")
    out = tmp_path / "supervisor.yaml"
    proc = run_cli("import-compose", str(compose), "-o", str(out), cwd=tmp_path)
    assert proc.returncode == 78
    assert f"{compose}:3: YAML syntax error at column" in proc.stderr
    assert not out.exists() and not list(tmp_path.glob("*.partial"))
    out.write_text("# an earlier config\n")
    assert run_cli("import-compose", str(compose), "-o", str(out), cwd=tmp_path).returncode == 78
    assert out.read_text() == "# an earlier config\n"


def test_detection() -> None:
    assert looks_like_compose({"services": {}})
    assert looks_like_compose({"version": "3.8", "services": {}})
    assert not looks_like_compose({"version": 1, "services": {}})
    assert not looks_like_compose({"project": "p", "services": {}})
    assert not looks_like_compose(["services"])


def test_load_stack_reads_both_kinds(tmp_path: Path) -> None:
    ours = write(tmp_path, "version: 1\nproject: p\nservices: {a: {image: x}}\n", "ours.yaml")
    compose = write(tmp_path, "name: q\nservices: {a: {image: x}}\n", "compose.yaml")
    assert load_stack(ours).project == "p"
    assert load_stack(compose).project == "q"


# --------------------------------------------------------------------------- the command


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "supervisor", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO_ROOT)},
        timeout=60,
        check=False,
    )


@pytest.mark.slow
def test_import_compose_writes_a_config_that_check_accepts(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("x")
    (tmp_path / "prod.env").write_text("TAG=9.9\n")
    write(
        tmp_path,
        """
        name: vpn
        services:
          db:
            image: postgres:${TAG}
            secrets: [pw]
            expose: [5432]
            healthcheck: {test: [CMD, pg_isready]}
        secrets:
          pw: {file: ./pw}
        """,
    )
    out = tmp_path / "etc" / "supervisor.yaml"
    out.parent.mkdir()
    proc = run_cli(
        "import-compose", "docker-compose.yml", "--env-file", "prod.env", "-o", str(out),
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "info: services.db.expose" in proc.stderr
    assert f"wrote {out}" in proc.stderr
    text = out.read_text()
    assert text.startswith("# Converted from")
    assert "image: postgres:9.9" in text
    assert "file: " + str(tmp_path / "pw") in text  # outside -o's folder: absolute
    check = run_cli("check", "--config", str(out), cwd=tmp_path)
    assert check.returncode == 0, check.stderr
    assert "valid (project vpn, 1 services)" in check.stdout


@pytest.mark.slow
def test_import_compose_to_stdout_and_refusal(tmp_path: Path) -> None:
    write(tmp_path, "name: vpn\nservices:\n  web:\n    image: x\n    privileged: true\n")
    refused = run_cli("import-compose", "docker-compose.yml", cwd=tmp_path)
    assert refused.returncode == 78
    assert "services.web.privileged" in refused.stderr
    assert "line 5" in refused.stderr or "docker-compose.yml:5" in refused.stderr
    assert refused.stdout == ""
    lenient = run_cli("import-compose", "docker-compose.yml", "--lenient", cwd=tmp_path)
    assert lenient.returncode == 0, lenient.stderr
    assert "warning: services.web.privileged" in lenient.stderr
    assert "project: vpn" in lenient.stdout


@pytest.mark.slow
def test_check_accepts_a_compose_file_directly(tmp_path: Path) -> None:
    write(tmp_path, "services:\n  web: {image: x}\n")
    proc = run_cli("check", "--config", "docker-compose.yml", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"project {tmp_path.name.lower().replace('.', '')}" in proc.stdout


# --------------------------------------------------------------------------- shipped config

PRODUCTION = REPO_ROOT / "config" / "production"


@pytest.mark.slow
def test_production_config_checks_once_its_secrets_are_generated(tmp_path: Path) -> None:
    # check verifies that secret files exist and hashes them (a changed secret recreates its
    # services), so the test works on a copy where generate-secrets has run, as an operator's.
    etc = tmp_path / "ovpn-supervisor"
    shutil.copytree(PRODUCTION, etc, ignore=shutil.ignore_patterns("secrets"))
    missing = run_cli("check", "--config", str(etc / "supervisor.yaml"), cwd=tmp_path)
    assert missing.returncode == 78
    assert "secrets.frontend_db_password.file: cannot read secret file" in missing.stderr

    env = {"PATH": "/usr/bin:/bin", "OIDC_CLIENT_SECRET": "from-the-idp"}
    generated = subprocess.run(
        [str(etc / "generate-secrets")], env=env, capture_output=True, text=True, check=False
    )
    assert generated.returncode == 0, generated.stderr
    secrets = etc / "secrets"
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o750
    assert (secrets / "oidc_client_secret").read_text() == "from-the-idp"
    password = (secrets / "ct_db_password").read_text()
    assert len(password) >= 32
    # Running it again keeps what exists.
    again = subprocess.run(
        [str(etc / "generate-secrets")], env=env, capture_output=True, text=True, check=False
    )
    assert again.returncode == 0
    assert (secrets / "ct_db_password").read_text() == password

    proc = run_cli("check", "--config", str(etc / "supervisor.yaml"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "valid (project ovpn, 9 services)" in proc.stdout
    stack = load_stack(etc / "supervisor.yaml")
    assert stack.networks["database-net"].internal
    assert {n: s.type for n, s in stack.services.items() if s.type is ServiceType.JOB} == {
        "signing-init": ServiceType.JOB,
        "certtransparency-migrate": ServiceType.JOB,
        "frontend-migrate": ServiceType.JOB,
    }
    for name in ("postgres-frontend", "postgres-ct"):
        health = stack.services[name].health
        assert health is not None
        assert isinstance(health.probe, ExecProbe)
        assert health.probe.command[0] == "pg_isready"
    assert stack.services["frontend"].environment["OIDC_CLIENT_ID"] == "vpn-manager"
    images = {s.image for s in stack.services.values()}
    assert "ghcr.io/oidc-vpn-manager/signing:latest" in images
