"""The status API's OpenAPI 3 document: paths written here, answers' schemas from `api_contract`."""

from __future__ import annotations

from typing import Any

from supervisor.api_contract import component_schemas


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(schema)}}}


_ERRORS = {
    "400": _json("Error", "Malformed request (e.g. an invalid service name)"),
    "401": _json("Error", "Missing or wrong bearer token"),
    "403": _json("Error", "Not allowed (no token configured for mutations over TCP)"),
    "404": _json("Error", "No such service or path"),
    "405": _json("Error", "Method not allowed"),
}

_NAME = {
    "name": "name",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "minLength": 1},
    "description": "Service name from the config",
}


def _command(verb: str) -> dict[str, Any]:
    return {
        "post": {
            "summary": f"{verb.capitalize()} one service",
            "operationId": f"{verb}Service",
            "security": [{"bearer": []}],
            "parameters": [_NAME],
            "responses": {
                "202": _json("CommandAccepted", "Accepted; watch the service's state"),
                "409": _json("Error", "The daemon is not supervising a stack right now"),
                **_ERRORS,
            },
        }
    }


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


_SERVICE_FILTER = _query(
    "service", {"type": "string", "minLength": 1}, "Only events of this service (404 if unknown)"
)
_LOG_QUERY = [
    _query("tail", {"type": "string", "pattern": "^([0-9]{1,7}|all)$"}, "Last N lines, or all"),
    _query("since", {"type": "number", "minimum": 0, "maximum": 1e11}, "From this epoch second"),
    _query("timestamps", {"type": "string", "enum": ["true", "false"]}, "Prefix each line"),
]
_TEXT = {"text/plain": {"schema": {"type": "string"}}}
_LOG_ERRORS = {
    **_ERRORS,
    "404": _json("Error", "No such service, or it has no container yet"),
    "503": _json("Error", "The Docker Engine did not answer"),
}


def _logs(streaming: bool) -> dict[str, Any]:
    what = "then follow it until the container exits" if streaming else "so far"
    return {
        "get": {
            "summary": f"A service's container output {what} (also of a stopped container)",
            "operationId": "followServiceLogs" if streaming else "getServiceLogs",
            "parameters": [_NAME, *_LOG_QUERY],
            "responses": {"200": {"description": "Output", "content": _TEXT}, **_LOG_ERRORS},
        }
    }


def _blocking(summary: str, name: str, request: str, result: str, done: str) -> dict[str, Any]:
    """A POST that blocks until done: 200 when it all went well, 422 (same body) when not."""
    return {
        "post": {
            "summary": summary,
            "operationId": name,
            "security": [{"bearer": []}],
            "requestBody": {
                "required": False,
                "content": {"application/json": {"schema": _ref(request)}},
            },
            "responses": {
                "200": _json(result, done),
                "409": _json("Error", "The daemon is not supervising a stack right now"),
                "422": _json(result, "Not (all) done; the body says what and why"),
                **_ERRORS,
            },
        }
    }


# What clients send: the handlers check these bodies themselves (`api_updates`).
_REQUESTS: dict[str, Any] = {
    "UpdateRequest": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "services": {"type": "array", "items": {"type": "string", "minLength": 1}},
            "pull": {"type": "boolean"},
            "dry_run": {"type": "boolean"},
            "timeout": {
                "type": "number",
                "nullable": True,
                "exclusiveMinimum": True,
                "minimum": 0,
                "maximum": 86400,
            },
            "backup": {"type": "boolean"},
        },
    },
    "BackupRequest": {
        "type": "object",
        "additionalProperties": False,
        "properties": {"services": {"type": "array", "items": {"type": "string"}}},
    },
    "RestoreRequest": {
        "type": "object",
        "properties": {"service": {"type": "string"}, "backup": {"type": "string"}},
        "required": ["service", "backup"],
        "additionalProperties": False,
    },
}
# What the API answers: derived from the shapes its serializers build.
SCHEMAS: dict[str, Any] = {**component_schemas(), **_REQUESTS}

OPENAPI: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {
        "title": "ovpn-supervisor local API",
        "version": "1",
        "description": "Status and control of the supervised stack. Over TCP, POST needs "
        "`Authorization: Bearer <token>`; over the unix socket, file permissions are the gate. "
        "Environment values and secrets never appear, only environment keys.",
    },
    "paths": {
        "/v1/status": {
            "get": {
                "summary": "The daemon and every service",
                "operationId": "getStatus",
                "responses": {"200": _json("Status", "Daemon and services"), **_ERRORS},
            }
        },
        "/v1/services/{name}": {
            "get": {
                "summary": "One service",
                "operationId": "getService",
                "parameters": [_NAME],
                "responses": {"200": _json("Service", "The service"), **_ERRORS},
            }
        },
        "/v1/services/{name}/restart": _command("restart"),
        "/v1/services/{name}/stop": _command("stop"),
        "/v1/services/{name}/start": _command("start"),
        "/v1/services/{name}/logs": _logs(streaming=False),
        "/v1/services/{name}/logs/stream": _logs(streaming=True),
        "/v1/events": {
            "get": {
                "summary": "The event history (the last api.events.keep events), oldest first",
                "operationId": "getEvents",
                "parameters": [
                    _query("since", {"type": "integer", "minimum": 0}, "Only events after this id"),
                    _SERVICE_FILTER,
                    _query("since_time", {"type": "number"}, "Only events from this epoch second"),
                    _query(
                        "limit",
                        {"type": "integer", "minimum": 1, "maximum": 100000},
                        "At most this many (the newest)",
                    ),
                ],
                "responses": {"200": _json("Events", "Events"), **_ERRORS},
            }
        },
        "/v1/events/stream": {
            "get": {
                "summary": "Live events as Server-Sent Events (`id:` is the event id, `data:` an "
                "Event); the `Last-Event-ID` header (or `last_event_id`) resumes after that id "
                "while the history holds it, else an `event: gap` names what was missed",
                "operationId": "streamEvents",
                "parameters": [
                    _SERVICE_FILTER,
                    _query("last_event_id", {"type": "integer", "minimum": 0}, "Resume after"),
                ],
                "responses": {
                    "200": {
                        "description": "An endless event stream",
                        "content": {"text/event-stream": {"schema": {"type": "string"}}},
                    },
                    **_ERRORS,
                },
            }
        },
        "/v1/reload": {
            "post": {
                "summary": "Re-read the config and apply the difference",
                "operationId": "reload",
                "security": [{"bearer": []}],
                "responses": {
                    "200": _json("ReloadResult", "Applied"),
                    "409": _json("Error", "The daemon is stopping"),
                    "422": _json("ReloadResult", "Refused: the running config stays in force"),
                    **_ERRORS,
                },
            }
        },
        "/v1/update": _blocking(
            "Update images: recreate what changed, health-gated, rolling back what fails",
            "update",
            "UpdateRequest",
            "UpdateResult",
            "Every planned service updated (or nothing to update, or a dry run)",
        ),
        "/v1/backup": _blocking(
            "Back up services through their `backup.exec`",
            "backup",
            "BackupRequest",
            "BackupResult",
            "Backups taken",
        ),
        "/v1/restore": _blocking(
            "Restore a backup into a service; its dependents are stopped meanwhile",
            "restore",
            "RestoreRequest",
            "RestoreResult",
            "Restored",
        ),
        "/healthz": {
            "get": {
                "summary": "The daemon's own liveness: event loop responsive, Docker reachable",
                "operationId": "healthz",
                "responses": {
                    "200": _json("Health", "Alive"),
                    "503": _json("Health", "Loop stalled or Docker unreachable"),
                    **_ERRORS,
                },
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "operationId": "metrics",
                "responses": {
                    "200": {
                        "description": "Prometheus text format 0.0.4",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    **_ERRORS,
                },
            }
        },
        "/": {
            "get": {
                "summary": "The status page (HTML, no external assets)",
                "operationId": "statusPage",
                "responses": {
                    "200": {
                        "description": "The page",
                        "content": {"text/html": {"schema": {"type": "string"}}},
                    },
                    **_ERRORS,
                },
            }
        },
        "/graph.svg": {
            "get": {
                "summary": "The dependency graph, as the status page draws it",
                "operationId": "dependencyGraph",
                "responses": {
                    "200": {
                        "description": "SVG",
                        "content": {"image/svg+xml": {"schema": {"type": "string"}}},
                    },
                    **_ERRORS,
                },
            }
        },
        "/openapi.json": {
            "get": {
                "summary": "This document",
                "operationId": "openapi",
                "responses": {
                    "200": {
                        "description": "OpenAPI 3 document",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    },
                    **_ERRORS,
                },
            }
        },
    },
    "components": {
        "schemas": SCHEMAS,
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
    },
}
