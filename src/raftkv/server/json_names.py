"""Duplicate names in a JSON body: RFC 8259 leaves them to the parser, msgspec keeps the
last one silently, and the API refuses them rather than guess which one the client meant.

The full check parses the body a second time (the standard library's parser, which hands
every object's names over in order), which costs more than msgspec's own decode. Most
bodies are spared it by a sound shortcut (`DuplicateNames.surely_unique`): when the body's type
reaches only structs that refuse unknown fields (so every name in the body is one of their
field names, or msgspec has refused it already) and the body holds no backslash (so every
name is written as its plain bytes), a name given twice in one object makes its quoted
form appear twice in the body. So if no field name's quoted form appears more than once,
there is no duplicate; otherwise (a name repeated in a list of objects, a value equal to a
name, an escape anywhere) the full check decides.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec

__all__ = ["DuplicateNames"]


class DuplicateNames:
    """The duplicate-name check of one body type."""

    def __init__(self, kind: type[Any]) -> None:
        names: set[str] = set()
        # The quoted field names (b'"value"'), or None when the shortcut does not hold for
        # this type (a dict or an untyped value, or a struct that takes unknown fields).
        self._quoted: tuple[bytes, ...] | None = (
            tuple(b'"' + name.encode() + b'"' for name in sorted(names))
            if _closed(msgspec.inspect.type_info(kind), names, set())
            else None
        )

    def surely_unique(self, data: bytes) -> bool:
        """True when `data` (JSON that msgspec decoded as this type) has no duplicate name
        for sure; False when `find` must decide."""
        quoted = self._quoted
        return (
            quoted is not None
            and b"\\" not in data
            and all(data.count(name) <= 1 for name in quoted)
        )

    @staticmethod
    def find(data: bytes) -> str | None:
        """A name that appears twice in one object of `data`, or None: the full check, a
        second parse of the whole body."""
        try:
            json.loads(data, object_pairs_hook=_unique_names)
        except _DuplicateName as duplicate:
            return duplicate.name
        return None


def _closed(info: msgspec.inspect.Type, names: set[str], seen: set[type[Any]]) -> bool:
    """Whether every object a value of `info` can hold is a struct refusing unknown fields;
    gathers their field names (as encoded) into `names`."""
    if isinstance(info, msgspec.inspect.StructType):
        if info.cls in seen:
            return True
        seen.add(info.cls)
        if not info.forbid_unknown_fields:
            return False
        if info.tag_field is not None:
            names.add(info.tag_field)
        for field in info.fields:
            names.add(field.encode_name)
            if not _closed(field.type, names, seen):
                return False
        return True
    if isinstance(info, msgspec.inspect.Metadata):
        return _closed(info.type, names, seen)
    if isinstance(info, msgspec.inspect.UnionType):
        return all(_closed(member, names, seen) for member in info.types)
    if isinstance(
        info, (msgspec.inspect.ListType, msgspec.inspect.SetType, msgspec.inspect.VarTupleType)
    ):
        return _closed(info.item_type, names, seen)
    if isinstance(info, msgspec.inspect.TupleType):
        return all(_closed(item, names, seen) for item in info.item_types)
    # Scalars hold no object; anything else (dicts, Any, dataclasses...) may hold names the
    # struct fields do not list.
    return isinstance(
        info,
        (
            msgspec.inspect.NoneType,
            msgspec.inspect.BoolType,
            msgspec.inspect.IntType,
            msgspec.inspect.FloatType,
            msgspec.inspect.StrType,
            msgspec.inspect.BytesType,
            msgspec.inspect.LiteralType,
            msgspec.inspect.EnumType,
        ),
    )


class _DuplicateName(Exception):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def _unique_names(pairs: list[tuple[str, object]]) -> dict[str, object]:
    found = dict(pairs)
    if len(found) != len(pairs):
        seen: set[str] = set()
        for name, _ in pairs:
            if name in seen:
                raise _DuplicateName(name)
            seen.add(name)
    return found
