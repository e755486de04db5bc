"""Small state machines for tests, examples and benchmarks.

`DictStateMachine` keeps a dict in memory (rebuilt from snapshot + log on restart);
`DurableDictStateMachine` keeps it in the storage's `AppData` space, with the applied index
in the same atomic write, so it resumes exactly where it stopped.

Commands are msgpack maps: {"op": "set", "key": str, "value": str}, {"op": "delete",
"key": str}, {"op": "incr", "key": str, "by": int}. `apply` returns the new value (or the
deleted one). A malformed command fails its proposal with `BadCommand`; it is still
"applied" (it consumed its log position) identically on every node.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from raftkv.raft.driver.state_machine import Command
from raftkv.raft.storage.base import AppBatch, AppData


class BadCommand(ValueError):
    """A command that does not decode or names an unknown operation."""


class Operation(msgspec.Struct, forbid_unknown_fields=True):
    op: str
    key: str
    value: str = ""
    by: int = 0


_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(Operation)
_STATE_DECODER = msgspec.msgpack.Decoder(tuple[int, int, dict[str, str]])


def encode_set(key: str, value: str) -> bytes:
    return _ENCODER.encode(Operation(op="set", key=key, value=value))


def encode_delete(key: str) -> bytes:
    return _ENCODER.encode(Operation(op="delete", key=key))


def encode_incr(key: str, by: int = 1) -> bytes:
    return _ENCODER.encode(Operation(op="incr", key=key, by=by))


def _decode(data: bytes) -> Operation:
    try:
        operation = _DECODER.decode(data)
    except msgspec.DecodeError as error:
        raise BadCommand(f"command does not decode: {error}") from error
    if operation.op not in ("set", "delete", "incr"):
        raise BadCommand(f"unknown operation {operation.op!r}")
    return operation


def _evaluate(current: str | None, operation: Operation) -> str | None:
    """The key's new value (None: deleted)."""
    if operation.op == "set":
        return operation.value
    if operation.op == "delete":
        return None
    try:
        number = int(current) if current is not None else 0
    except ValueError as error:
        raise BadCommand(f"{operation.key!r} does not hold an integer") from error
    return str(number + operation.by)


class DictStateMachine:
    """An in-memory dict. `applied_index()` starts at 0; snapshots carry everything."""

    def __init__(self) -> None:
        self.data: dict[str, str] = {}
        self._applied = 0
        self._applied_term = 0
        # Every command applied, in order, as (its index, its place among the commands of
        # that index): a batch entry's commands share its index (Command), and all come in
        # one `apply` call. Tests check nothing is applied twice.
        self.applied_commands: list[tuple[int, int]] = []

    def applied_index(self) -> int:
        return self._applied

    def apply(
        self, commands: Sequence[Command], applied_index: int, applied_term: int
    ) -> list[object]:
        results: list[object] = []
        place, previous = 0, -1
        for command in commands:
            place = place + 1 if command.index == previous else 0
            previous = command.index
            self.applied_commands.append((command.index, place))
            try:
                operation = _decode(command.data)
                value = _evaluate(self.data.get(operation.key), operation)
            except BadCommand as error:
                results.append(error)
                continue
            if value is None:
                results.append(self.data.pop(operation.key, None))
            else:
                self.data[operation.key] = value
                results.append(value)
        self._applied = applied_index
        self._applied_term = applied_term
        return results

    def snapshot(self) -> bytes:
        return _ENCODER.encode((self._applied, self._applied_term, self.data))

    def restore(self, data: bytes, index: int, term: int) -> None:
        _, _, items = _STATE_DECODER.decode(data)
        self.data = dict(items)
        self._applied = index
        self._applied_term = term


class DurableDictStateMachine:
    """A dict stored in `AppData` (RocksDB in production). Keys are UTF-8 bytes."""

    def __init__(self, app: AppData) -> None:
        self.app = app

    def applied_index(self) -> int:
        return self.app.applied()[0]

    def get(self, key: str) -> str | None:
        value = self.app.get(key.encode())
        return value.decode() if value is not None else None

    def items(self) -> dict[str, str]:
        return {key.decode(): value.decode() for key, value in self.app.scan()}

    def apply(
        self, commands: Sequence[Command], applied_index: int, applied_term: int
    ) -> list[object]:
        batch = AppBatch()
        # Values written earlier in this batch are not in `app` yet.
        staged: dict[str, str | None] = {}
        results: list[object] = []
        for command in commands:
            try:
                operation = _decode(command.data)
                current = (
                    staged[operation.key] if operation.key in staged else self.get(operation.key)
                )
                value = _evaluate(current, operation)
            except BadCommand as error:
                results.append(error)
                continue
            staged[operation.key] = value
            results.append(value if value is not None else current)
        for key, value in staged.items():
            if value is None:
                batch.delete(key.encode())
            else:
                batch.put(key.encode(), value.encode())
        self.app.commit(batch, applied_index, applied_term)
        return results

    def snapshot(self) -> bytes:
        index, term = self.app.applied()
        return _ENCODER.encode((index, term, self.items()))

    def restore(self, data: bytes, index: int, term: int) -> None:
        _, _, items = _STATE_DECODER.decode(data)
        self.app.replace_all(
            iter(sorted((key.encode(), value.encode()) for key, value in items.items())),
            index,
            term,
        )
