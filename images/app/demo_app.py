"""The VPN Manager's frontend, signing and certtransparency as far as the supervisor can tell.

One program for the three services of ovpn-demo/app:1, with the semantics of the real ones
(see SERVICES.md in the shared realworld notes): each serves on its own port (8600, 8500,
8800), over HTTPS with a self-signed certificate made at start-up unless ENABLE_APPLICATION_TLS
is false/no/off/0; `/health` runs `SELECT 1` through DATABASE_URL and answers 503 when the
database is unreachable (signing's always answers 200); certtransparency also has `/ready`
(503 until its table exists) and `/live`. `/records` proves data survives: POST writes a row,
GET counts them.

    demo_app.py serve ROLE      the service (ROLE: frontend, signing, certtransparency)
    demo_app.py migrate ROLE    wait for the database (bounded), create the tables, exit 0
    demo_app.py init-pki DIR    make a demo CA in DIR unless one is there (signing-init)

Like the real services, a variable X is read from the file named by X_FILE when that is set.
Only the standard library, Debian's python3-psycopg2 and the openssl command are used.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

PORTS = {"frontend": 8600, "signing": 8500, "certtransparency": 8800}
# Roles with a database of their own, and the tables their migration creates.
TABLES = {
    "frontend": ("records",),
    "certtransparency": ("records", "certificate_logs"),
}
CONNECT_TIMEOUT = 3
FALSE_WORDS = ("false", "no", "off", "0")


def setting(name: str, default: str = "", environ: dict[str, str] | None = None) -> str:
    """X from the file named by X_FILE when set (stripped of its final newline), else X."""
    env = os.environ if environ is None else environ
    path = env.get(name + "_FILE")
    if path:
        return Path(path).read_text().rstrip("\n")
    return env.get(name, default)


def tls_enabled(environ: dict[str, str] | None = None) -> bool:
    """ENABLE_APPLICATION_TLS, true unless set to false/no/off/0 (as the real services do)."""
    value = setting("ENABLE_APPLICATION_TLS", "true", environ)
    return value.strip().lower() not in FALSE_WORDS


def database_address(url: str) -> tuple[str, int]:
    """Host and port of a postgresql:// URL, for the migrate job's wait."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgres", "postgresql") or not parts.hostname:
        raise ValueError(f"DATABASE_URL is not a postgresql://USER:PASSWORD@HOST/DB URL: {url!r}")
    return parts.hostname, parts.port or 5432


def health_reply(role: str, path: str, query: Any) -> tuple[int, dict[str, Any]]:
    """Status and body for the probe endpoints; `query(sql)` runs SQL or raises."""
    if path == "/live" or (path == "/health" and role == "signing"):
        return 200, {"status": "healthy", "service": role}
    if path == "/health":
        sql = "SELECT 1"
    elif path == "/ready" and role == "certtransparency":
        sql = "SELECT COUNT(*) FROM certificate_logs"
    else:
        return 404, {"error": f"no such endpoint: {path}"}
    try:
        query(sql)
    except Exception as error:  # any database failure is the answer, not a crash
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        body = {"status": "unhealthy", "service": role, "database": "disconnected"}
        return 503, {**body, "error": reason}
    return 200, {"status": "healthy", "service": role, "database": "connected"}


def connect(url: str) -> Any:
    # Debian's python3-psycopg2, in the image only: imported here so the pure parts test anywhere.
    import psycopg2  # noqa: PLC0415

    return psycopg2.connect(url, connect_timeout=CONNECT_TIMEOUT)


def run_sql(url: str, sql: str, args: tuple[Any, ...] = ()) -> Any:
    """One statement in its own connection and transaction; the first row, or None."""
    conn = connect(url)
    try:
        with conn, conn.cursor() as cursor:
            cursor.execute(sql, args)
            return cursor.fetchone() if cursor.description else None
    finally:
        conn.close()


def self_signed(directory: Path, name: str) -> tuple[Path, Path]:
    """A throw-away certificate like the real services' start-up "snakeoil" one."""
    cert, key = directory / "application.crt", directory / "application.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "825",
            "-subj",
            f"/CN={name}",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return cert, key


class Handler(BaseHTTPRequestHandler):
    server_version = "ovpn-demo-app/1"
    role = "frontend"
    database_url = ""

    def _reply(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode() + b"\n"
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/records" and self.database_url:
            self._records(lambda: run_sql(self.database_url, "SELECT COUNT(*) FROM records"))
            return
        self._reply(*health_reply(self.role, path, lambda sql: run_sql(self.database_url, sql)))

    def do_POST(self) -> None:
        if self.path.split("?", 1)[0] != "/records" or not self.database_url:
            self._reply(404, {"error": f"no such endpoint: {self.path}"})
            return
        length = int(self.headers.get("Content-Length") or 0)
        note = self.rfile.read(length).decode(errors="replace")[:200] if length else ""
        self._records(
            lambda: run_sql(
                self.database_url, "INSERT INTO records (note) VALUES (%s) RETURNING id", (note,)
            )
        )

    def _records(self, action: Any) -> None:
        try:
            row = action()
        except Exception as error:
            self._reply(503, {"error": str(error).strip()})
            return
        key = "count" if self.command == "GET" else "id"
        self._reply(200 if self.command == "GET" else 201, {key: row[0]})

    def log_message(self, format: str, *args: Any) -> None:
        # Like the real services' gunicorn logger: probe requests are not logged.
        if not self.path.startswith(("/health", "/ready", "/live")):
            sys.stderr.write(f"{self.address_string()} {format % args}\n")


def serve(role: str) -> int:
    port = int(setting("PORT", str(PORTS[role])))
    Handler.role = role
    Handler.database_url = setting("DATABASE_URL") if role in TABLES else ""
    if role in TABLES and not Handler.database_url:
        print(f"{role}: DATABASE_URL (or DATABASE_URL_FILE) is not set", file=sys.stderr)
        return 2
    server = ThreadingHTTPServer(("0.0.0.0", port), Handler)
    scheme = "http"
    if tls_enabled():
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        with tempfile.TemporaryDirectory() as tls_dir:
            cert, key = self_signed(Path(tls_dir), role)
            context.load_cert_chain(cert, key)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        scheme = "https"

    def stop(signum: int, _frame: Any) -> None:
        raise SystemExit(0)

    # PID 1 gets no default action for SIGTERM: without a handler it would be ignored.
    signal.signal(signal.SIGTERM, stop)
    print(f"{role} serving {scheme} on :{port}", file=sys.stderr)
    try:
        server.serve_forever()
    finally:
        server.server_close()
        print(f"{role} stopped", file=sys.stderr)
    return 0


def migrate(role: str) -> int:
    """Wait for the database like run_migrate.sh's `nc -z` loop, then create the tables."""
    url = setting("DATABASE_URL")
    host, port = database_address(url)
    deadline = time.monotonic() + float(setting("MIGRATE_WAIT", "60"))
    while True:
        try:
            with socket.create_connection((host, port), timeout=2):
                break
        except OSError as error:
            if time.monotonic() > deadline:
                print(f"{role}-migrate: {host}:{port} unreachable: {error}", file=sys.stderr)
                return 1
            time.sleep(0.5)
    statements = [
        "CREATE TABLE IF NOT EXISTS records (id serial PRIMARY KEY, note text, "
        "created timestamptz NOT NULL DEFAULT now())"
    ]
    if "certificate_logs" in TABLES[role]:
        statements.append(
            "CREATE TABLE IF NOT EXISTS certificate_logs (id serial PRIMARY KEY, "
            "serial text, logged timestamptz NOT NULL DEFAULT now())"
        )
    while True:  # the port may answer before the server accepts logins (start-up)
        try:
            for sql in statements:
                run_sql(url, sql)
            break
        except Exception as error:
            if time.monotonic() > deadline:
                print(f"{role}-migrate: {error}", file=sys.stderr)
                return 1
            time.sleep(0.5)
    print(f"{role}-migrate: tables {', '.join(TABLES[role])} are in place", file=sys.stderr)
    return 0


def init_pki(directory: str) -> int:
    """signing-init: a demo CA in DIRECTORY, kept when one is there already."""
    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    if (target / "application.crt").exists():
        print(f"signing-init: CA in {target} kept", file=sys.stderr)
        return 0
    self_signed(target, "ovpn-demo CA")
    print(f"signing-init: made a CA in {target}", file=sys.stderr)
    return 0


def main(argv: list[str]) -> int:
    usage = "usage: demo_app.py serve|migrate ROLE | init-pki DIR"
    if len(argv) != 2:
        print(usage, file=sys.stderr)
        return 2
    command, arg = argv
    if command == "init-pki":
        return init_pki(arg)
    if (
        arg not in PORTS
        or command not in ("serve", "migrate")
        or (command == "migrate" and arg not in TABLES)
    ):
        print(f"{usage} (ROLE: {', '.join(PORTS)}; migrate: {', '.join(TABLES)})", file=sys.stderr)
        return 2
    return serve(arg) if command == "serve" else migrate(arg)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
