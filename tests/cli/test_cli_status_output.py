"""`raftkv status` output (`raftkv.cli.output.Output.status`): alarms and what a member
exposes unprotected are printed below the table, one line each, once per cluster however
many members list them; the JSON document carries both."""

from __future__ import annotations

import json

import pytest

from raftkv.cli.output import Output
from raftkv.client import Alarm, Status

WARNING = "listen_client 0.0.0.0:8080 is reachable from the network without TLS"


def member(node: int) -> Status:
    return Status(
        endpoint=f"http://10.0.0.{node}:8080",
        id=node,
        leader=1,
        term=3,
        role="leader" if node == 1 else "follower",
        commit_index=9,
        applied_index=9,
        revision=5,
        compacted_revision=0,
        alarms=(Alarm("NOSPACE", 2, 7, "quota"),),
        warnings=(WARNING,) if node != 3 else (),
    )


def test_alarms_and_warnings_are_printed_once_each(capsys: pytest.CaptureFixture[str]) -> None:
    rows = [member(node) for node in (1, 2, 3)]
    Output(as_json=False, in_base64=False).status([row.endpoint for row in rows], rows)
    out = capsys.readouterr().out
    assert out.count("ALARM NOSPACE: member 2: its storage passed its quota") == 1
    assert "then run raftkv alarm disarm" in out
    assert out.count(f"WARNING: member 1: {WARNING}") == 1
    assert out.count(f"WARNING: member 2: {WARNING}") == 1
    assert "WARNING: member 3" not in out


def test_the_json_status_carries_alarms_and_warnings(capsys: pytest.CaptureFixture[str]) -> None:
    rows = [member(1)]
    Output(as_json=True, in_base64=False).status([rows[0].endpoint], rows)
    [document] = json.loads(capsys.readouterr().out)
    assert document["warnings"] == [WARNING]
    assert document["alarms"] == [
        {"alarm": "NOSPACE", "member": 2, "check_index": 7, "reason": "quota"}
    ]
