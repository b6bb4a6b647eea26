"""A private, throwaway Docker Engine for tests that must stop and restart an engine.

The shared engine on the machine is never touched: the private `dockerd` has its own socket, data
root, exec root, pid file and managed containerd, and it runs in a network namespace of its own
(`ip netns`), with its own docker0, routes and iptables. Giving it only a bridge of its own in the
host namespace (`--bridge NAME`) is not enough: dockerd 20.10 deleted the host's docker0 when it
was restarted on the same data root (seen on this machine, 2026-11-25), which breaks the shared
engine. Whatever must reach the private engine's containers by address (the daemon under test)
runs in the same namespace: `PrivateEngine.wrap(argv)`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import docker
import docker.errors

ADDRESS_POOL = "10.213.0.0/16"
_START_TIMEOUT = 60.0
_STOP_TIMEOUT = 30.0


class EngineError(Exception):
    """The private engine could not be set up, started or stopped."""


def _run(*argv: str) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    if proc.returncode != 0:
        raise EngineError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def _cgroup_mounts_script() -> str:
    """Shell commands re-mounting the host's cgroup hierarchies under a fresh /sys."""
    steps: list[str] = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        fstype, options = fields[fields.index("-") + 1], fields[-1]
        point = fields[4]
        if point == "/sys/fs/cgroup" and fstype == "tmpfs":
            steps.insert(0, "mount -t tmpfs -o mode=755 cgroup /sys/fs/cgroup")
        elif fstype in ("cgroup", "cgroup2") and point.startswith("/sys/fs/cgroup"):
            opts = ",".join(o for o in options.split(",") if o not in ("rw", "ro"))
            opts = f"-o {opts} " if opts else ""
            steps.append(f"mkdir -p {point} && mount -t {fstype} {opts}cgroup {point}")
    if not steps:
        raise EngineError("no cgroup hierarchies mounted: dockerd cannot run")
    return " && ".join(steps)


class PrivateEngine:
    """One private dockerd: `start`, `stop` (SIGTERM, wait), `start` again on the same data."""

    def __init__(self, name: str | None = None) -> None:
        self.id = name or uuid.uuid4().hex[:8]
        self.run_dir = Path(f"/run/ovpn-test-{self.id}")
        self.exec_root = self.run_dir / "exec"
        self.data_root = Path(f"/var/lib/ovpn-test-{self.id}")
        self.socket = self.run_dir / "docker.sock"
        self.pidfile = self.run_dir / "docker.pid"
        self.log_path = self.run_dir / "dockerd.log"
        self.host = f"unix://{self.socket}"
        self.netns = f"ovpn-test-{self.id}"
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    # -- set-up -------------------------------------------------------------------------

    def prepare(self) -> None:
        """Create the network namespace (loopback up) and the directories."""
        _run("ip", "netns", "add", self.netns)
        _run("ip", "-n", self.netns, "link", "set", "lo", "up")
        self.exec_root.mkdir(parents=True, exist_ok=True)
        self.data_root.mkdir(parents=True, exist_ok=True)

    def wrap(self, argv: Sequence[str]) -> list[str]:
        """`argv` run inside the engine's network namespace, where its containers are reachable."""
        return ["ip", "netns", "exec", self.netns, *argv]

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, *, wait: bool = True) -> None:
        """Start dockerd (again) on the same data root; with `wait`, until it answers."""
        if self.running:
            raise EngineError(f"private engine {self.id} already running")
        self._log = self.log_path.open("ab")
        self._proc = subprocess.Popen(
            self.wrap(
                [
                    # `ip netns exec` mounts a fresh /sys, hiding the cgroup hierarchies dockerd
                    # needs: mount the same hierarchies again there (as cgroupfs-mount does).
                    "sh",
                    "-c",
                    _cgroup_mounts_script() + ' && exec "$@"',
                    "sh",
                    "dockerd",
                    f"--host={self.host}",
                    f"--data-root={self.data_root}",
                    f"--exec-root={self.exec_root}",
                    f"--pidfile={self.pidfile}",
                    f"--default-address-pool=base={ADDRESS_POOL},size=24",
                    "--iptables=false",
                    "--ip-masq=false",
                    "--ipv6=false",
                    "--shutdown-timeout=5",
                    "--log-level=info",
                ]
            ),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout: float = _START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if not self.running:
                raise EngineError(f"private dockerd exited during start-up\n{self.log_tail()}")
            if self.answers():
                return
            if time.monotonic() >= deadline:
                raise EngineError(f"private dockerd silent after {timeout}s\n{self.log_tail()}")
            time.sleep(0.1)

    def answers(self) -> bool:
        """Whether the engine answers `GET /_ping` on its socket (no client library involved)."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            try:
                sock.connect(str(self.socket))
                sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
                return sock.recv(64).startswith(b"HTTP/1.0 200")
            except OSError:
                return False

    def stop(self, timeout: float = _STOP_TIMEOUT) -> int:
        """SIGTERM dockerd and wait for it to exit (it stops its containers first)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return 0
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        if self._log is not None:
            self._log.close()
            self._log = None
        return proc.returncode

    def client(self, timeout: int = 60) -> docker.DockerClient:
        return docker.DockerClient(base_url=self.host, timeout=timeout)

    def env(self) -> dict[str, str]:
        """os.environ with DOCKER_HOST pointing here (DOCKER_CONTEXT and TLS cleared)."""
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("DOCKER_CONTEXT", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH")
        }
        env["DOCKER_HOST"] = self.host
        return env

    def load_image(self, *images: str) -> None:
        """Copy images from the shared engine (`docker save | docker load`, layers once)."""
        shared_env = {k: v for k, v in os.environ.items() if k != "DOCKER_HOST"}
        save = subprocess.Popen(["docker", "save", *images], stdout=subprocess.PIPE, env=shared_env)
        load = subprocess.run(
            ["docker", "load", "-q"],
            stdin=save.stdout,
            capture_output=True,
            env=self.env(),
            timeout=120,
            check=False,
        )
        assert save.stdout is not None
        save.stdout.close()
        if save.wait(timeout=60) != 0 or load.returncode != 0:
            raise EngineError(f"loading {images} failed: {load.stderr.decode(errors='replace')}")

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    # -- tear-down ----------------------------------------------------------------------

    def _own_processes(self) -> list[int]:
        """PIDs whose command line names this engine's exec root (containerd, its shims)."""
        mine = []
        marker = str(self.exec_root).encode()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            with contextlib.suppress(OSError):
                if marker in (entry / "cmdline").read_bytes():
                    mine.append(int(entry.name))
        return mine

    def close(self) -> None:
        """Stop the engine and remove everything it had: processes, mounts, namespace, dirs."""
        if self.running:
            with contextlib.suppress(Exception), contextlib.closing(self.client(10)) as client:
                for c in client.containers.list(all=True):
                    c.remove(force=True)
                for n in client.networks.list():
                    if n.name not in ("bridge", "host", "none"):
                        n.remove()
        with contextlib.suppress(Exception):
            self.stop()
        for pid in self._own_processes():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for mount in reversed(self._own_mounts()):
            subprocess.run(["umount", "-l", mount], capture_output=True, check=False, timeout=30)
        subprocess.run(
            ["ip", "netns", "del", self.netns], capture_output=True, check=False, timeout=30
        )
        shutil.rmtree(self.data_root, ignore_errors=True)
        shutil.rmtree(self.run_dir, ignore_errors=True)

    def _own_mounts(self) -> list[str]:
        roots = (str(self.data_root) + "/", str(self.run_dir) + "/")
        with Path("/proc/mounts").open() as mounts:
            points = [line.split()[1] for line in mounts]
        return [p for p in points if p.startswith(roots)]


@contextmanager
def private_engine(image: str | None = None) -> Iterator[PrivateEngine]:
    """A started private engine (with `image` copied in), removed completely on exit."""
    engine = PrivateEngine()
    try:
        engine.prepare()
        engine.start()
        if image is not None:
            engine.load_image(image)
        yield engine
    finally:
        engine.close()
