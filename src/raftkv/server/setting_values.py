"""How each `raftkv serve` setting's text (a flag, an environment variable) or TOML value
becomes its value: one parser per kind of value, each raising ValueError with what it
expected (`raftkv.server.settings` names the setting and where it came from)."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    # Not at run time: importing raftkv.raft loads the whole library, and the CLI's client
    # verbs import these settings (raftkv.server's docstring).
    from raftkv.raft.builder import PeerTransportKind

LOG_LEVELS = ("debug", "info", "warning", "error")


def parse_address(value: object) -> str:
    """host:port with a port in 1..65535 (0 allowed: pick one); IPv6 hosts in brackets."""
    text = parse_str(value)
    host, separator, port = text.rpartition(":")
    if not separator or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected host:port, got {text!r}")
    if host.startswith("["):
        if not host.endswith("]"):
            raise ValueError(f"unclosed [ in {text!r}")
        ipaddress.IPv6Address(host[1:-1])
    elif ":" in host:
        raise ValueError(f"an IPv6 host needs brackets: [{host}]:{port}")
    return text


def parse_optional_address(value: object) -> str:
    """host:port as parse_address, or empty (the listener is off)."""
    return "" if parse_str(value) == "" else parse_address(value)


def split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def port_of(address: str) -> int:
    return split_address(address)[1]


def parse_cluster(value: object) -> dict[int, str]:
    """`1=127.0.0.1:7080,2=...` (or a TOML table {"1" = "..."}): peer address by node id."""
    if isinstance(value, Mapping):
        items = [(str(key), item) for key, item in value.items()]
    elif isinstance(value, str):
        items = [tuple(part.split("=", 1)) for part in value.split(",") if part.strip()]  # type: ignore[misc]
    else:
        raise ValueError(f"expected id=host:port,... got {type(value).__name__}")
    cluster: dict[int, str] = {}
    for item in items:
        if len(item) != 2:
            raise ValueError(f"expected id=host:port, got {'='.join(item)!r}")
        node_id_text, address = (str(part).strip() for part in item)
        if not node_id_text.isdigit() or int(node_id_text) < 1:
            raise ValueError(f"node ids are positive integers, got {node_id_text!r}")
        if int(node_id_text) in cluster:
            raise ValueError(f"node {node_id_text} is listed twice")
        cluster[int(node_id_text)] = parse_address(address)
    return cluster


def parse_int(value: object) -> int:
    if isinstance(value, bool):
        raise ValueError("expected an integer, got a boolean")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    raise ValueError(f"expected an integer, got {value!r}")


def parse_float(value: object) -> float:
    if isinstance(value, bool):
        raise ValueError("expected a number, got a boolean")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        return float(value)
    raise ValueError(f"expected a number, got {value!r}")


def parse_bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on"):
        return True
    if isinstance(value, str) and value.lower() in ("false", "0", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def parse_str(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {value!r}")
    return value


def parse_optional_path(value: object) -> Path | None:
    text = parse_str(value)
    return Path(text) if text else None


def parse_path(value: object) -> Path:
    text = parse_str(value)
    if not text:
        raise ValueError("expected a path, got an empty string")
    return Path(text)


def parse_level(value: object) -> str:
    text = parse_str(value).lower()
    if text not in LOG_LEVELS:
        raise ValueError(f"expected one of {', '.join(LOG_LEVELS)}, got {value!r}")
    return text


def parse_peer_transport(value: object) -> PeerTransportKind:
    from raftkv.raft.builder import PEER_TRANSPORT_KINDS  # noqa: PLC0415 (see above)

    text = parse_str(value).lower()
    for kind in PEER_TRANSPORT_KINDS:
        if text == kind:
            return kind
    raise ValueError(f"expected {' or '.join(PEER_TRANSPORT_KINDS)}, got {value!r}")


# The event loops `raftkv serve` can run on (raftkv.server.event_loops).
EVENT_LOOP_KINDS = ("asyncio", "uvloop")


def parse_event_loop(value: object) -> str:
    text = parse_str(value).lower()
    if text not in EVENT_LOOP_KINDS:
        raise ValueError(f"expected {' or '.join(EVENT_LOOP_KINDS)}, got {value!r}")
    return text


def parse_log_format(value: object) -> str:
    text = parse_str(value).lower()
    if text not in ("text", "json"):
        raise ValueError(f"expected text or json, got {value!r}")
    return text


def parse_list(value: object) -> list[str]:
    """A comma-separated string (a flag, the environment) or a TOML list of strings; empty
    entries dropped."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, (list, tuple)) and all(isinstance(item, str) for item in value):
        return [item.strip() for item in value if item.strip()]
    raise ValueError(f"expected a comma-separated string or a list of strings, got {value!r}")


def parse_common_names(value: object) -> tuple[str, ...]:
    """Certificate common names (each 1..64 characters, as X.509 bounds them)."""
    names = parse_list(value)
    for name in names:
        if len(name) > 64:
            raise ValueError(f"a common name is at most 64 characters, got {name[:64]!r}...")
    return tuple(dict.fromkeys(names))
