"""The toy state machine of the interaction environment, and the storage beside it.

The machine records the data of every applied entry and the membership after each applied
index, so scripts can show what was applied and cut a snapshot at any applied index.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from raftkv.raft.core import ConfState, Entry, EntryKind, HardState, Snapshot, SnapshotMetadata
from raftkv.raft.storage.memory import MemoryStorage

__all__ = ["InteractionStorage", "ToyStateMachine"]


@dataclass(frozen=True, slots=True)
class _AppliedPoint:
    """The state machine right after applying `index`: how much data, which membership."""

    index: int
    term: int
    data_count: int
    conf_state: ConfState


def _encode_data(data: list[bytes]) -> bytes:
    return json.dumps([item.decode("latin-1") for item in data]).encode()


def _decode_data(blob: bytes) -> list[bytes]:
    if not blob:
        return []
    items = json.loads(blob.decode())
    if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
        raise ValueError(f"not a toy state machine snapshot: {blob!r}")
    return [item.encode("latin-1") for item in items]


class ToyStateMachine:
    """The applied state of one node: the data of each applied non-empty normal entry,
    plus the membership after each applied index (so snapshots can be cut at any index).

    Durable: it survives `crash`, together with its applied index (the two are written in
    one atomic step, as docs/architecture.md#the-state-machine-contract requires of real
    state machines).
    """

    def __init__(self, snapshot: Snapshot) -> None:
        self.data: list[bytes] = []
        # One point per applied index since the last restored snapshot (the first point).
        self.history: list[_AppliedPoint] = []
        self.restore(snapshot)

    @property
    def applied_index(self) -> int:
        return self.history[-1].index

    @property
    def conf_state(self) -> ConfState:
        return self.history[-1].conf_state

    def restore(self, snapshot: Snapshot) -> None:
        metadata = snapshot.metadata
        self.data = _decode_data(snapshot.data)
        self.history = [
            _AppliedPoint(metadata.index, metadata.term, len(self.data), metadata.conf_state)
        ]

    def apply(self, entry: Entry, conf_state: ConfState | None) -> None:
        if entry.kind is EntryKind.NORMAL and entry.data:
            self.data.append(entry.data)
        self.history.append(
            _AppliedPoint(
                entry.index,
                entry.term,
                len(self.data),
                conf_state if conf_state is not None else self.conf_state,
            )
        )

    def current_snapshot(self) -> Snapshot:
        """A snapshot of everything applied so far."""
        point = self.history[-1]
        metadata = SnapshotMetadata(point.index, point.term, point.conf_state)
        return Snapshot(metadata, _encode_data(self.data))

    def snapshot_at(self, index: int) -> tuple[bytes, ConfState]:
        """The data and membership of the state at `index` (applied, not yet compacted)."""
        for point in reversed(self.history):
            if point.index == index:
                return _encode_data(self.data[: point.data_count]), point.conf_state
        raise ValueError(
            f"index {index} is not in the applied range "
            f"[{self.history[0].index}, {self.applied_index}]"
        )


class InteractionStorage(MemoryStorage):
    """MemoryStorage that behaves like an application's storage in two ways:

    - `snapshot()` returns a fresh snapshot of the state machine's applied state (as
      etcd's interaction environment does), so a snapshot sent to a new member already
      holds the configuration that added it;
    - after a restart, the membership is the one the state machine applied (a real node
      persists it with its applied index; MemoryStorage only knows its snapshot's).
    """

    def __init__(self, state_machine: ToyStateMachine) -> None:
        super().__init__()
        self.state_machine = state_machine
        self.durable_conf_state: ConfState | None = None

    def snapshot(self) -> Snapshot:
        if self.state_machine.applied_index == 0:
            return super().snapshot()
        return self.state_machine.current_snapshot()

    def initial_state(self) -> tuple[HardState, ConfState]:
        hard_state, conf_state = super().initial_state()
        if self.durable_conf_state is not None:
            conf_state = self.durable_conf_state
        return hard_state, conf_state
