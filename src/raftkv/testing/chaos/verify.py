"""What a chaos run must show, checked against the records of every request and the
store's own history (a watch from revision 1, which chaos runs never compact):

1. the history of each key is linearizable (`raftkv.testing.linearizability`);
2. every write answered as applied is in the history, at the revision it was answered
   with; every write answered as not applied (503, 4xx, refused) is nowhere in it; no
   value is written twice (each request writes a unique value and is sent once);
3. no answer was broken (a 500, a body that is not JSON), no node log holds a traceback,
   and every node that exited by itself was one the run made fail (a full disk);
4. at the end every member has applied the same index, their state hashes are equal and
   no alarm is raised.
Each finding is one line in `Verdict.problems`.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import httpx

from raftkv.testing.chaos.workload import KEY_PREFIX, Claim, Kind, Record
from raftkv.testing.linearizability import (
    CheckLimitExceeded,
    Operation,
    cas,
    check_history,
    delete,
    get,
    put,
)

# Problems listed per kind before "... and N more".
_SHOWN_PER_KIND = 5


@dataclass(frozen=True, slots=True)
class Event:
    revision: int
    kind: str  # "put" or "delete"
    key: str
    value: str


@dataclass
class Verdict:
    problems: list[str] = field(default_factory=list)
    operations_checked: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


def read_history(url: str, until_revision: int, *, timeout: float = 60.0) -> list[Event]:
    """Every event under the workload's prefix from revision 1 to `until_revision`, by a
    watch on the member at `url`."""
    events: list[Event] = []
    query = {"key": KEY_PREFIX, "prefix": "true", "start_revision": "1"}
    with (
        httpx.Client(timeout=timeout) as http,
        http.stream("GET", f"{url}/v1/watch", params=query) as response,
    ):
        if response.status_code != 200:
            raise RuntimeError(f"watch from revision 1 answered {response.status_code}")
        reached = 0
        for line in response.iter_lines():
            if not line:
                continue
            message = json.loads(line)
            if message["type"] == "canceled":
                raise RuntimeError(f"the history watch was canceled: {message['error']}")
            if message["type"] == "events":
                for event in message["events"]:
                    kv = event["kv"]
                    events.append(
                        Event(kv["mod_revision"], event["type"], kv["key"], kv.get("value", ""))
                    )
            reached = max(reached, message.get("revision", 0))
            if reached >= until_revision:
                break
    return events


def operations_of(records: Iterable[Record]) -> list[Operation]:
    """The linearizability checker's view: applied requests with their outputs, unknown
    writes with an open end; requests that claim not to have applied are left out (2.
    checks that claim)."""
    operations: list[Operation] = []
    for record in records:
        known = record.claim is Claim.APPLIED
        if record.claim not in (Claim.APPLIED, Claim.UNKNOWN):
            continue
        returned = record.return_time if known else None
        client = record.worker
        match record.kind:
            case Kind.PUT:
                operations.append(
                    put(record.key, record.value, record.call_time, returned, client=client)
                )
            case Kind.GET:
                if known:
                    operations.append(
                        get(record.key, record.output, record.call_time, returned, client=client)
                    )
            case Kind.DELETE:
                existed = record.output if known else None
                operations.append(
                    delete(
                        record.key,
                        record.call_time,
                        returned,
                        existed=existed if isinstance(existed, bool) else None,
                        client=client,
                    )
                )
            case Kind.CAS:
                operations.append(
                    cas(
                        record.key,
                        record.expected,
                        record.value,
                        record.call_time,
                        returned,
                        succeeded=bool(record.output) if known else False,
                        client=client,
                    )
                )
    return operations


def verify(
    records: list[Record],
    history: list[Event],
    *,
    logs: Mapping[int, str],
    unexplained_exits: Mapping[int, list[int]],
    final_statuses: Mapping[int, dict[str, object] | None],
) -> Verdict:
    verdict = Verdict()
    found: dict[str, list[str]] = {}

    def problem(kind: str, line: str) -> None:
        found.setdefault(kind, []).append(line)

    # 1. linearizability
    operations = operations_of(records)
    verdict.operations_checked = len(operations)
    try:
        result = check_history(operations)
        if not result.ok:
            problem("not linearizable", result.describe())
    except CheckLimitExceeded as error:
        problem("not checked", f"the linearizability check gave up: {error}")

    # 2. every claimed outcome against the history
    written = Counter(event.value for event in history if event.kind == "put")
    at = {(event.revision, event.key): event for event in history}
    for value, count in written.items():
        if count > 1:
            problem("applied twice", f"value {value!r} was written {count} times")
    for record in records:
        writes = record.kind is Kind.PUT or (record.kind is Kind.CAS and record.output is True)
        if record.claim is Claim.APPLIED and writes:
            event = at.get((record.revision, record.key))
            if event is None or event.kind != "put" or event.value != record.value:
                problem(
                    "acknowledged write missing",
                    f"{record.kind.value} {record.key}={record.value} answered 200 at revision "
                    f"{record.revision} (node {record.node}) is not in the history there",
                )
        elif record.claim is Claim.APPLIED and record.kind is Kind.DELETE and record.output:
            event = at.get((record.revision, record.key))
            if event is None or event.kind != "delete":
                problem(
                    "acknowledged write missing",
                    f"delete {record.key} answered at revision {record.revision} is not there",
                )
        elif (
            record.claim is Claim.NOT_APPLIED
            and record.kind in (Kind.PUT, Kind.CAS)
            and record.value in written
        ):
            problem(
                "outcome misreported",
                f"{record.kind.value} {record.key}={record.value} answered {record.status} "
                f"{record.code} (nothing applied) by node {record.node} was applied",
            )
        if record.claim is Claim.BROKEN:
            problem(
                "broken answer",
                f"{record.kind.value} {record.key} on node {record.node}: {record.status} "
                f"{record.code}",
            )

    # 3. the processes
    for node, log in sorted(logs.items()):
        if "Traceback" in log:
            problem("traceback", f"node {node}'s log holds a traceback")
    for node, codes in sorted(unexplained_exits.items()):
        if codes:
            problem("unexpected exit", f"node {node} exited by itself with {codes}")

    # 4. the end state
    statuses = dict(final_statuses)
    missing = sorted(node for node, status in statuses.items() if status is None)
    if missing:
        problem("not serving at the end", f"members {missing} did not answer /v1/status")
    answered = {node: status for node, status in statuses.items() if status is not None}
    if len({status.get("applied_index") for status in answered.values()}) > 1:
        applied = {node: status.get("applied_index") for node, status in answered.items()}
        problem("not converged", f"applied indexes differ at the end: {applied}")
    elif len({status.get("hash") for status in answered.values()}) > 1:
        hashes = {node: status.get("hash") for node, status in answered.items()}
        problem("diverged", f"state hashes differ at equal applied indexes: {hashes}")
    for node, status in sorted(answered.items()):
        if status.get("alarms"):
            problem("alarm", f"node {node} reports alarms {status['alarms']}")

    for kind, lines in found.items():
        shown = lines[:_SHOWN_PER_KIND]
        verdict.problems.extend(f"{kind}: {line}" for line in shown)
        if len(lines) > len(shown):
            verdict.problems.append(f"{kind}: ... and {len(lines) - len(shown)} more")
    return verdict
