"""The JavaScript client's `.d.ts` against the service's models: what a TypeScript program
may send is accepted, and what the service sends is what the types promise."""

from __future__ import annotations

import json
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from notifier.errors import ErrorCode
from notifier.models import SERVICE_EVENTS
from notifier.records import TaskStatus
from notifier.responses import EnvelopeOut, ErrorBody, NotificationOut, PresentUser, TaskOut
from notifier.transport.fanout import USER_NAMESPACE
from notifier.transport.socket_api import EVENT_MODELS

ROOT = Path(__file__).resolve().parents[1]
Shape = dict[str, Any]


@cache
def declared() -> dict[str, Any]:
    out = subprocess.run(
        ["node", str(ROOT / "client_examples" / "testing" / "dts-shapes.mjs")],
        capture_output=True,
        check=True,
        text=True,
        timeout=60,
    )
    return json.loads(out.stdout)


def kinds(schema: dict[str, Any], defs: dict[str, Any]) -> set[str]:
    """The JSON kinds a JSON Schema allows (as dts-shapes.mjs names them)."""
    if "$ref" in schema:
        return kinds(defs[schema["$ref"].rsplit("/", 1)[-1]], defs)
    if "anyOf" in schema:
        return set().union(*(kinds(option, defs) for option in schema["anyOf"]))
    if "enum" in schema or "const" in schema:
        values = schema.get("enum", [schema.get("const")])
        return {
            {str: "string", bool: "boolean", int: "number", float: "number", type(None): "null"}[type(v)]
            for v in values
        }
    kind = schema.get("type")
    if kind is None:
        return {"any"}
    if kind == "array":
        return {"array:" + "|".join(sorted(kinds(schema.get("items", {}), defs)))}
    names = kind if isinstance(kind, list) else [kind]
    return {"number" if name == "integer" else name for name in names}


def covered(given: set[str], allowed: set[str]) -> bool:
    """Every kind in `given` is one `allowed` has (any, or an array of anything, covers more)."""
    if "any" in allowed:
        return True
    return all(kind in allowed or (kind.startswith("array:") and "array:any" in allowed) for kind in given)


def schema_of(model: type[BaseModel], mode: str) -> tuple[dict[str, Any], dict[str, Any]]:
    schema = model.model_json_schema(mode=mode)  # type: ignore[arg-type]
    return schema, schema.get("$defs", {})


def assert_sends(model: type[BaseModel], shape: Shape, what: str) -> None:
    """Server to client: every field the model has is declared, with its kinds allowed."""
    schema, defs = schema_of(model, "serialization")
    props, required = schema["properties"], set(schema.get("required", ()))
    assert set(shape["properties"]) == set(props), f"{what}: fields differ"
    for name, prop in props.items():
        declared_prop = shape["properties"][name]
        allowed = set(declared_prop["kinds"])
        assert covered(kinds(prop, defs), allowed), f"{what}.{name}: {kinds(prop, defs)} vs {allowed}"
        assert declared_prop["optional"] == (name not in required), f"{what}.{name}: optional"


def assert_accepts(model: type[BaseModel], shape: Shape, what: str) -> None:
    """Client to server: whatever the type allows, the model accepts."""
    schema, defs = schema_of(model, "validation")
    props, required = schema.get("properties", {}), set(schema.get("required", ()))
    if shape["open"]:
        assert schema.get("additionalProperties", True) is not False, f"{what}: closed model"
    assert set(shape["properties"]) <= set(props), f"{what}: fields the server refuses"
    for name, declared_prop in shape["properties"].items():
        accepted = kinds(props[name], defs)
        assert covered(set(declared_prop["kinds"]), accepted), f"{what}.{name}: {accepted}"
    optional = {name for name, p in shape["properties"].items() if p["optional"]}
    assert required <= set(shape["properties"]) - optional, f"{what}: required fields"


def test_codes_and_statuses_are_the_services() -> None:
    assert declared()["errorCodes"] == sorted(code.value for code in ErrorCode)
    assert declared()["taskStatuses"] == sorted(status.value for status in TaskStatus)


@pytest.mark.parametrize(
    ("model", "name"),
    [
        (TaskOut, "Task"),
        (NotificationOut, "Notification"),
        (EnvelopeOut, "Envelope"),
        (ErrorBody, "ErrorBody"),
        (PresentUser, "PresentUser"),
    ],
)
def test_what_the_service_sends_is_declared(model: type[BaseModel], name: str) -> None:
    assert_sends(model, declared()["types"][name], name)


def test_every_event_the_client_sends_is_accepted() -> None:
    events = EVENT_MODELS[USER_NAMESPACE]
    assert set(declared()["requests"]) == set(events)
    assert set(declared()["acks"]) == set(events)
    for event, model in events.items():
        assert_accepts(model, declared()["requests"][event], event)


def test_every_event_the_service_sends_is_declared() -> None:
    assert set(declared()["events"]) == SERVICE_EVENTS
    for event in ("task.created", "task.progress", "task.completed", "task.failed"):
        assert_sends(TaskOut, declared()["events"][event], event)
    assert_sends(NotificationOut, declared()["events"]["notification"], "notification")
    for event in ("auth.expired", "auth.revoked", "connection.closing"):
        assert_sends(ErrorBody, declared()["events"][event], event)
