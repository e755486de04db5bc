"""`/openapi.json`: the HTTP API described as OpenAPI 3.1, derived from the route table
(`raftkv.server.routes`) and the wire schema (`raftkv.api`).

Nothing here describes a route: the paths, parameters and answers are the table's rows, and
the schemas come from the msgspec structs the server itself decodes requests and encodes
answers with, so the document cannot drift from the server. A test runs schemathesis
against a live node to check the server keeps to it (every answer's status, content type
and body).
"""

from __future__ import annotations

import functools
from typing import Any

import msgspec

from raftkv.server.routes import ROUTES, Body, Parameter, Route

__all__ = ["openapi_document", "openapi_document_bytes"]

_REF = "#/components/schemas/{name}"


def _ref(kind: type[msgspec.Struct]) -> dict[str, str]:
    return {"$ref": _REF.format(name=kind.__name__)}


def _parameter(parameter: Parameter) -> dict[str, Any]:
    return {
        "name": parameter.name,
        "in": parameter.location,
        "required": parameter.location == "path",
        "schema": dict(parameter.schema),
        "description": parameter.description,
    }


def _schema(body: Body) -> dict[str, Any]:
    if isinstance(body, type):
        return _ref(body)
    if isinstance(body, tuple):
        return {"oneOf": [_ref(kind) for kind in body]}
    return dict(body)


def _operation(route: Route) -> dict[str, Any]:
    operation: dict[str, Any] = {"summary": route.summary}
    if route.parameters:
        operation["parameters"] = [_parameter(parameter) for parameter in route.parameters]
    if route.body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _ref(route.body)}},
        }
    operation["responses"] = {
        str(status): {
            "description": response.description,
            "content": {response.media_type: {"schema": _schema(response.body)}},
        }
        for status, response in route.responses.items()
    }
    return operation


def _structs() -> list[type[msgspec.Struct]]:
    """Every struct a route takes or answers, once, in the table's order."""
    found: dict[type[msgspec.Struct], None] = {}
    for route in ROUTES:
        if route.body is not None:
            found[route.body] = None
        for response in route.responses.values():
            body = response.body
            kinds = (body,) if isinstance(body, type) else body if isinstance(body, tuple) else ()
            found.update(dict.fromkeys(kinds))
    return list(found)


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of the HTTP API: one path per route template, one operation
    per route, in the table's order; the schemas by name."""
    paths: dict[str, dict[str, Any]] = {}
    for route in ROUTES:
        paths.setdefault(route.template, {})[route.method.lower()] = _operation(route)
    _, components = msgspec.json.schema_components(_structs(), ref_template=_REF)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "raftkv",
            "version": "1",
            "description": "A Raft-replicated key-value store with etcd's data model. "
            'Errors are {"error": {"code", "message"}}.',
        },
        "paths": paths,
        "components": {"schemas": dict(sorted(components.items()))},
    }


@functools.cache
def openapi_document_bytes() -> bytes:
    return msgspec.json.encode(openapi_document())
