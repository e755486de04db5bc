"""raftkv's servers: the HTTP/JSON API over `raftkv.kv.KvService`."""

from __future__ import annotations

from raftkv.server.http import HttpSettings, create_app

__all__ = ["HttpSettings", "create_app"]
