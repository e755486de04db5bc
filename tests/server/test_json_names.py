"""The duplicate-name check of JSON bodies (`raftkv.server.json_names`): its shortcut never
lets a duplicate through, and the full check names the duplicate."""

from __future__ import annotations

import json

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from raftkv.api.kv import PutBody, TxnBody
from raftkv.server.json_names import DuplicateNames


class Open(msgspec.Struct):
    """Takes unknown fields: any name may appear, so the shortcut cannot hold."""

    value: str = ""


class Mapping(msgspec.Struct, forbid_unknown_fields=True):
    labels: dict[str, str] = {}


def test_a_body_without_repeated_names_is_unique_at_once() -> None:
    names = DuplicateNames(PutBody)
    assert names.surely_unique(b'{"value": "v", "lease": 7}')
    assert names.find(b'{"value": "v", "lease": 7}') is None


def test_a_duplicate_is_never_taken_for_unique() -> None:
    names = DuplicateNames(PutBody)
    body = b'{"value": "a", "value": "b"}'
    assert not names.surely_unique(body)
    assert names.find(body) == "value"


def test_an_escaped_name_goes_to_the_full_check() -> None:
    """\\u0076alue is "value" once decoded: its bytes differ, so the shortcut steps aside."""
    names = DuplicateNames(PutBody)
    body = b'{"value": "a", "\\u0076alue": "b"}'
    assert not names.surely_unique(body)
    assert names.find(body) == "value"


def test_names_repeated_across_objects_go_to_the_full_check() -> None:
    names = DuplicateNames(TxnBody)
    body = b'{"success": [{"op": "put", "key": "a"}, {"op": "put", "key": "b"}]}'
    assert not names.surely_unique(body)  # "op" twice, in two objects: legal
    assert names.find(body) is None


def test_types_that_take_any_name_always_get_the_full_check() -> None:
    for kind, body in ((Open, b'{"value": "v"}'), (Mapping, b'{"labels": {"a": "1"}}')):
        assert not DuplicateNames(kind).surely_unique(body)


# JSON objects made of the field names of a txn body (all of them reachable from TxnBody),
# nested in lists, sometimes with a name repeated.
_NAMES = st.sampled_from(["op", "key", "value", "range_end", "success", "failure", "lease"])
_VALUES = st.recursive(
    st.one_of(st.integers(), st.text(max_size=5), _NAMES),
    lambda inner: st.lists(
        st.lists(st.tuples(_NAMES, inner), max_size=4).map(
            lambda pairs: "{" + ", ".join(f"{json.dumps(n)}: {_text(v)}" for n, v in pairs) + "}"
        ),
        max_size=3,
    ),
    max_leaves=12,
)


def _text(value: object) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(str(item) for item in value) + "]"
    return json.dumps(value)


@given(_VALUES)
def test_the_shortcut_is_sound(value: object) -> None:
    """Whenever the shortcut says unique, the full parse finds no duplicate."""
    body = _text(value).encode()
    names = DuplicateNames(TxnBody)
    if names.surely_unique(body):
        assert names.find(body) is None
