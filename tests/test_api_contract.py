"""The API contract: the OpenAPI components come from the answer shapes, and what the
serializers build validates against them (the live schemathesis run checks the served daemon)."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal, TypedDict

import jsonschema
import pytest

from supervisor.api_contract import (
    COMPONENTS,
    ApiError,
    component_schemas,
    dumps,
    event_json,
    reload_json,
    schema_of,
    service_json,
    update_json,
)
from supervisor.config import ServiceType
from supervisor.daemon import ReloadResult
from supervisor.events import Event, EventKind
from supervisor.model import ProbeResult, State
from supervisor.openapi import OPENAPI
from supervisor.status import ServiceStatus
from supervisor.updates import Outcome, ServiceOutcome, UpdateResult


class _Inner(TypedDict):
    n: int


class _Shape(TypedDict):
    text: str
    flag: bool
    ratio: Annotated[float, "a ratio"]
    maybe: int | None
    kind: Literal["a", "b"]
    state: State
    names: list[str]
    inner: _Inner | None
    data: dict[str, Any]


def test_schema_of_maps_each_annotation() -> None:
    COMPONENTS["Inner"] = _Inner  # a reference needs a component name
    try:
        schema = schema_of(_Shape)
    finally:
        del COMPONENTS["Inner"]
    assert schema["required"] == list(_Shape.__annotations__)
    assert schema["additionalProperties"] is False
    assert schema["properties"] == {
        "text": {"type": "string"},
        "flag": {"type": "boolean"},
        "ratio": {"type": "number", "description": "a ratio"},
        "maybe": {"type": "integer", "nullable": True},
        "kind": {"type": "string", "enum": ["a", "b"]},
        "state": {"type": "string", "enum": [s.value for s in State]},
        "names": {"type": "array", "items": {"type": "string"}},
        "inner": {"$ref": "#/components/schemas/Inner", "nullable": True},
        "data": {"type": "object"},
    }


def test_unions_other_than_optional_are_refused() -> None:
    class Bad(TypedDict):
        either: int | str

    with pytest.raises(TypeError, match=r"only `T \| None`"):
        schema_of(Bad)


def test_the_document_serves_the_derived_components() -> None:
    served = OPENAPI["components"]["schemas"]
    for name, schema in component_schemas().items():
        assert served[name] == schema, name


def _validator(component: str) -> jsonschema.protocols.Validator:
    """A JSON Schema validator for one component (OpenAPI 3.0's `nullable` spelled out)."""

    def plain(node: Any) -> Any:
        if isinstance(node, dict):
            out = {k: plain(v) for k, v in node.items() if k != "nullable"}
            if "$ref" in out:
                out["$ref"] = out["$ref"].replace("#/components/schemas/", "#/$defs/")
            return {"anyOf": [out, {"type": "null"}]} if node.get("nullable") else out
        if isinstance(node, list):
            return [plain(v) for v in node]
        return node

    defs = plain(component_schemas())
    return jsonschema.Draft202012Validator({"$ref": f"#/$defs/{component}", "$defs": defs})


STATUS = ServiceStatus(
    name="web",
    type=ServiceType.JOB,
    image="img",
    state=State.HEALTHY,
    reason="",
    since=1.0,
    container_id="c1",
    restarts=2,
    last_exit_code=None,
    last_probe=ProbeResult(ok=True, detail="HTTP 200", latency=0.1, at=2.0, status=200),
    has_probe=True,
    blocked_by=None,
    operator_stopped=False,
    environment_keys=("A",),
)
UPDATE = UpdateResult(
    ok=False,
    at=3.0,
    message="m",
    plan=("p",),
    services=(ServiceOutcome("web", Outcome.ROLLED_BACK, "sha256:a", None, "probe"),),
)


@pytest.mark.parametrize(
    ("component", "body"),
    [
        ("Service", service_json(STATUS)),
        ("Service", service_json(ServiceStatus(**{**vars(STATUS), "last_probe": None}))),
        ("ReloadResult", reload_json(ReloadResult(ok=True, at=1.0, message="ok", added=("x",)))),
        ("UpdateResult", update_json(UPDATE)),
        ("Event", event_json(Event(1, 2.0, EventKind.STATE, None, "m", {"k": "v"}))),
    ],
)
def test_serializers_build_what_the_document_says(component: str, body: object) -> None:
    wire = json.loads(dumps(body))
    _validator(component).validate(wire)


def test_enums_go_on_the_wire_as_their_values() -> None:
    body = service_json(STATUS)
    assert '"type":"job"' in dumps(body) and '"state":"healthy"' in dumps(body)


def test_api_error_keeps_status_and_headers() -> None:
    exc = ApiError(401, "no", {"WWW-Authenticate": "Bearer"})
    assert (exc.status, exc.message, exc.headers) == (401, "no", {"WWW-Authenticate": "Bearer"})
