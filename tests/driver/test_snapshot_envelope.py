"""The driver's snapshot envelope: peers, removed ids, format declarations and the
application's bytes, last."""

from __future__ import annotations

import msgspec
import pytest

from raftkv.raft.core.types import NodeId
from raftkv.raft.driver.envelope import (
    EnvelopeError,
    SnapshotEnvelope,
    decode_snapshot,
    decode_snapshot_envelope,
    encode_snapshot,
)


def test_round_trip_with_removed_ids_and_the_app_bytes_last() -> None:
    data = encode_snapshot({NodeId(1): "a:1"}, b"APP", removed=[NodeId(3), NodeId(2)])
    assert decode_snapshot_envelope(data) == SnapshotEnvelope(
        {NodeId(1): "a:1"}, frozenset({NodeId(2), NodeId(3)}), {}, b"APP"
    )
    assert decode_snapshot(data) == ({1: "a:1"}, b"APP")
    # The application's bytes end the data (a chunked container stays readable from its end).
    assert data.endswith(b"APP")
    # Without declarations it is version 2, which a raftkv before them reads.
    assert msgspec.msgpack.decode(data)[0] == 2


def test_format_declarations_make_a_version_3_envelope() -> None:
    formats = {NodeId(1): (2, 7), NodeId(2): (2, 9)}
    data = encode_snapshot({NodeId(1): "a:1"}, b"APP", removed=[NodeId(3)], formats=formats)
    assert msgspec.msgpack.decode(data)[0] == 3
    assert decode_snapshot_envelope(data) == SnapshotEnvelope(
        {NodeId(1): "a:1"}, frozenset({NodeId(3)}), formats, b"APP"
    )
    assert data.endswith(b"APP")


def test_a_version_1_envelope_still_reads_with_no_removed_ids() -> None:
    old = msgspec.msgpack.encode([1, {1: "a:1"}, b"APP"])
    assert decode_snapshot_envelope(old) == SnapshotEnvelope(
        {NodeId(1): "a:1"}, frozenset(), {}, b"APP"
    )


@pytest.mark.parametrize(
    "data",
    [
        b"not msgpack",
        msgspec.msgpack.encode([4, {}, [], {}, b"APP"]),  # a version this build does not know
        msgspec.msgpack.encode([2, {}, b"APP"]),  # version 2 without its removed ids
        msgspec.msgpack.encode([3, {}, [], b"APP"]),  # version 3 without its declarations
        msgspec.msgpack.encode([3, {}, [], {1: [256, 1]}, b"APP"]),  # no such format
        msgspec.msgpack.encode([3, {}, [], {0: [2, 1]}, b"APP"]),  # node id 0
        msgspec.msgpack.encode([3, {}, [], {1: [2]}, b"APP"]),  # a declaration cut short
    ],
)
def test_a_malformed_envelope_is_refused(data: bytes) -> None:
    with pytest.raises(EnvelopeError, match="snapshot envelope is malformed"):
        decode_snapshot_envelope(data)
