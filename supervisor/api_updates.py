"""The API's update, backup and restore endpoints: they block until done, like reload."""

from __future__ import annotations

from typing import Any

import structlog
from aiohttp import web

from supervisor.api_contract import ApiError, BackupBody, RestoreBody, dumps, update_json
from supervisor.api_handlers import SUPERVISOR, supervising
from supervisor.config import NAME_RE
from supervisor.update_plan import UnknownServices
from supervisor.updates import UpdateRequest

log = structlog.get_logger(__name__)


async def _body(
    request: web.Request, allowed: dict[str, type | tuple[type, ...]]
) -> dict[str, Any]:
    """The request's JSON object (empty body: {}), each key checked against its type."""
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except ValueError:
        raise ApiError(400, "the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object")
    for key, value in body.items():
        if key not in allowed:
            raise ApiError(400, f"unknown key {key!r} (known: {', '.join(allowed)})")
        kind = allowed[key]
        bad_bool = isinstance(value, bool) and bool not in (
            kind if isinstance(kind, tuple) else (kind,)
        )
        if not isinstance(value, kind) or bad_bool:
            raise ApiError(400, f"{key}: wrong type {type(value).__name__}")
    return body


def _names(body: dict[str, Any], key: str) -> tuple[str, ...]:
    names = body.get(key) or []
    for name in names:
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise ApiError(400, f"{key}: invalid service name {name!r}")
    return tuple(names)


async def post_update(request: web.Request) -> web.Response:
    sup = request.app[SUPERVISOR]
    supervising(sup)
    body = await _body(
        request,
        {
            "services": list,
            "pull": bool,
            "dry_run": bool,
            "timeout": (int, float, type(None)),
            "backup": bool,
        },
    )
    timeout = body.get("timeout")
    if timeout is not None and not 0 < timeout <= 86400:
        raise ApiError(400, f"timeout: must be between 0 and 86400 seconds, got {timeout}")
    update = UpdateRequest(
        services=_names(body, "services"),
        pull=body.get("pull", False),
        dry_run=body.get("dry_run", False),
        timeout=None if timeout is None else float(timeout),
        backup=body.get("backup", True),
    )
    log.info("update requested", via="api", peer=request.remote or "", dry_run=update.dry_run)
    try:
        result = await sup.update(update)
    except UnknownServices as exc:
        raise ApiError(400, str(exc)) from None
    except LookupError as exc:
        raise ApiError(409, str(exc)) from None
    return web.json_response(update_json(result), status=200 if result.ok else 422, dumps=dumps)


async def post_backup(request: web.Request) -> web.Response:
    sup = request.app[SUPERVISOR]
    supervising(sup)
    body = await _body(request, {"services": list})
    try:
        ok, message, files = await sup.backup(_names(body, "services"))
    except UnknownServices as exc:
        raise ApiError(400, str(exc)) from None
    answer: BackupBody = {"ok": ok, "message": message, "files": files}
    return web.json_response(answer, status=200 if ok else 422, dumps=dumps)


async def post_restore(request: web.Request) -> web.Response:
    sup = request.app[SUPERVISOR]
    supervising(sup)
    body = await _body(request, {"service": str, "backup": str})
    service, backup = body.get("service"), body.get("backup")
    if not service or not backup:
        raise ApiError(400, "needs both `service` and `backup`")
    if not NAME_RE.match(service):
        raise ApiError(400, f"service: invalid service name {service!r}")
    try:
        ok, message = await sup.restore(service, backup)
    except UnknownServices as exc:
        raise ApiError(400, str(exc)) from None
    answer: RestoreBody = {"ok": ok, "message": message}
    return web.json_response(answer, status=200 if ok else 422, dumps=dumps)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/update", post_update)
    app.router.add_post("/v1/backup", post_backup)
    app.router.add_post("/v1/restore", post_restore)
