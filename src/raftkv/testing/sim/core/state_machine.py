"""The simulator's replicated state machine: a tiny KV map with client sessions.

Commands travel in entry data as canonical JSON (never pickle):
`{"client": 3, "request": 17, "op": "put", "key": "k1", "value": "3.17"}`.

Sessions make application exactly-once: each client has at most one request in flight and
numbers requests upward, so the state machine applies a command only if its request id
is above the client's last applied one. A duplicated or retried proposal (the network
duplicates forwarded MsgProp) is therefore applied once, and a proposal from a timed-out
request cannot take effect after the client's next request did.

The durable image (`Image`) holds the data, the sessions, the membership and the applied
index together, as one atomic record: that is what survives a crash and what a snapshot
carries.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from raftkv.raft.core.types import ConfState, Entry, EntryKind

__all__ = ["Command", "Image", "SessionStateMachine"]


@dataclass(frozen=True, slots=True)
class Command:
    client: int
    request: int
    op: str  # "put" | "delete"
    key: str
    value: str | None = None

    def encode(self) -> bytes:
        record = {
            "client": self.client,
            "request": self.request,
            "op": self.op,
            "key": self.key,
            "value": self.value,
        }
        return json.dumps(record, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, data: bytes) -> Command:
        record = json.loads(data)
        return cls(
            client=int(record["client"]),
            request=int(record["request"]),
            op=str(record["op"]),
            key=str(record["key"]),
            value=None if record["value"] is None else str(record["value"]),
        )


@dataclass(frozen=True, slots=True)
class Image:
    """The state machine's durable record: everything up to and including `applied`."""

    applied: int
    data: tuple[tuple[str, str], ...]
    sessions: tuple[tuple[int, int], ...]
    conf_state: ConfState

    def encode(self) -> bytes:
        """Snapshot data (the membership travels in the snapshot's metadata)."""
        record = {"data": dict(self.data), "sessions": [list(item) for item in self.sessions]}
        return json.dumps(record, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, data: bytes, applied: int, conf_state: ConfState) -> Image:
        record = json.loads(data)
        return cls(
            applied=applied,
            data=tuple(sorted((str(k), str(v)) for k, v in record["data"].items())),
            sessions=tuple(sorted((int(c), int(r)) for c, r in record["sessions"])),
            conf_state=conf_state,
        )


class SessionStateMachine:
    """The in-memory (volatile) state machine of one node incarnation."""

    def __init__(self, image: Image) -> None:
        self.applied = image.applied
        self.data: dict[str, str] = dict(image.data)
        self.sessions: dict[int, int] = dict(image.sessions)
        self.conf_state = image.conf_state

    def image(self) -> Image:
        return Image(
            applied=self.applied,
            data=tuple(sorted(self.data.items())),
            sessions=tuple(sorted(self.sessions.items())),
            conf_state=self.conf_state,
        )

    def apply(self, entry: Entry) -> Command | None:
        """Apply one committed entry; returns the command if it took effect.

        CONF_CHANGE entries only move `applied` here: the caller hands them to the core
        and records the resulting `conf_state`.
        """
        if entry.index != self.applied + 1:
            raise AssertionError(
                f"state machine at {self.applied} asked to apply entry {entry.index}"
            )
        self.applied = entry.index
        if entry.kind is EntryKind.CONF_CHANGE or not entry.data:
            return None
        command = Command.decode(entry.data)
        if command.request <= self.sessions.get(command.client, 0):
            return None  # a duplicate of a request already applied
        self.sessions[command.client] = command.request
        if command.op == "put":
            assert command.value is not None
            self.data[command.key] = command.value
        elif command.op == "delete":
            self.data.pop(command.key, None)
        else:
            raise AssertionError(f"unknown command {command.op!r}")
        return command

    def read(self, key: str) -> str | None:
        return self.data.get(key)
