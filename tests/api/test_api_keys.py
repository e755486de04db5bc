"""Key ranges on the wire: `prefix_end`, the one "end of a prefix" the server and the client
share (etcd's GetPrefixRangeEnd)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raftkv.api.keys import prefix_end
from raftkv.kv.commands import in_range

PROPERTY = settings(max_examples=300, deadline=None, derandomize=True, database=None)
KEYS = st.lists(st.sampled_from([0x00, 0x01, 0x61, 0xFE, 0xFF]), max_size=5).map(bytes)


@pytest.mark.parametrize(
    ("prefix", "end"),
    [
        (b"a", b"b"),
        (b"app/", b"app0"),
        (b"a\xff", b"b"),
        (b"a\xfe\xff\xff", b"a\xff"),
        (b"\x00", b"\x01"),
        # No key follows every key starting with 0xff...: the range runs to the end of the
        # key space, which the range convention spells b"\0" (etcd does the same). The
        # storage layout's prefix_successor raises instead: there b"\0" is a real key.
        (b"\xff", b"\0"),
        (b"\xff\xff\xff", b"\0"),
        (b"", b"\0"),
    ],
)
def test_prefix_end(prefix: bytes, end: bytes) -> None:
    assert prefix_end(prefix) == end


@PROPERTY
@given(KEYS, KEYS)
def test_the_range_of_a_prefix_holds_exactly_the_keys_starting_with_it(
    prefix: bytes, key: bytes
) -> None:
    # A range's first key is never empty: the server reads an empty prefix as every key.
    start = prefix or b"\0"
    assert in_range(key, start, prefix_end(prefix)) == (key.startswith(prefix) and key >= start)
