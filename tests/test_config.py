"""Config loading: every accepted form, and every rejection with its key path and line."""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

import pytest

from supervisor.config import (
    Condition,
    ConfigError,
    ConfigProblem,
    Dependency,
    ExecProbe,
    HttpProbe,
    NetworkConfig,
    PortMapping,
    PullPolicy,
    RestartPolicy,
    ServiceConfig,
    ServiceType,
    StackConfig,
    TcpProbe,
    VolumeMount,
    config_hash,
    container_hash,
    load_config,
    parse_config,
    parse_duration,
)
from supervisor.config_diff import diff_configs
from supervisor.daemon import Supervisor
from supervisor.graph import DependencyGraph
from supervisor.spec import container_spec, network_specs, volume_specs

FIXTURES = Path(__file__).parent / "fixtures" / "config"

HEAD = "version: 1\nproject: ovpn\n"


def yaml_text(body: str) -> str:
    """Dedented YAML whose first line is line 1."""
    return textwrap.dedent(body).lstrip("\n")


def parse(body: str, base_dir: Path | None = None) -> StackConfig:
    return parse_config(yaml_text(body), base_dir=base_dir)


def problems(body: str, base_dir: Path | None = None) -> list[tuple[str, int | None, str]]:
    with pytest.raises(ConfigError) as info:
        parse(body, base_dir)
    return [(p.path, p.line, p.message) for p in info.value.problems]


def service(body: str, name: str = "app", base_dir: Path | None = None) -> ServiceConfig:
    """Parse a one-service stack; `body` is the service's keys at column 0."""
    indented = textwrap.indent(yaml_text(body), "    ")
    stack = parse_config(f"{HEAD}services:\n  {name}:\n{indented}", base_dir=base_dir)
    return stack.services[name]


def service_problems(body: str, base_dir: Path | None = None) -> list[tuple[str, int | None, str]]:
    """Problems of a one-service stack "app"; its first key is on line 5."""
    indented = textwrap.indent(yaml_text(body), "    ")
    with pytest.raises(ConfigError) as info:
        parse_config(f"{HEAD}services:\n  app:\n{indented}", base_dir=base_dir)
    return [(p.path, p.line, p.message) for p in info.value.problems]


# --------------------------------------------------------------------------- durations


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("10s", 10.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("1m30s", 90.0),
        ("1.5s", 1.5),
        ("1h2m3s4ms", 3723.004),
        ("0s", 0.0),
    ],
)
def test_parse_duration_accepts(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "value", [10, 1.5, "10", "-5s", "10 seconds", "1s1m", "5s5s", "s", "", "1.s", None, True]
)
def test_parse_duration_rejects(value: object) -> None:
    with pytest.raises(ValueError, match=r"invalid duration .* \(use e\.g\. 500ms, 10s, 5m\)"):
        parse_duration(value)


# --------------------------------------------------------------------------- full fixture


@pytest.fixture(scope="module")
def full() -> StackConfig:
    return load_config(FIXTURES / "full.yaml")


def test_full_fixture_top_level(full: StackConfig) -> None:
    stack = full
    assert stack.source == FIXTURES / "full.yaml"
    assert stack.project == "ovpn"
    assert stack.version == 1
    assert stack.api.listen == "127.0.0.1:9180"
    assert stack.api.token_file == FIXTURES / "secrets" / "api_token"
    assert stack.defaults.health.start_interval == 0.2
    assert stack.defaults.restart.reset_after == 600.0
    assert list(stack.networks) == ["frontend-net", "backend-net", "database-net", "default"]
    assert stack.networks["database-net"] == NetworkConfig(internal=True)
    assert stack.volumes["pgdata-frontend"].driver == "local"
    assert stack.secrets["ct_db_password"].file == FIXTURES / "secrets" / "ct_db_password"
    assert list(stack.services) == [
        "postgres-ct",
        "postgres-frontend",
        "signing-init",
        "certtransparency-migrate",
        "frontend-migrate",
        "certtransparency",
        "signing",
        "frontend",
        "nginx",
        "debug-shell",
    ]


def test_full_fixture_databases(full: StackConfig) -> None:
    s = full.services
    pg = s["postgres-ct"]
    assert pg.health is not None
    assert pg.health.probe == ExecProbe(("pg_isready", "-U", "ct_user"))
    assert (pg.health.interval, pg.health.timeout, pg.health.retries) == (5.0, 3.0, 3)
    assert pg.stop.signal == "SIGINT"
    assert pg.stop.timeout == 30.0
    assert pg.volumes == (VolumeMount("volume", "pgdata-ct", "/var/lib/postgresql/data", False),)
    assert pg.secrets == ("ct_db_password",)
    assert pg.environment["POSTGRES_USER"] == "ct_user"

    pgf = s["postgres-frontend"]
    assert pgf.health is not None
    assert pgf.health.probe == ExecProbe(("/bin/sh", "-c", "pg_isready -U frontend"))


def test_full_fixture_jobs(full: StackConfig) -> None:
    s = full.services
    init = s["signing-init"]
    assert init.type is ServiceType.JOB
    assert init.restart.policy is RestartPolicy.NO  # jobs default to "no"
    assert init.entrypoint == ("/bin/sh", "-c")
    assert init.command == ("cp", "-a", "/pki-src/.", "/pki/")
    assert init.volumes[0] == VolumeMount("bind", str(FIXTURES / "pki"), "/pki-src", True)
    assert init.networks == ("default",)
    assert init.user == "0"

    migrate = s["certtransparency-migrate"]
    assert migrate.restart.policy is RestartPolicy.ON_FAILURE
    assert migrate.restart.limit_count == 3
    assert migrate.restart.limit_window == 600.0
    assert migrate.depends_on == {"postgres-ct": Dependency(Condition.HEALTHY)}
    assert s["frontend-migrate"].command == ("flask", "db", "upgrade")


def test_full_fixture_apps(full: StackConfig) -> None:
    s = full.services
    ct = s["certtransparency"]
    assert dict(ct.environment) == {
        "LOG_LEVEL": "info",
        "DB_HOST": "postgres-ct",
        "DB_NAME": "ct",
        "OVERRIDDEN": "from-config",
        "PORT": "8800",
    }
    assert ct.env_files == (FIXTURES / "certtransparency.env",)
    assert ct.health is not None
    assert ct.health.probe == HttpProbe(port=8800, path="/health")
    assert ct.restart.policy is RestartPolicy.ALWAYS
    assert ct.restart.backoff_max == 300.0
    assert dict(ct.labels) == {"team": "pki"}

    signing = s["signing"]
    assert list(signing.depends_on) == ["signing-init", "certtransparency"]
    assert signing.depends_on["certtransparency"] == Dependency(Condition.HEALTHY, restart=True)
    assert signing.health is not None
    assert signing.health.probe == HttpProbe(port=8500, path="/health")
    assert (signing.health.timeout, signing.health.retries) == (2.0, 5)
    assert (signing.user, signing.working_dir, signing.pull) == ("1000:1000", "/app", "never")

    frontend = s["frontend"]
    assert frontend.environment["FRONTEND_MODE"] == "production"
    assert frontend.health is not None
    assert frontend.health.probe == HttpProbe(url="http://127.0.0.1:8600/health")
    assert frontend.health.start_period == 60.0
    assert frontend.ports == (PortMapping(8600, 8600, "127.0.0.1", "tcp"),)
    r = frontend.restart
    assert (r.policy, r.backoff_initial, r.backoff_max, r.reset_after) == (
        RestartPolicy.ON_FAILURE,
        2.0,
        60.0,
        5400.0,
    )
    assert dict(frontend.labels) == {"tier": "web"}


def test_full_fixture_edge(full: StackConfig) -> None:
    s = full.services
    nginx = s["nginx"]
    assert nginx.depends_on == {"frontend": Dependency(Condition.STARTED)}
    assert nginx.ports == (
        PortMapping(443, 443, None, "tcp"),
        PortMapping(80, 8080, "127.0.0.1", "tcp"),
        PortMapping(9000, None, "127.0.0.1", "udp"),
    )
    assert nginx.volumes == (
        VolumeMount("bind", str(FIXTURES / "nginx.conf"), "/etc/nginx/nginx.conf", True),
    )
    assert nginx.health is not None
    assert nginx.health.probe == TcpProbe(443)
    assert nginx.stop.signal == "SIGQUIT"
    assert nginx.stop.timeout == 10.0

    shell = s["debug-shell"]
    assert shell.command == ("sleep", "3600")
    assert shell.restart.policy is RestartPolicy.UNLESS_STOPPED
    assert shell.pull is PullPolicy.ALWAYS


def test_config_is_read_only() -> None:
    stack = load_config(FIXTURES / "full.yaml")
    with pytest.raises(TypeError):
        stack.services["x"] = stack.services["nginx"]  # type: ignore[index]
    with pytest.raises(TypeError):
        stack.services["nginx"].environment["X"] = "1"  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        stack.project = "other"  # type: ignore[misc]


def test_graph_from_config() -> None:
    graph = load_config(FIXTURES / "full.yaml").graph()
    assert isinstance(graph, DependencyGraph)
    assert graph.levels()[0] == ["postgres-ct", "postgres-frontend", "signing-init", "debug-shell"]
    assert graph.transitive_dependents("certtransparency") == {"signing", "frontend", "nginx"}


# --------------------------------------------------------------------------- invalid fixtures


def fixture_problems(name: str) -> list[tuple[str, int | None, str]]:
    with pytest.raises(ConfigError) as info:
        load_config(FIXTURES / name)
    for problem in info.value.problems:
        assert problem.file == str(FIXTURES / name) or problem.file.endswith(".env")  # type: ignore[union-attr]
    return [(p.path, p.line, p.message) for p in info.value.problems]


def test_invalid_many_reports_everything() -> None:
    assert sorted(fixture_problems("invalid-many.yaml"), key=lambda p: (p[1], p[0])) == [
        ("services.signing.helth", 6, "unknown key (did you mean 'health'?)"),
        ("services.signing.depends_on.certtrans", 7, "unknown service 'certtrans'"),
        ("services.signing.networks[0]", 8, "unknown network 'backend-net'"),
        ("services.frontend.image", 9, "missing required key"),
        (
            "services.frontend.depends_on.signing",
            11,
            "condition 'healthy' but service 'signing' has no health probe",
        ),
        ("services.frontend.health.http.port", 13, "must be between 1 and 65535, got 70000"),
        (
            "services.frontend.health.interval",
            14,
            "invalid duration '10 seconds' (use e.g. 500ms, 10s, 5m)",
        ),
        (
            "services.frontend.volumes[0]",
            15,
            "unknown volume 'pgdata' (declare it under top-level volumes)",
        ),
        ("services.frontend.secrets[0]", 16, "unknown secret 'db_password'"),
    ]


def test_invalid_cycle_names_the_cycle() -> None:
    assert fixture_problems("invalid-cycle.yaml") == [
        ("services.a.depends_on.b", 6, "dependency cycle a -> b -> c -> a")
    ]


def test_invalid_duplicate_keys() -> None:
    assert fixture_problems("invalid-duplicate-keys.yaml") == [
        ("services.frontend.image", 8, "duplicate key (first defined at line 7)"),
        ("services.signing", 9, "duplicate key (first defined at line 4)"),
    ]


def test_invalid_syntax_one_problem_with_parser_line() -> None:
    [(path, line, message)] = fixture_problems("invalid-syntax.yaml")
    assert path == ""
    assert line == 6  # the parser notices the unclosed flow sequence at end of input
    assert message == (
        "YAML syntax error at column 1: while parsing a flow sequence: "
        "expected ',' or ']', but got '<stream end>'"
    )


def test_top_level_not_a_mapping() -> None:
    assert fixture_problems("invalid-top-level.yaml") == [
        ("", 1, "the top level must be a mapping, got a list")
    ]


def test_empty_file() -> None:
    assert fixture_problems("empty.yaml") == [("", None, "empty config file")]


def test_env_file_problems_name_file_and_line() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(FIXTURES / "invalid-env-file.yaml")
    bad, missing = info.value.problems
    assert bad == ConfigProblem(
        "services.app.env_file[0]",
        "invalid line in env file (expected KEY=VALUE; not shown, it may be secret)",
        str(FIXTURES / "bad.env"),
        3,
    )
    assert missing.path == "services.app.env_file[1]"
    assert missing.line == 6
    assert missing.file == str(FIXTURES / "invalid-env-file.yaml")
    assert str(FIXTURES / "missing.env") in missing.message
    assert "No such file" in missing.message


def test_missing_config_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.yaml")
    [problem] = info.value.problems
    assert problem.file == str(tmp_path / "nope.yaml")
    assert (
        str(info.value)
        == f"{tmp_path / 'nope.yaml'}: cannot read config: No such file or directory"
    )


# --------------------------------------------------------------------------- messages


def test_problem_str_forms() -> None:
    assert (
        str(ConfigProblem("services.signing.depends_on.certtrans", "unknown service", "s.yaml", 12))
        == "s.yaml:12: services.signing.depends_on.certtrans: unknown service"
    )
    assert str(ConfigProblem("project", "bad", None, None)) == "project: bad"
    assert str(ConfigProblem("project", "bad", "s.yaml", None)) == "s.yaml: project: bad"
    error = ConfigError([ConfigProblem("a", "x"), ConfigProblem("b", "y")])
    assert str(error) == "a: x\nb: y"


def test_source_file_in_problems() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config("version: 2\nproject: ovpn\n", source=Path("/etc/s.yaml"))
    assert str(info.value) == "/etc/s.yaml:1: version: unsupported version 2 (only 1 is known)"


# --------------------------------------------------------------------------- top level


def test_minimal_stack() -> None:
    stack = parse(HEAD)
    assert stack.services == {}
    assert stack.networks == {}  # no implicit "default" without a service using it
    assert stack.api.listen == "127.0.0.1:9180"
    assert stack.source is None


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("project: ovpn\n", [("version", 1, "missing required key")]),
        ("version: 1\n", [("project", 1, "missing required key")]),
        (
            "version: 1\nproject: Ovpn\n",
            [
                (
                    "project",
                    2,
                    "invalid project name 'Ovpn' (lowercase letters, digits, '_', '.', '-'; "
                    "starting with a letter or digit)",
                )
            ],
        ),
        ("version: '1'\nproject: ovpn\n", [("version", 1, "expected an integer, got a string")]),
        (HEAD + "service: {}\n", [("service", 3, "unknown key (did you mean 'services'?)")]),
        (HEAD + "services: []\n", [("services", 3, "expected a mapping, got a list")]),
        (
            HEAD + "api: {listen: localhost}\n",
            [
                (
                    "api.listen",
                    3,
                    "invalid address 'localhost' (use HOST:PORT or unix:///absolute/path)",
                )
            ],
        ),
        (
            HEAD + "defaults:\n  health: {probe: x}\n",
            [("defaults.health.probe", 4, "unknown key")],
        ),
        (
            HEAD + "defaults:\n  pull: sometimes\n",
            [("defaults.pull", 4, "invalid value 'sometimes' (one of: missing, always, never)")],
        ),
        (
            HEAD + "networks:\n  net:\n    internal: yes please\n",
            [("networks.net.internal", 5, "expected true or false, got a string")],
        ),
        (
            HEAD + "secrets:\n  s: {path: x}\n",
            [
                ("secrets.s.path", 4, "unknown key"),
                ("secrets.s.file", 4, "missing required key"),
            ],
        ),
        (
            HEAD + "services:\n  -bad:\n    image: x\n",
            [
                (
                    "services.-bad",
                    4,
                    "invalid service name '-bad' (letters, digits, '_', '.', '-'; "
                    "starting with a letter or digit)",
                )
            ],
        ),
    ],
)
def test_top_level_rejections(body: str, expected: list[tuple[str, int, str]]) -> None:
    assert problems(body) == expected


def test_api_forms(tmp_path: Path) -> None:
    (tmp_path / "tok").write_text("a-token-of-16-chars-or-more\n")
    (tmp_path / "tok").chmod(0o600)
    stack = parse(HEAD + "api: {listen: 'unix:///run/s.sock', token_file: tok}\n", tmp_path)
    assert stack.api.listen == "unix:///run/s.sock"
    assert stack.api.token_file == tmp_path / "tok"


def test_secret_file_must_exist(tmp_path: Path) -> None:
    found = problems(HEAD + "secrets:\n  pw: {file: nope}\n", tmp_path)
    assert found == [
        (
            "secrets.pw.file",
            4,
            f"cannot read secret file '{tmp_path / 'nope'}': No such file or directory",
        )
    ]


def test_defaults_apply_key_by_key() -> None:
    stack = parse(
        """
        version: 1
        project: ovpn
        defaults:
          health: {interval: 1m, retries: 5}
          restart: {policy: always, backoff: {max: 1m}}
          stop: {signal: 2, timeout: 1s}
          pull: never
        services:
          app:
            image: x
            health: {tcp: 80, retries: 2}
            restart: {backoff: {initial: 5s}}
          job:
            image: x
            type: job
          job2:
            image: x
            type: job
            restart: {policy: on-failure}
        """
    )
    app = stack.services["app"]
    assert app.health is not None
    assert (app.health.interval, app.health.retries, app.health.timeout) == (60.0, 2, 3.0)
    assert app.health.start_interval == 0.1
    assert app.restart.policy is RestartPolicy.ALWAYS
    assert (app.restart.backoff_initial, app.restart.backoff_max) == (5.0, 60.0)
    assert app.stop.signal == "SIGINT"
    assert app.pull is PullPolicy.NEVER
    assert stack.services["job"].restart.policy is RestartPolicy.NO
    assert stack.services["job2"].restart.policy is RestartPolicy.ON_FAILURE


# --------------------------------------------------------------------------- service forms


def test_service_defaults() -> None:
    app = service("image: x\n")
    assert app.type is ServiceType.SERVICE
    assert (app.command, app.entrypoint, app.health, app.user, app.working_dir) == (None,) * 5
    assert app.networks == ("default",)
    assert app.restart.policy is RestartPolicy.ON_FAILURE
    assert (app.restart.backoff_initial, app.restart.backoff_max) == (1.0, 300.0)
    assert (app.restart.limit_count, app.restart.limit_window) == (10, 600.0)
    assert (app.stop.signal, app.stop.timeout) == ("SIGTERM", 10.0)
    assert app.pull is PullPolicy.MISSING
    assert (app.environment, app.labels, app.depends_on) == ({}, {}, {})


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("command: echo 'a b' c\n", ("echo", "a b", "c")),
        ("command: [sleep, 10]\n", ("sleep", "10")),
        ("command: [chmod, 0755, f]\n", ("chmod", "0755", "f")),  # as written, not octal 493
        ("command: ''\n", ()),
    ],
)
def test_command_forms(body: str, expected: tuple[str, ...]) -> None:
    assert service("image: x\n" + body).command == expected


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("environment: {A: 1, B: true, C: null, D: 0755, E: 'x y'}\n", None),
        ("environment: [A=1, B=true, C=, D=0755, 'E=x y']\n", None),
    ],
)
def test_environment_forms(body: str, expected: None) -> None:
    env = service("image: x\n" + body).environment
    assert dict(env) == {"A": "1", "B": "true", "C": "", "D": "0755", "E": "x y"}


def test_env_file_merge_order(tmp_path: Path) -> None:
    (tmp_path / "one.env").write_text("A=one\nB=one\n  # indented comment\nexport C = 'c c' \n")
    (tmp_path / "two.env").write_text('B=two\nD="#not a comment"\n')
    app = service(
        "image: x\nenv_file: [one.env, two.env]\nenvironment: {A: config}\n", base_dir=tmp_path
    )
    assert dict(app.environment) == {"A": "config", "B": "two", "C": "c c", "D": "#not a comment"}
    assert app.env_files == (tmp_path / "one.env", tmp_path / "two.env")


def test_env_file_single_string_path(tmp_path: Path) -> None:
    found = service_problems("image: x\nenv_file: gone.env\n", tmp_path)
    assert found == [
        (
            "services.app.env_file",
            6,
            f"cannot read env file '{tmp_path / 'gone.env'}': No such file or directory",
        )
    ]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ('ports: ["8080"]', PortMapping(8080, None, None, "tcp")),
        ("ports: [8080]", PortMapping(8080, None, None, "tcp")),
        ('ports: ["8080:80"]', PortMapping(80, 8080, None, "tcp")),
        ("ports: [22:22]", PortMapping(22, 22, None, "tcp")),  # YAML 1.1 base-60 trap
        ('ports: ["127.0.0.1:8080:80"]', PortMapping(80, 8080, "127.0.0.1", "tcp")),
        ('ports: ["127.0.0.1::80"]', PortMapping(80, None, "127.0.0.1", "tcp")),
        ('ports: ["53:53/udp"]', PortMapping(53, 53, None, "udp")),
        ('ports: ["[::1]:8080:80/tcp"]', PortMapping(80, 8080, "::1", "tcp")),
        ("ports: [{target: 80}]", PortMapping(80, None, None, "tcp")),
        (
            "ports: [{target: 80, published: '8080', host_ip: 127.0.0.1, protocol: udp}]",
            PortMapping(80, 8080, "127.0.0.1", "udp"),
        ),
    ],
)
def test_port_forms(body: str, expected: PortMapping) -> None:
    assert service("image: x\n" + body + "\n").ports == (expected,)


@pytest.mark.parametrize(
    ("body", "path", "message"),
    [
        ('ports: ["0"]', "services.app.ports[0]", "port 0 out of range (1-65535) in '0'"),
        (
            'ports: ["70000:80"]',
            "services.app.ports[0]",
            "port 70000 out of range (1-65535) in '70000:80'",
        ),
        (
            'ports: ["80/sctp"]',
            "services.app.ports[0]",
            "invalid protocol 'sctp' in '80/sctp' (tcp or udp)",
        ),
        ('ports: ["a:80"]', "services.app.ports[0]", "invalid port 'a' in 'a:80'"),
        (
            'ports: ["host:1:80"]',
            "services.app.ports[0]",
            "invalid IP address 'host' in 'host:1:80'",
        ),
        (
            "ports: [{target: 99999}]",
            "services.app.ports[0].target",
            "must be between 1 and 65535, got 99999",
        ),
        ("ports: [{published: 80}]", "services.app.ports[0].target", "missing required key"),
    ],
)
def test_port_rejections(body: str, path: str, message: str) -> None:
    assert service_problems("image: x\n" + body + "\n") == [(path, 6, message)]


def test_same_host_port_twice() -> None:
    found = problems(
        HEAD
        + "services:\n  a:\n    image: x\n    ports: ['8080:80']\n"
        + "  b:\n    image: x\n    ports: ['127.0.0.1:8080:80', '8080:80/udp']\n"
    )
    assert found == [
        ("services.b.ports[0]", 9, "host port 8080/tcp is already published by service 'a'")
    ]


def test_volume_forms(tmp_path: Path) -> None:
    stack = parse(
        HEAD
        + "volumes: {data: {}}\nservices:\n  app:\n    image: x\n    volumes:\n"
        + "      - data:/data\n"
        + "      - data:/ro:ro\n"
        + "      - ./conf:/etc/conf:ro\n"
        + "      - /abs:/abs:rw\n"
        + "      - ~/home:/home\n"
        + "      - {type: bind, source: rel, target: /rel}\n"
        + "      - {source: data, target: /long, read_only: true}\n",
        tmp_path,
    )
    assert stack.services["app"].volumes == (
        VolumeMount("volume", "data", "/data", False),
        VolumeMount("volume", "data", "/ro", True),
        VolumeMount("bind", str(tmp_path / "conf"), "/etc/conf", True),
        VolumeMount("bind", "/abs", "/abs", False),
        VolumeMount("bind", str(Path("~/home").expanduser()), "/home", False),
        VolumeMount("bind", str(tmp_path / "rel"), "/rel", False),
        VolumeMount("volume", "data", "/long", True),
    )


@pytest.mark.parametrize(
    ("entry", "path", "message"),
    [
        ("data", "services.app.volumes[0]", "expected SOURCE:TARGET[:ro|rw], got 'data'"),
        ("data:/d:rx", "services.app.volumes[0]", "invalid mode 'rx' (ro or rw)"),
        ("data:rel", "services.app.volumes[0]", "target must be an absolute path, got 'rel'"),
        (
            "{type: tmpfs, source: a, target: /a}",
            "services.app.volumes[0].type",
            "invalid value 'tmpfs' (one of: volume, bind)",
        ),
        (
            "nope:/d",
            "services.app.volumes[0]",
            "unknown volume 'nope' (declare it under top-level volumes)",
        ),
    ],
)
def test_volume_rejections(entry: str, path: str, message: str) -> None:
    body = (
        HEAD + f"volumes: {{data: {{}}}}\nservices:\n  app:\n    image: x\n    volumes: [{entry}]\n"
    )
    assert problems(body) == [(path, 7, message)]


def test_duplicate_mount_target() -> None:
    body = HEAD + "volumes: {data: {}}\nservices:\n  app:\n    image: x\n    volumes:\n"
    body += "      - data:/d\n      - /host:/d\n"
    assert problems(body) == [
        ("services.app.volumes[1]", 9, "target '/d' already mounted by item 0")
    ]


@pytest.mark.parametrize(
    ("body", "probe"),
    [
        ("health: {http: {port: 80}}", HttpProbe(port=80, path="/health")),
        ("health: {http: {port: 80, path: /ready}}", HttpProbe(port=80, path="/ready")),
        ("health: {http: {url: 'https://h/x'}}", HttpProbe(url="https://h/x", scheme="https")),
        ("health: {tcp: {port: 5432}}", TcpProbe(5432)),
        ("health: {tcp: 5432}", TcpProbe(5432)),
        ("health: {exec: [pg_isready, -U, x]}", ExecProbe(("pg_isready", "-U", "x"))),
        ("health: {exec: 'test -f /ok'}", ExecProbe(("/bin/sh", "-c", "test -f /ok"))),
    ],
)
def test_probe_forms(body: str, probe: object) -> None:
    health = service("image: x\n" + body + "\n").health
    assert health is not None
    assert health.probe == probe
    assert (health.interval, health.timeout, health.retries) == (10.0, 3.0, 3)
    assert (health.start_period, health.start_interval) == (30.0, 0.1)


@pytest.mark.parametrize(
    ("body", "path", "line", "message"),
    [
        (
            "health: {interval: 5s}",
            "services.app.health",
            6,
            "needs exactly one probe: http, tcp or exec (got none)",
        ),
        (
            "health: {tcp: 1, exec: x}",
            "services.app.health",
            6,
            "needs exactly one probe: http, tcp or exec (got tcp, exec)",
        ),
        (
            "health: {http: {path: /x}}",
            "services.app.health.http",
            6,
            "needs exactly one of port or url",
        ),
        (
            "health: {http: {url: 'ftp://h/'}}",
            "services.app.health.http.url",
            6,
            "expected an http:// or https:// URL, got 'ftp://h/'",
        ),
        (
            "health: {http: {url: 'http://h/', path: /x}}",
            "services.app.health.http.path",
            6,
            "not allowed with url (put the path in the url)",
        ),
        (
            "health: {http: {port: 80, path: x}}",
            "services.app.health.http.path",
            6,
            "must start with '/', got 'x'",
        ),
        ("health: {tcp: 0}", "services.app.health.tcp", 6, "must be between 1 and 65535, got 0"),
        ("health: {exec: []}", "services.app.health.exec", 6, "empty command"),
        (
            "health:\n  tcp: 80\n  interval: 10 seconds",
            "services.app.health.interval",
            8,
            "invalid duration '10 seconds' (use e.g. 500ms, 10s, 5m)",
        ),
        (
            "health:\n  tcp: 80\n  timeout: 0s",
            "services.app.health.timeout",
            8,
            "must be longer than 0, got '0s'",
        ),
        (
            "health:\n  tcp: 80\n  retries: 0",
            "services.app.health.retries",
            8,
            "must be at least 1, got 0",
        ),
        (
            "health:\n  tcp: 80\n  intreval: 1s",
            "services.app.health.intreval",
            8,
            "unknown key (did you mean 'interval'?)",
        ),
    ],
)
def test_health_rejections(body: str, path: str, line: int, message: str) -> None:
    assert service_problems("image: x\n" + body + "\n") == [(path, line, message)]


@pytest.mark.parametrize(
    ("body", "path", "line", "message"),
    [
        ("image: 3", "services.app.image", 5, "expected a string, got an integer"),
        (
            "image: x\ntype: daemon",
            "services.app.type",
            6,
            "invalid value 'daemon' (one of: service, job)",
        ),
        (
            "image: x\nhealthcheck: {}",
            "services.app.healthcheck",
            6,
            "unknown key (did you mean 'health'?)",
        ),
        ("image: x\nfoo: 1", "services.app.foo", 6, "unknown key"),
        (
            'image: x\ncommand: "it\'s"',
            "services.app.command",
            6,
            'cannot split "it\'s": No closing quotation',
        ),
        (
            "image: x\ncommand: {a: b}",
            "services.app.command",
            6,
            "expected a string or a list, got a mapping",
        ),
        (
            "image: x\nenvironment: [NOVALUE]",
            "services.app.environment[0]",
            6,
            "expected 'KEY=VALUE', got 'NOVALUE'",
        ),
        (
            "image: x\nenvironment: {A: [1]}",
            "services.app.environment.A",
            6,
            "expected a string, got a list",
        ),
        (
            "image: x\nworking_dir: app",
            "services.app.working_dir",
            6,
            "must be an absolute path, got 'app'",
        ),
        (
            "image: x\nnetworks: []",
            "services.app.networks",
            6,
            "empty list (omit the key to use 'default')",
        ),
        (
            "image: x\nnetworks: [nowhere]",
            "services.app.networks[0]",
            6,
            "unknown network 'nowhere'",
        ),
        ("image: x\nsecrets: [nothing]", "services.app.secrets[0]", 6, "unknown secret 'nothing'"),
        (
            "image: x\nlabels: {io.ovpn-supervisor.project: x}",
            "services.app.labels.io.ovpn-supervisor.project",
            6,
            "labels starting with 'io.ovpn-supervisor.' are reserved",
        ),
        (
            "image: x\npull: sometimes",
            "services.app.pull",
            6,
            "invalid value 'sometimes' (one of: missing, always, never)",
        ),
        (
            "image: x\nstop: {signal: SIGNOPE}",
            "services.app.stop.signal",
            6,
            "unknown signal 'SIGNOPE' (use e.g. SIGTERM, TERM or 15)",
        ),
        (
            "image: x\nstop: {signal: 999}",
            "services.app.stop.signal",
            6,
            "unknown signal 999 (use e.g. SIGTERM, TERM or 15)",
        ),
        (
            "image: x\nstop: {timeout: 10}",
            "services.app.stop.timeout",
            6,
            "invalid duration 10 (use e.g. 500ms, 10s, 5m)",
        ),
        (
            "image: x\nrestart: {policy: sometimes}",
            "services.app.restart.policy",
            6,
            "invalid value 'sometimes' (one of: no, on-failure, always, unless-stopped)",
        ),
        (
            "image: x\nrestart:\n  backoff: {initial: 1m, max: 10s}",
            "services.app.restart.backoff.max",
            7,
            "backoff max (10s) is shorter than initial (60s)",
        ),
        (
            "image: x\nrestart:\n  limit: {count: 0}",
            "services.app.restart.limit.count",
            7,
            "must be at least 1, got 0",
        ),
        (
            "image: x\ntype: job\nrestart: always",
            "services.app.restart.policy",
            7,
            "a job cannot use restart policy 'always' (use 'no' or 'on-failure')",
        ),
        (
            "image: x\ntype: job\nhealth: {tcp: 1}",
            "services.app.health",
            7,
            "a job cannot have a health probe (its exit code is its result)",
        ),
    ],
)
def test_service_rejections(body: str, path: str, line: int, message: str) -> None:
    assert service_problems(body + "\n") == [(path, line, message)]


@pytest.mark.parametrize(
    ("value", "expected"),
    [("TERM", "SIGTERM"), ("SIGKILL", "SIGKILL"), ("15", "SIGTERM"), ("hup", "SIGHUP")],
)
def test_stop_signal_forms(value: str, expected: str) -> None:
    assert service(f"image: x\nstop: {{signal: {value}}}\n").stop.signal == expected


def test_restart_no_unquoted() -> None:
    # YAML 1.1 reads a bare `no` as false; it still means policy "no".
    assert service("image: x\nrestart: {policy: no}\n").restart.policy is RestartPolicy.NO
    assert service("image: x\nrestart: no\n").restart.policy is RestartPolicy.NO


def test_user_forms() -> None:
    assert service("image: x\nuser: 1000\n").user == "1000"
    assert service("image: x\nuser: 'app:app'\n").user == "app:app"


# --------------------------------------------------------------------------- dependencies


def test_depends_on_forms() -> None:
    stack = parse(
        """
        version: 1
        project: ovpn
        services:
          db: {image: x, health: {tcp: 1}}
          job: {image: x, type: job}
          web: {image: x}
          a:
            image: x
            depends_on: [db, web]
          b:
            image: x
            depends_on: {web: started, db: healthy, job: {condition: completed, restart: true}, c:}
          c: {image: x}
        """
    )
    assert stack.services["a"].depends_on == {
        "db": Dependency(Condition.STARTED),
        "web": Dependency(Condition.STARTED),
    }
    b = stack.services["b"].depends_on
    assert list(b) == ["web", "db", "job", "c"]
    assert b["db"] == Dependency(Condition.HEALTHY)
    assert b["job"] == Dependency(Condition.COMPLETED, restart=True)
    assert b["c"] == Dependency(Condition.STARTED)


def test_dependency_rejections() -> None:
    found = problems(
        """
        version: 1
        project: ovpn
        services:
          job: {image: x, type: job}
          web: {image: x}
          signing:
            image: x
            depends_on:
              certtrans: started
              signing: started
              web: completed
              job: healthy
          frontend:
            image: x
            depends_on:
              signing: healthy
              web: {condition: ready, restart: 1}
              job: {conditoin: completed}
        """
    )
    assert found == [
        (
            "services.frontend.depends_on.web.condition",
            17,
            "invalid value 'ready' (one of: started, healthy, completed)",
        ),
        ("services.frontend.depends_on.web.restart", 17, "expected true or false, got an integer"),
        (
            "services.frontend.depends_on.job.conditoin",
            18,
            "unknown key (did you mean 'condition'?)",
        ),
        ("services.signing.depends_on.certtrans", 9, "unknown service 'certtrans'"),
        ("services.signing.depends_on.signing", 10, "a service cannot depend on itself"),
        (
            "services.signing.depends_on.web",
            11,
            "condition 'completed' but service 'web' is not a job",
        ),
        (
            "services.signing.depends_on.job",
            12,
            "condition 'healthy' but service 'job' is a job (use 'completed')",
        ),
        (
            "services.frontend.depends_on.signing",
            16,
            "condition 'healthy' but service 'signing' has no health probe",
        ),
    ]


def test_depends_on_listed_twice() -> None:
    found = service_problems("image: x\ndepends_on: [app2, app2]\n")
    assert found[0] == ("services.app.depends_on[1]", 6, "service 'app2' listed twice")


def test_cycle_through_map_form() -> None:
    found = problems(
        """
        version: 1
        project: ovpn
        services:
          x: {image: i}
          a: {image: i, depends_on: {x: started, b: started}}
          b:
            image: i
            depends_on:
              a: started
        """
    )
    assert found == [("services.a.depends_on.b", 5, "dependency cycle a -> b -> a")]


# --------------------------------------------------------------------------- YAML details


def test_duplicate_key_deep() -> None:
    found = service_problems("image: x\nhealth:\n  tcp: 1\n  tcp: 2\n")
    assert found == [("services.app.health.tcp", 8, "duplicate key (first defined at line 7)")]


def test_merge_keys_are_not_duplicates() -> None:
    stack = parse(
        """
        version: 1
        project: ovpn
        services:
          base: &base {image: busybox, user: '1'}
          app:
            <<: *base
            user: '2'
        """
    )
    assert stack.services["app"].user == "2"
    assert stack.services["app"].image == "busybox"


def test_anchor_reuse_keeps_lines() -> None:
    found = problems(
        """
        version: 1
        project: ovpn
        services:
          a: &svc
            image: x
            ports: ['0']
          b: *svc
        """
    )
    assert found == [
        ("services.a.ports[0]", 6, "port 0 out of range (1-65535) in '0'"),
        ("services.b.ports[0]", 6, "port 0 out of range (1-65535) in '0'"),
    ]


# --------------------------------------------------------------------------- hash


def _hash_fixture(tmp_path: Path) -> Path:
    (tmp_path / "app.env").write_text("A=1\n")
    (tmp_path / "pw").write_text("secret-1")
    config = tmp_path / "s.yaml"
    config.write_text(
        yaml_text(
            """
            version: 1
            project: ovpn
            networks: {back: {}}
            secrets: {pw: {file: pw}}
            services:
              app:
                image: x
                env_file: [app.env]
                networks: [back]
                secrets: [pw]
              other: {image: y}
            """
        )
    )
    return config


def _hashes(config: Path) -> tuple[str, str]:
    stack = load_config(config)
    return config_hash(stack, stack.services["app"]), config_hash(stack, stack.services["other"])


def test_hash_is_stable(tmp_path: Path) -> None:
    config = _hash_fixture(tmp_path)
    first = _hashes(config)
    assert first == _hashes(config)
    assert len(first[0]) == 16
    assert all(c in "0123456789abcdef" for c in first[0])
    assert first[0] != first[1]


def test_hash_changes_with_env_file_contents(tmp_path: Path) -> None:
    config = _hash_fixture(tmp_path)
    before = _hashes(config)
    (tmp_path / "app.env").write_text("A=2\n")
    after = _hashes(config)
    assert after[0] != before[0]
    assert after[1] == before[1]


def test_hash_changes_with_secret_contents(tmp_path: Path) -> None:
    config = _hash_fixture(tmp_path)
    before = _hashes(config)
    (tmp_path / "pw").write_text("secret-2")
    after = _hashes(config)
    assert after[0] != before[0]
    assert after[1] == before[1]


def test_hash_changes_with_network_definition(tmp_path: Path) -> None:
    config = _hash_fixture(tmp_path)
    before = _hashes(config)
    config.write_text(config.read_text().replace("back: {}", "back: {internal: true}"))
    after = _hashes(config)
    assert after[0] != before[0]
    assert after[1] == before[1]


def test_hash_changes_with_service_config(tmp_path: Path) -> None:
    config = _hash_fixture(tmp_path)
    before = _hashes(config)
    config.write_text(config.read_text().replace("image: x", "image: x2"))
    assert _hashes(config)[0] != before[0]


def test_hash_ignores_env_file_location(tmp_path: Path) -> None:
    config = _hash_fixture(tmp_path)
    before = _hashes(config)
    (tmp_path / "app.env").rename(tmp_path / "moved.env")
    config.write_text(config.read_text().replace("app.env", "moved.env"))
    assert _hashes(config)[0] == before[0]


def test_hash_of_hand_built_config() -> None:
    # Other modules' tests build configs directly; the hash must work without files.
    stack = StackConfig(project="p", services={"a": ServiceConfig(name="a", image="x")})
    assert config_hash(stack, stack.services["a"]) == config_hash(stack, stack.services["a"])


def test_volume_name_sets_the_docker_name_and_is_part_of_the_container_hash() -> None:
    text = (
        "version: 1\nproject: p\nvolumes: {data: {name: p_data}}\n"
        "services:\n  db: {image: x, volumes: ['data:/var/lib/data']}\n"
    )
    stack = parse_config(text)
    assert [v.name for v in volume_specs(stack)] == ["p_data"]
    assert container_spec(stack, stack.services["db"]).volume_mounts[0].source == "p_data"
    renamed = parse_config(text.replace("name: p_data", "name: other"))
    assert container_hash(stack, stack.services["db"]) != container_hash(
        renamed, renamed.services["db"]
    )
    unnamed = parse_config(text.replace("{name: p_data}", "{}"))
    assert [v.name for v in volume_specs(unnamed)] == ["p-data"]


def test_volume_name_must_be_a_docker_name() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config("version: 1\nproject: p\nvolumes: {data: {name: 'no/slash'}}\nservices: {}\n")
    assert any(p.path == "volumes.data.name" for p in caught.value.problems)


# --------------------------------------------------------------------------- https probes

PEM_CA = Path(__file__).parent / "fixtures" / "config" / "probe-ca.pem"


def test_https_probe_forms(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_bytes(PEM_CA.read_bytes())
    insecure = service("image: x\nhealth: {http: {port: 8600, scheme: https, tls_verify: false}}")
    assert insecure.health is not None
    assert insecure.health.probe == HttpProbe(port=8600, scheme="https", tls_verify=False)
    trusting = service(
        "image: x\nhealth: {http: {port: 8600, scheme: https, ca_file: ca.pem}}", base_dir=tmp_path
    )
    assert trusting.health is not None
    probe = trusting.health.probe
    assert isinstance(probe, HttpProbe)
    # Relative to the config's folder, like env files and secrets.
    assert (probe.scheme, probe.tls_verify, probe.ca_file) == ("https", True, tmp_path / "ca.pem")
    assert probe.ca_digest is not None and len(probe.ca_digest) == 64
    by_url = service("image: x\nhealth: {http: {url: 'https://h:1/x', tls_verify: false}}")
    assert by_url.health is not None
    assert by_url.health.probe == HttpProbe(url="https://h:1/x", scheme="https", tls_verify=False)
    plain = service("image: x\nhealth: {http: {port: 80, scheme: http}}")
    assert plain.health is not None and plain.health.probe == HttpProbe(port=80)


@pytest.mark.parametrize(
    ("http", "path", "message"),
    [
        ("{port: 1, scheme: ftp}", "scheme", "invalid value 'ftp' (one of: http, https)"),
        (
            "{port: 1, scheme: https, ca_file: missing.pem}",
            "ca_file",
            "cannot read CA file '{dir}/missing.pem': No such file or directory",
        ),
        (
            "{port: 1, scheme: https, ca_file: not.pem}",
            "ca_file",
            "'{dir}/not.pem' is not a PEM CA bundle (no certificate in it)",
        ),
        (
            "{port: 1, scheme: https, ca_file: broken.pem}",
            "ca_file",
            "'{dir}/broken.pem' is not a PEM CA bundle (no certificate in it)",
        ),
        (
            "{port: 1, scheme: https, tls_verify: false, ca_file: ca.pem}",
            "tls_verify",
            "false accepts any certificate: it cannot go with ca_file (drop one of them)",
        ),
        ("{port: 1, ca_file: ca.pem}", "ca_file", "applies only to https (set scheme: https)"),
        (
            "{port: 1, scheme: http, tls_verify: false}",
            "tls_verify",
            "applies only to https (set scheme: https)",
        ),
        (
            "{url: 'http://h/', ca_file: ca.pem}",
            "ca_file",
            "applies only to https (set scheme: https)",
        ),
        (
            "{port: 1, scheme: https, tls_verify: 'no'}",
            "tls_verify",
            "expected true or false, got a string",
        ),
        (
            "{url: 'https://h/', scheme: https}",
            "scheme",
            "not allowed with url (put the scheme in the url)",
        ),
    ],
)
def test_https_probe_rejections(tmp_path: Path, http: str, path: str, message: str) -> None:
    (tmp_path / "ca.pem").write_bytes(PEM_CA.read_bytes())
    (tmp_path / "not.pem").write_text("just text\n")
    (tmp_path / "broken.pem").write_text(
        "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n"
    )
    found = service_problems(f"image: x\nhealth: {{http: {http}}}\n", base_dir=tmp_path)
    assert found == [(f"services.app.health.http.{path}", 6, message.format(dir=tmp_path))]


def test_ca_file_content_is_part_of_the_service_identity(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_bytes(PEM_CA.read_bytes())
    config = tmp_path / "s.yaml"
    config.write_text(
        HEAD + "services:\n  app:\n    image: x\n"
        "    health: {http: {port: 8600, scheme: https, ca_file: ca.pem}}\n"
    )
    before = load_config(config)
    ca.write_bytes(PEM_CA.read_bytes() + PEM_CA.read_bytes())  # a re-issued bundle
    after = load_config(config)
    app_before, app_after = before.services["app"], after.services["app"]
    assert config_hash(before, app_before) != config_hash(after, app_after)
    # A probe setting: applied in place on reload, the container is kept.
    assert container_hash(before, app_before) == container_hash(after, app_after)
    assert diff_configs(before, after).updated == ("app",)
    # And the daemon watches the bundle, as it watches env and secret files.
    daemon = Supervisor(config, after, runtime=None)  # type: ignore[arg-type]
    assert ca in daemon.watched_files()


# --------------------------------------------------------------------------- network names


def test_network_name_sets_the_docker_name_and_is_part_of_the_container_hash() -> None:
    text = (
        "version: 1\nproject: p\nnetworks: {default: {name: shared-net}, back: {}}\n"
        "services:\n  app: {image: x}\n  db: {image: x, networks: [back]}\n"
    )
    stack = parse_config(text)
    assert stack.networks["default"] == NetworkConfig(name="shared-net")
    assert sorted(n.name for n in network_specs(stack)) == ["p-back", "shared-net"]
    assert container_spec(stack, stack.services["app"]).networks == ("shared-net",)
    assert container_spec(stack, stack.services["db"]).networks == ("p-back",)
    renamed = parse_config(text.replace("shared-net", "other-net"))
    assert container_hash(stack, stack.services["app"]) != container_hash(
        renamed, renamed.services["app"]
    )
    assert container_hash(stack, stack.services["db"]) == container_hash(
        renamed, renamed.services["db"]
    )
    assert diff_configs(stack, renamed).not_applied == (
        "network default redefined: an existing Docker network cannot change in place; "
        "run `ovpn-supervisor down` and start again to apply",
    )


def test_network_name_must_be_a_docker_name() -> None:
    found = problems("version: 1\nproject: p\nnetworks: {n: {name: 'a b'}}\nservices: {}\n")
    assert found == [("networks.n.name", 3, "invalid Docker network name 'a b'")]
