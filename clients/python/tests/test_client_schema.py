"""The client against the API's description: every route has a method, every model matches
its OpenAPI schema both ways, and every error code the server can emit has its class."""

import dataclasses
import inspect
import re
import types
import typing
from pathlib import Path

from conftest import ROOT

import wasmcage_client
from wasmcage_client import AsyncClient, Client, errors, models


def test_every_documented_route_has_a_method_in_both_clients(client):
    doc = client.openapi()
    documented = {(m, p) for p, item in doc["paths"].items() for m in item}
    assert documented == set(wasmcage_client.ROUTES), (
        documented ^ set(wasmcage_client.ROUTES))
    for name in wasmcage_client.ROUTES.values():
        assert callable(getattr(Client, name)), name
        assert inspect.iscoroutinefunction(getattr(AsyncClient, name)), name
        # The two clients take the same arguments.
        assert (inspect.signature(getattr(Client, name)).parameters.keys()
                == inspect.signature(getattr(AsyncClient, name)).parameters.keys()), name


def _nullable(tp) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in typing.get_args(tp)


def _properties(doc, schema) -> tuple[dict, set]:
    """The properties and required names of a schema, through `$ref` and `allOf`."""
    if "$ref" in schema:
        schema = doc["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    props, required = dict(schema.get("properties", {})), set(schema.get("required", []))
    for part in schema.get("allOf", []):
        p, r = _properties(doc, part)
        props.update(p)
        required |= r
    return props, required


def test_every_model_matches_its_schema_both_ways(client):
    doc = client.openapi()
    schemas = doc["components"]["schemas"]
    modelled = {m.SCHEMA for m in models.MODELS}
    assert modelled | set(models.UNMODELLED_SCHEMAS) == set(schemas), (
        "schemas without a model, or models without a schema: "
        f"{(modelled | set(models.UNMODELLED_SCHEMAS)) ^ set(schemas)}")
    for model in models.MODELS:
        props, required = _properties(doc, schemas[model.SCHEMA])
        hints = typing.get_type_hints(model)
        fields = {f.name: f for f in dataclasses.fields(model)}
        assert set(fields) == set(props), (model.SCHEMA, set(fields) ^ set(props))
        no_default = {n for n, f in fields.items()
                      if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
        assert no_default == required, (model.SCHEMA, no_default ^ required)
        for name in required:
            # A required field may be None exactly when the schema says it is nullable.
            nullable = props[name].get("nullable", False)
            assert _nullable(hints[name]) == nullable, (model.SCHEMA, name)
        for name in set(props) - required:
            assert _nullable(hints[name]), (model.SCHEMA, name, "optional fields default to None")


_STATUS = {"BAD_REQUEST": 400, "UNAUTHORIZED": 401, "FORBIDDEN": 403, "NOT_FOUND": 404,
           "REQUEST_TIMEOUT": 408, "CONFLICT": 409, "GONE": 410, "MISDIRECTED_REQUEST": 421, "PAYLOAD_TOO_LARGE": 413,
           "TOO_MANY_REQUESTS": 429, "INTERNAL_SERVER_ERROR": 500,
           "SERVICE_UNAVAILABLE": 503, "GATEWAY_TIMEOUT": 504}


def server_error_codes() -> set[tuple[int, str]]:
    """(status, code) of every API error the server's source builds."""
    found: set[tuple[int, str]] = set()
    for path in (ROOT / "crates" / "wasmcage-server" / "src").rglob("*.rs"):
        text = path.read_text()
        for status, code in re.findall(r'(?:ApiError|Self)::new\(\s*StatusCode::(\w+),\s*"([a-z_]+)"', text):
            found.add((_STATUS[status], code))
        for code in re.findall(r'(?:ApiError|Self)::bad\(\s*"([a-z_]+)"', text):
            found.add((400, code))
        for code in re.findall(r'ApiError::rejected\([^,]+,\s*"([a-z_]+)"', text):
            found.add((400, code))
        if re.search(r"ApiError::busy\(|Self::busy\(", text):
            found.add((503, "busy"))
        body = re.search(r"fn core_error\(.*?\n}\n", text, re.S)
        if body:
            for code in re.findall(r'=> "([a-z_]+)"', body.group(0)):
                found.add((400, code))
    return found


def test_every_error_code_the_server_emits_has_its_class():
    found = server_error_codes()
    # The scan finds what it must (so that a changed idiom cannot make it find nothing).
    for expected in [(401, "unauthorized"), (409, "session_busy"), (429, "rate_limited"),
                     (400, "invalid_module"), (503, "busy"), (429, "busy"), (400, "bad_json")]:
        assert expected in found, expected
    for status, code in sorted(found):
        assert code in errors.ERROR_CODES, f"{status} {code} has no class"
        cls = errors.error_class(status, code)
        family = errors.STATUS_CLASSES.get(status, errors.ServerError)
        assert issubclass(cls, family), (status, code, cls, family)
    # And every code docs/server.md lists is one the client knows.
    docs = (ROOT / "docs" / "server.md").read_text()
    table = docs[docs.index("## Errors"):]
    table = table[:table.index("\n\n", table.index("| status |"))]
    rows = [line.split("|") for line in table.splitlines() if re.match(r"\| \d{3} \|", line)]
    assert len(rows) > 10
    for row in rows:
        for code in re.findall(r"`([a-z_]+)`", row[2]):
            assert code in errors.ERROR_CODES, code


def test_unknown_codes_fall_back_by_status():
    assert errors.error_class(409, "something_new") is errors.Conflict
    assert errors.error_class(503, "") is errors.Unavailable
    assert errors.error_class(502, "") is errors.ServerError
    assert errors.error_class(418, "") is errors.ApiError
    assert errors.error_class(429, "busy") is errors.KeyBusy
    assert issubclass(errors.KeyBusy, errors.Busy) and issubclass(errors.ServerBusy, errors.Busy)
    assert errors.parse_retry_after("3") == 3.0
    assert errors.parse_retry_after("soon") is None
    assert errors.parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
