"""A bounded run of the peer-frame fuzzer (raftkv.testing.peer_fuzz) against three real
nodes on each peer transport; `make fuzz-peer` runs many more seeds and batches."""

from __future__ import annotations

import os

import pytest

from raftkv.raft.builder import PeerTransportKind
from raftkv.testing.peer_fuzz import run_seed


@pytest.mark.parametrize("transport", ["tcp", "grpc"])
def test_hostile_peer_frames_neither_stop_nor_mislead_a_running_cluster(
    transport: PeerTransportKind,
) -> None:
    seed = int(os.environ.get("RAFTKV_TEST_PEER_FUZZ_SEED", "0"))
    result = run_seed(seed, batches=3, frames=30, transport=transport)
    assert result.ok, result.describe() + "\n" + "\n".join(result.failures)
    # It did attack: frames through, frames refused as malformed, snapshots refused.
    assert result.frames > result.frames_refused > 0, result.describe()
    assert result.snapshots_refused > 0, result.describe()
