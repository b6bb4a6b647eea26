"""The upstream VPN Manager's own Compose files import as the issue says (no engine).

They are third-party files: read from `<repo>/../shared/realworld/` at run time, never copied
into the project. A missing folder fails the tests.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO_ROOT
from daemon_process import run_cli

from supervisor.compose import load_compose
from supervisor.config import ConfigError, RestartPolicy, ServiceType, StackConfig
from supervisor.spec import container_spec


def _realworld() -> Path:
    """`<repo>/../shared/realworld`; from a git worktree, beside the main clone as well."""
    roots = [REPO_ROOT]
    common = subprocess.run(
        ["git", "rev-parse", "--path-format=absolute", "--git-common-dir"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if common.returncode == 0:
        roots.append(Path(common.stdout.strip()).parent)
    candidates = [root.parent / "shared" / "realworld" for root in roots]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    pytest.fail(f"the upstream files are missing: looked in {', '.join(map(str, candidates))}")


REALWORLD = _realworld()
CI_STACK = REALWORLD / "end-to-end-tests" / "tests" / "docker-compose.yml"
PRODUCTION = REALWORLD / "deploy-with-docker" / "docker-compose.yml"
PRODUCTION_V1 = REALWORLD / "deploy-with-docker" / "docker-compose.v1.0.0.yml"
IDP_DEFAULT = "https://tinyoidc.authenti-kate.org/.well-known/openid-configuration"
BUILT = {
    "certtransparency": (36, "ghcr.io/oidc-vpn-manager/certtransparency:latest"),
    "frontend": (80, "ghcr.io/oidc-vpn-manager/frontend:latest"),
    "signing": (191, "ghcr.io/oidc-vpn-manager/signing:latest"),
    "tiny-oidc": (208, "ghcr.io/authenti-kate/tiny-oidc:latest"),
}


@pytest.fixture(scope="module")
def ci_stack(tmp_path_factory: pytest.TempPathFactory) -> tuple[StackConfig, Any]:
    # Strict (no --lenient), with no variables from the shell.
    return load_compose(CI_STACK, environ={}, out_dir=tmp_path_factory.mktemp("ci"))


def test_ci_stack_imports_without_lenient_and_its_warnings_are_the_build_keys(
    ci_stack: tuple[StackConfig, Any],
) -> None:
    _, result = ci_stack
    warnings = [(n.path, n.line, n.message) for n in result.notes if n.level == "warning"]
    assert warnings == [
        (
            f"services.{name}.build",
            line,
            f"ignored: the image {image} is run as it is (build it beforehand, e.g. with "
            "`docker compose build`)",
        )
        for name, (line, image) in sorted(BUILT.items(), key=lambda item: item[1][0])
    ]


def test_ci_stack_network_jobs_and_restart(ci_stack: tuple[StackConfig, Any]) -> None:
    stack, _ = ci_stack
    # The fixed network other stacks attach to keeps its Docker name.
    assert stack.networks["default"].name == "oidc-vpn-manager-tests"
    assert container_spec(stack, stack.services["signing"]).networks == ("oidc-vpn-manager-tests",)
    jobs = {n for n, s in stack.services.items() if s.type is ServiceType.JOB}
    # sqlite-volume-permissions has no restart key at all; the others are waited on as well.
    assert jobs == {
        "sqlite-volume-permissions",
        "certtransparency-migrate",
        "frontend-migrate",
        "signing-init",
    }
    assert all(stack.services[j].restart.policy is RestartPolicy.NO for j in jobs)
    assert stack.services["certtransparency"].restart.policy is RestartPolicy.NO
    # Its string command, split as a shell would.
    assert stack.services["sqlite-volume-permissions"].command == (
        "sh", "-x", "-e", "-E", "-c",
        "mkdir -p /data/sqlite && chmod 777 /data/sqlite && chown -R 1001:1001 /data/sqlite",
    )  # fmt: skip
    assert stack.services["tiny-oidc"].image == BUILT["tiny-oidc"][1]


def test_ci_stack_env_files_read_as_compose_reads_them(ci_stack: tuple[StackConfig, Any]) -> None:
    stack, _ = ci_stack
    ct = stack.services["certtransparency"].environment
    # Single-quoted value; no newline after the file's last line.
    assert ct["DEV_DATABASE_URI"] == "sqlite:////data/sqlite/certtransparency_service.db"
    assert ct["ENABLE_APPLICATION_TLS"] == "false"
    frontend = stack.services["frontend"].environment
    assert frontend["OIDC_CLIENT_SECRET"] == "Super-+Secret_=Key0123456789"  # '=' in the value
    assert frontend["OIDC_DISCOVERY_URL"] == IDP_DEFAULT  # ${VAR:-default} in the env file
    assert frontend["FERNET_ENCRYPTION_KEY"] == "YenxIAHqvrO7OHbNXvzAxEhthHCaitvnV9CALkQvvCc="
    override, _ = load_compose(CI_STACK, environ={"OIDC_DISCOVERY_URL": "https://idp.test/"})
    assert override.services["frontend"].environment["OIDC_DISCOVERY_URL"] == "https://idp.test/"


@pytest.mark.slow
def test_imported_ci_stack_passes_check(tmp_path: Path) -> None:
    out = tmp_path / "supervisor.yaml"
    imported = run_cli("import-compose", str(CI_STACK), "-o", str(out), cwd=tmp_path)
    assert imported.returncode == 0, imported.stderr
    assert imported.stderr.count("warning: ") == len(BUILT)
    check = run_cli("check", "--config", str(out), cwd=tmp_path)
    assert check.returncode == 0, check.stderr
    assert "valid (project tests, 10 services)" in check.stdout


@pytest.mark.parametrize("compose", [PRODUCTION, PRODUCTION_V1], ids=["main", "v1.0.0"])
@pytest.mark.slow
def test_production_file_is_not_yaml_and_fails_with_line_and_column(
    tmp_path: Path, compose: Path
) -> None:
    # Its PostgreSQL image lines hold an unrendered Helm expression (the same in v1.0.0).
    with pytest.raises(ConfigError) as caught:
        load_compose(compose, environ={})
    [problem] = caught.value.problems
    assert (problem.file, problem.line) == (str(compose), 21)
    assert problem.message.startswith("YAML syntax error at column 51: ")
    assert "render the template first" in problem.message
    out = tmp_path / "supervisor.yaml"
    proc = run_cli("import-compose", str(compose), "-o", str(out), cwd=tmp_path)
    assert proc.returncode == 78
    assert f"{compose}:21: YAML syntax error at column 51" in proc.stderr
    assert list(tmp_path.iterdir()) == []  # nothing written, not even in part
    assert run_cli("check", "--config", str(compose), cwd=tmp_path).returncode == 78


def test_production_env_files_keep_command_substitutions_literally(tmp_path: Path) -> None:
    folder = REALWORLD / "deploy-with-docker"
    compose = tmp_path / "docker-compose.yml"
    compose.write_text(
        "name: prod\nservices:\n"
        f"  certtransparency: {{image: x, env_file: [{folder / '.env.certtransparency'}]}}\n"
        f"  frontend: {{image: x, env_file: [{folder / '.env.frontend'}]}}\n"
    )
    stack, result = load_compose(compose, environ={})
    ct = stack.services["certtransparency"].environment
    assert ct["DATABASE_URI"] == (
        "postgresql://ct_user:$(cat /run/secrets/postgres_ct_password)"
        "@postgres-certtransparency:5432/ct_db"
    )
    assert ct["WTF_CSRF_ENABLED"] == "true"  # the last line, without a newline
    assert stack.services["frontend"].environment["SITE_NAME"] == "OIDC VPN Manager"
    # Nothing there reads differently under Compose's rules: nothing pinned, nothing noted.
    assert "environment" not in result.config["services"]["frontend"]
    assert not [n for n in result.notes if n.level != "info"]
