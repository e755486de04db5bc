"""raftkv's servers: the HTTP/JSON API over `raftkv.kv.KvService`.

`HttpSettings` and `create_app` load lazily (PEP 562), so importing a light submodule such
as `raftkv.server.settings` (the CLI does) does not load aiohttp or the KV store. The wire
schema the HTTP API speaks is `raftkv.api`, shared with the client.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from raftkv.server.app import HttpSettings, create_app

__all__ = ["HttpSettings", "create_app"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from raftkv.server import app  # noqa: PLC0415

        return getattr(app, name)
    raise AttributeError(f"module 'raftkv.server' has no attribute {name!r}")
