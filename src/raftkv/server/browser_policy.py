"""Which Hosts and Origins a node answers to (issue 17): parsing, normalizing and matching
the `host_whitelist` and `cors` settings' entries, pure (no I/O, no aiohttp), for the
settings to validate them and `raftkv.server.browser_guards` to apply them.

- A Host entry is "*" (any), a host name (lower-case, no trailing dot), an IP address or an
  IP network ("10.0.0.0/8"), each normalized, so matching is comparing (an IP address
  matches in its compressed form; an IPv4-mapped IPv6 address as its IPv4 address).
- An origin is "*" (any) or `scheme://host[:port]`, http or https, as browsers send the
  Origin header: lower-case, the scheme's default port left out.
- The default Host allow-list (`allowed_hosts`): a node listening on loopback answers to
  the loopback names only (`LOOPBACK_HOSTS`) and its advertised host: a DNS-rebinding page's
  own name is refused. A node listening elsewhere answers to any, as etcd's default.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from urllib.parse import urlsplit

from raftkv.server.setting_values import parse_list

__all__ = [
    "ANY",
    "LOOPBACK_HOSTS",
    "allowed_hosts",
    "host_allowed",
    "host_of_header",
    "is_loopback_host",
    "normalize_origin",
    "parse_cors",
    "parse_host_pattern",
    "parse_host_whitelist",
]

# The allow-list entry that allows anything.
ANY = "*"
# What a node serving on loopback accepts as Host by default: the names only a process on
# the same machine can reach it by (a page's DNS name cannot be one of them).
LOOPBACK_HOSTS = ("localhost", "127.0.0.0/8", "::1")
_DEFAULT_PORTS = {"http": 80, "https": 443}


def parse_host_pattern(text: str) -> str:
    """An allow-list entry, normalized: "*", a host name (lower-case, no trailing dot), an
    IP address or an IP network (compressed). ValueError if it is none of them."""
    entry = text.strip().lower().rstrip(".")
    if entry == ANY:
        return ANY
    if entry.startswith("[") and entry.endswith("]"):
        entry = entry[1:-1]
    if "/" in entry:
        return str(ipaddress.ip_network(entry, strict=False))
    try:
        return str(ipaddress.ip_address(entry))
    except ValueError:
        pass
    labels = entry.split(".")
    if not entry or len(entry) > 253 or not all(_is_label(label) for label in labels):
        raise ValueError(f"{text!r} is not a host name, IP address or IP network")
    return entry


def _is_label(label: str) -> bool:
    return (
        0 < len(label) <= 63
        and label.isascii()
        and label.replace("-", "").replace("_", "").isalnum()
        and not label.startswith("-")
    )


def normalize_origin(text: str) -> str:
    """An origin as browsers send it, normalized: `scheme://host[:port]`, lower-case, the
    scheme's default port left out; "*" stays. ValueError if it is not one (a path, a
    query, a scheme other than http or https)."""
    entry = text.strip()
    if entry == ANY:
        return ANY
    parts = urlsplit(entry)
    if parts.scheme.lower() not in _DEFAULT_PORTS or not parts.hostname:
        raise ValueError(f"{text!r} is not an origin: expected http(s)://host[:port]")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise ValueError(
            f"{text!r} is not an origin: no path, query or user, only scheme://host:port"
        )
    scheme = parts.scheme.lower()
    port = parts.port  # ValueError for a bad one
    host = parts.hostname.lower()
    shown = f"[{host}]" if ":" in host else host
    if port is None or port == _DEFAULT_PORTS[scheme]:
        return f"{scheme}://{shown}"
    return f"{scheme}://{shown}:{port}"


def host_of_header(header: str) -> str:
    """The host of a Host header, its port stripped: "[::1]:8080" -> "::1",
    "Example.COM.:80" -> "example.com"."""
    value = header.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value
    return value.rpartition(":")[0] if value.count(":") == 1 else value


def host_allowed(host: str, allowed: Iterable[str]) -> bool:
    """Whether `host` (`host_of_header`'s) matches an entry of `allowed`
    (normalized entries: an IP address matches in its compressed form)."""
    name = host.rstrip(".")
    try:
        address: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(name)
    except ValueError:
        address = None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    for entry in allowed:
        if entry in (ANY, name):
            return True
        if address is not None and (
            str(address) == entry or ("/" in entry and address in ipaddress.ip_network(entry))
        ):
            return True
    return False


def is_loopback_host(host: str) -> bool:
    """Whether a listening host is loopback: "localhost", 127.0.0.0/8 or ::1. A wildcard
    ("0.0.0.0", "::") or another name is not (it may be reached from elsewhere)."""
    name = host.strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def allowed_hosts(given: Iterable[str], listen_host: str, advertised_host: str) -> tuple[str, ...]:
    """The Host allow-list a node uses: the one `given` (normalized), or by default, when it
    listens on loopback, the loopback names and the host of its advertised client URL;
    when it listens elsewhere, any (as etcd)."""
    hosts = tuple(dict.fromkeys(parse_host_pattern(host) for host in given))
    if hosts:
        return hosts
    if not is_loopback_host(listen_host):
        return (ANY,)
    defaults = [*LOOPBACK_HOSTS]
    if advertised_host:
        defaults.append(parse_host_pattern(advertised_host))
    return tuple(dict.fromkeys(defaults))


# -- the settings' parsers (a comma-separated string from a flag or the environment, or a
# TOML array of strings); ValueError says what is wrong with which entry.


def parse_host_whitelist(value: object) -> tuple[str, ...]:
    return tuple(dict.fromkeys(parse_host_pattern(entry) for entry in parse_list(value)))


def parse_cors(value: object) -> tuple[str, ...]:
    return tuple(dict.fromkeys(normalize_origin(entry) for entry in parse_list(value)))
