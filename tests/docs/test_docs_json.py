"""The JSON examples of the docs: each is a request body or an answer of the route named
on the line before it, valid under that route's schema in /openapi.json (the route table
and the schema checks are docs_helpers')."""

from __future__ import annotations

import json
import re

import pytest
from docs_helpers import ROOT, Block, HttpApp, blocks, schema_errors

JSON_BLOCKS = blocks("json")
# What a JSON example is, on the line before it: a route's request body or its answer.
JSON_MARKER = re.compile(r"<!-- docs-check: (body|answer) ([A-Z]+) (/\S*) -->")


@pytest.mark.parametrize("block", JSON_BLOCKS, ids=[block.where for block in JSON_BLOCKS])
def test_json_block(block: Block, http_app: HttpApp) -> None:
    """A JSON example is a request body or an answer of the route its marker names, valid
    under the route's schema in /openapi.json (unknown fields, types, enums, ranges)."""
    lines = (ROOT / block.document).read_text().splitlines()
    marker = JSON_MARKER.fullmatch(lines[block.line - 2].strip())
    assert marker, f"{block.where}: no '<!-- docs-check: body|answer METHOD /path -->' before it"
    kind, method, path = marker.groups()
    route = http_app.resolve(method, path)
    assert route is not None, f"{block.where}: no route serves {method} {path}"
    operation = http_app.operation(method, route)
    if kind == "body":
        content = operation["requestBody"]["content"]
    else:
        content = operation["responses"]["200"]["content"]
    schema = content["application/json"]["schema"]
    errors = schema_errors(json.loads(block.text), schema, http_app.openapi, kind)
    assert not errors, f"{block.where}: " + "; ".join(errors)
