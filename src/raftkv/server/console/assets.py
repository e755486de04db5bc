"""The console's files: `static/` of this package, shipped in the wheel as package data
and read once, at import. Nothing is fetched at page load from anywhere but the node.

A file is served by its name alone, looked up in the table of the files that exist (flat:
no folders), so no request path can reach another file (`/ui/../pyproject.toml`,
`/ui/%2e%2e%2fsettings.py`: not in the table, 404).
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from importlib import resources

__all__ = ["PAGE", "Asset", "asset", "assets"]

# The page `/ui` serves; the other files are at `/ui/<name>`.
PAGE = "index.html"

_CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
}


@dataclass(frozen=True, slots=True)
class Asset:
    name: str
    body: bytes
    content_type: str
    # A strong validator of the body (ETag: an unchanged file is answered 304).
    etag: str


@functools.cache
def assets() -> dict[str, Asset]:
    """Every file of `static/` whose kind is known, by name."""
    found: dict[str, Asset] = {}
    for entry in resources.files("raftkv.server.console").joinpath("static").iterdir():
        suffix = "." + entry.name.rpartition(".")[2]
        if entry.is_file() and suffix in _CONTENT_TYPES:
            body = entry.read_bytes()
            etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
            found[entry.name] = Asset(entry.name, body, _CONTENT_TYPES[suffix], etag)
    return found


def asset(name: str) -> Asset | None:
    """The file called `name`, or None (any other name, a path included)."""
    return assets().get(name)
