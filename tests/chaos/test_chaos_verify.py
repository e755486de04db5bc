"""The chaos checks find what they are for: fed a history with one planted fault each, they
report it (and report nothing for a clean one)."""

from __future__ import annotations

from dataclasses import replace

from raftkv.testing.chaos.verify import Event, verify
from raftkv.testing.chaos.workload import Claim, Kind, Record

HEALTHY = {1: {"applied_index": 9, "hash": "ab", "alarms": []}}


def record(kind: Kind, claim: Claim, at: float, **fields: object) -> Record:
    values: dict[str, object] = {
        "worker": 0,
        "kind": kind,
        "key": "c/1",
        "node": 1,
        "call_time": at,
        "return_time": at + 0.5,
        "claim": claim,
        **fields,
    }
    return Record(**values)  # type: ignore[arg-type]


PUT_A = record(Kind.PUT, Claim.APPLIED, 1.0, value="0-1", revision=2, status=200)
GET_A = record(Kind.GET, Claim.APPLIED, 2.0, output="0-1", status=200)
HISTORY = [Event(2, "put", "c/1", "0-1")]


def problems(records: list[Record], history: list[Event], **overrides: object) -> list[str]:
    arguments: dict[str, object] = {
        "logs": {1: "INFO all good\n"},
        "unexplained_exits": {1: []},
        "final_statuses": HEALTHY,
        **overrides,
    }
    return verify(records, history, **arguments).problems  # type: ignore[arg-type]


def test_a_clean_run_has_no_problem() -> None:
    assert problems([PUT_A, GET_A], HISTORY) == []


def test_a_stale_read_is_not_linearizable() -> None:
    stale = record(Kind.GET, Claim.APPLIED, 2.0, output=None, status=404, code="not_found")
    assert any("not linearizable" in line for line in problems([PUT_A, stale], HISTORY))


def test_an_acknowledged_write_missing_from_the_history_is_found() -> None:
    found = problems([PUT_A], [])
    assert any("acknowledged write missing" in line for line in found)


def test_a_write_answered_not_applied_that_applied_is_found() -> None:
    claimed = replace(PUT_A, claim=Claim.NOT_APPLIED, status=503, code="stopped", revision=0)
    found = problems([claimed], HISTORY)
    assert any("outcome misreported" in line and "503 stopped" in line for line in found)


def test_a_value_written_twice_is_found() -> None:
    found = problems([PUT_A], [*HISTORY, Event(5, "put", "c/1", "0-1")])
    assert any("applied twice" in line for line in found)


def test_tracebacks_exits_divergence_and_alarms_are_found() -> None:
    found = problems(
        [PUT_A],
        HISTORY,
        logs={1: "Traceback (most recent call last):\n"},
        unexplained_exits={1: [-6]},
        final_statuses={
            1: {"applied_index": 9, "hash": "ab", "alarms": []},
            2: {"applied_index": 9, "hash": "cd", "alarms": [{"member": 2}]},
        },
    )
    for kind in ("traceback", "unexpected exit", "diverged", "alarm"):
        assert any(line.startswith(kind) for line in found), (kind, found)
