"""config/production/ as the services ship: every secret its env files name is declared, mounted
and generated; the secrets folder is readable by the supervisor's group (check as that user)."""

from __future__ import annotations

import base64
import grp
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemon_process import REPO_ROOT

from supervisor.config import HttpProbe, load_config

PRODUCTION = REPO_ROOT / "config" / "production"
NOBODY = 65534
SECRET_REF = re.compile(r"^(\w+)_FILE=/run/secrets/(\w+)\s*$", re.MULTILINE)


def unused_gid() -> int:
    """A group id no group has: the stand-in for the ovpn-supervisor group."""
    for gid in range(64100, 64200):
        try:
            grp.getgrgid(gid)
        except KeyError:
            return gid
    raise AssertionError("no free gid in 64100-64199")


@pytest.fixture
def etc() -> Iterator[Path]:
    """A copy of config/production laid out like scripts/install's /etc/ovpn-supervisor, in a
    folder other users can reach (pytest's tmp_path is root-only), with its secrets generated."""
    base = Path(tempfile.mkdtemp(prefix="ovpn-prod-", dir="/tmp"))
    base.chmod(0o755)
    gid = unused_gid()
    target = base / "ovpn-supervisor"
    shutil.copytree(PRODUCTION, target, ignore=shutil.ignore_patterns("secrets"))
    os.chown(target, 0, gid)
    target.chmod(0o750)
    env = {"PATH": "/usr/bin:/bin", "OIDC_CLIENT_SECRET": "from-the-idp",
           "CA_KEY_PASSPHRASE": "ca-pass", "SECRETS_GROUP": str(gid)}  # fmt: skip
    made = subprocess.run(
        [str(target / "generate-secrets")], env=env, capture_output=True, text=True, check=False
    )
    assert made.returncode == 0, made.stderr
    try:
        yield target
    finally:
        shutil.rmtree(base)


def env_secrets(env_file: Path) -> dict[str, str]:
    """VARIABLE -> secret name, for each `VARIABLE_FILE=/run/secrets/NAME` line."""
    return {var: name for var, name in SECRET_REF.findall(env_file.read_text())}


def test_every_secret_the_env_files_name_is_declared_mounted_and_generated(etc: Path) -> None:
    stack = load_config(etc / "supervisor.yaml")
    generated = {p.name for p in (etc / "secrets").iterdir()}
    assert set(stack.secrets) == generated
    named_anywhere: set[str] = set()
    for env_file in (etc / "env").glob("*.env"):
        named_anywhere |= set(env_secrets(env_file).values())
    assert named_anywhere <= generated
    for service in stack.services.values():
        # What the container gets (env files merged in): each /run/secrets/X is mounted.
        named = {v.removeprefix("/run/secrets/") for v in service.environment.values()
                 if v.startswith("/run/secrets/")}  # fmt: skip
        missing = named - set(service.secrets)
        assert not missing, f"{service.name} names unmounted secrets {missing}"
    frontend = env_secrets(etc / "env" / "frontend.env")
    assert frontend["DATABASE_URL"] == "frontend_database_url"
    assert frontend["FERNET_ENCRYPTION_KEY"] == "fernet_encryption_key"
    for name in ("frontend", "certtransparency"):
        text = (etc / "env" / f"{name}.env").read_text()
        assert "\nDATABASE_URL_FILE=" in text and "\nDATABASE_URI" not in text


def test_generated_values_are_what_the_services_expect(etc: Path) -> None:
    secrets = etc / "secrets"
    key = base64.urlsafe_b64decode((secrets / "fernet_encryption_key").read_text())
    assert len(key) == 32  # a Fernet key: 32 bytes, URL-safe base64
    password = (secrets / "frontend_db_password").read_text()
    assert len(password) >= 32
    assert (secrets / "frontend_database_url").read_text() == (
        f"postgresql://frontend:{password}@postgres-frontend:5432/frontend"
    )
    assert (secrets / "oidc_client_secret").read_text() == "from-the-idp"
    assert (secrets / "ca_key_passphrase").read_text() == "ca-pass"


def test_the_services_are_probed_over_https_without_verifying_self_signed_certificates(
    etc: Path,
) -> None:
    stack = load_config(etc / "supervisor.yaml")
    for name in ("frontend", "signing", "certtransparency"):
        health = stack.services[name].health
        assert health is not None and isinstance(health.probe, HttpProbe)
        assert (health.probe.scheme, health.probe.tls_verify) == ("https", False), name


@pytest.mark.slow
def test_check_works_as_the_supervisor_s_user_and_not_as_others(etc: Path) -> None:
    secrets = etc / "secrets"
    gid = etc.stat().st_gid
    assert secrets.stat().st_gid == gid
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o750

    def check_as(*group: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["setpriv", f"--reuid={NOBODY}", *group, "--",
             sys.executable, "-m", "supervisor", "check", "--config", str(etc / "supervisor.yaml")],
            capture_output=True, text=True, cwd="/", timeout=60, check=False,
        )  # fmt: skip

    member = check_as(f"--regid={gid}", "--clear-groups")
    assert member.returncode == 0, member.stderr
    assert "valid (project ovpn, 9 services)" in member.stdout
    other = check_as(f"--regid={NOBODY}", "--clear-groups")
    assert other.returncode == 78
    assert "cannot read" in other.stderr
