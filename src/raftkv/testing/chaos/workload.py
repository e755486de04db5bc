"""The chaos workload: client threads doing puts, linearizable gets, deletes and
compare-and-swaps on a few contended keys, through random members, recording every call
and what its answer claimed.

Each request is tried once (no retry), on one member: the record is what that answer
said. An answer classifies the request:
- APPLIED (200): it took effect at `revision`;
- NOT_APPLIED (a 503 or a 4xx, or a connection refused before anything was sent): the
  server claims nothing was applied; the checks hold it to that;
- UNKNOWN (504, a timeout, a connection lost after sending): either;
- BROKEN (500 or an answer that does not parse): a bug, reported as such.
Values are unique (`<worker>-<sequence>`), so the store's history says which request
wrote what.
"""

from __future__ import annotations

import enum
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

KEY_PREFIX = "c/"


class Claim(enum.Enum):
    APPLIED = "applied"
    NOT_APPLIED = "not_applied"
    UNKNOWN = "unknown"
    BROKEN = "broken"


class Kind(enum.Enum):
    PUT = "put"
    GET = "get"
    DELETE = "delete"
    CAS = "cas"


@dataclass(frozen=True, slots=True)
class Record:
    worker: int
    kind: Kind
    key: str
    node: int
    call_time: float
    return_time: float
    claim: Claim
    # PUT/CAS: the value written; CAS: `expected` is the value compared (None: absent).
    value: str | None = None
    expected: str | None = None
    # GET: the value read (None: absent); DELETE: whether a key was deleted; CAS: swapped.
    output: object = None
    revision: int = 0
    # HTTP status and error code (or the exception's name) of the answer.
    status: int = 0
    code: str = ""


@dataclass(frozen=True, slots=True)
class WorkloadSettings:
    workers: int = 4
    keys: int = 24
    # Each worker waits this long between requests, so histories stay checkable (the
    # linearizability search grows with the operations per key).
    pause_s: float = 0.02
    request_timeout_s: float = 5.0


class Workload:
    def __init__(
        self,
        settings: WorkloadSettings,
        members: Callable[[], list[int]],
        url: Callable[[int], str],
        seed: int,
    ) -> None:
        self.settings = settings
        self._members = members
        self._url = url
        self._seed = seed
        self.records: list[Record] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for worker in range(self.settings.workers):
            thread = threading.Thread(
                target=self._work, args=(worker,), name=f"chaos-worker-{worker}", daemon=True
            )
            self._threads.append(thread)
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=self.settings.request_timeout_s + 5)

    def _work(self, worker: int) -> None:
        rng = random.Random(self._seed * 1000 + worker)
        last_read: dict[str, str | None] = {}
        sequence = 0
        with httpx.Client(timeout=self.settings.request_timeout_s) as http:
            while not self._stop.is_set():
                members = self._members()
                if not members:
                    self._stop.wait(0.1)
                    continue
                node = rng.choice(members)
                key = f"{KEY_PREFIX}{rng.randrange(self.settings.keys)}"
                sequence += 1
                value = f"{worker}-{sequence}"
                roll = rng.random()
                if roll < 0.40:
                    record = self._put(http, worker, node, key, value)
                elif roll < 0.75:
                    record = self._get(http, worker, node, key)
                    if record.claim is Claim.APPLIED:
                        last_read[key] = record.output  # type: ignore[assignment]
                elif roll < 0.85:
                    record = self._delete(http, worker, node, key)
                else:
                    record = self._cas(
                        http, worker, node, key, expected=last_read.get(key), value=value
                    )
                with self._lock:
                    self.records.append(record)
                self._stop.wait(self.settings.pause_s)

    # -- one request each ----------------------------------------------------------------------

    def _call(self, http: httpx.Client, method: str, url: str, **kwargs: Any) -> _Answer:
        started = time.monotonic()
        try:
            response = http.request(method, url, **kwargs)
        except httpx.ConnectError as error:
            # Refused or unreachable before a byte was sent: not applied.
            return _Answer(started, time.monotonic(), Claim.NOT_APPLIED, 0, type(error).__name__)
        except httpx.HTTPError as error:  # a timeout or a connection lost after sending
            return _Answer(started, time.monotonic(), Claim.UNKNOWN, 0, type(error).__name__)
        returned, status = time.monotonic(), response.status_code
        try:
            body = response.json()
        except ValueError:
            return _Answer(started, returned, Claim.BROKEN, status, "not_json")
        code = body.get("error", {}).get("code", "") if isinstance(body, dict) else ""
        if status == 200 or (status == 404 and code == "not_found"):
            claim = Claim.APPLIED
        elif status == 504:
            claim = Claim.UNKNOWN
        elif status == 503 or 400 <= status < 500:
            claim = Claim.NOT_APPLIED
        else:
            claim = Claim.BROKEN
        return _Answer(started, returned, claim, status, code, body)

    def _put(self, http: httpx.Client, worker: int, node: int, key: str, value: str) -> Record:
        answer = self._call(http, "PUT", f"{self._url(node)}/v1/kv/{key}", json={"value": value})
        revision = answer.body["header"]["revision"] if answer.applied else 0
        return answer.record(worker, Kind.PUT, key, node, value=value, revision=revision)

    def _get(self, http: httpx.Client, worker: int, node: int, key: str) -> Record:
        answer = self._call(http, "GET", f"{self._url(node)}/v1/kv/{key}")
        output = answer.body["kv"]["value"] if answer.applied and answer.status == 200 else None
        return answer.record(worker, Kind.GET, key, node, output=output)

    def _delete(self, http: httpx.Client, worker: int, node: int, key: str) -> Record:
        answer = self._call(http, "DELETE", f"{self._url(node)}/v1/kv/{key}")
        if not answer.applied:
            return answer.record(worker, Kind.DELETE, key, node)
        deleted = answer.body.get("deleted", 0) > 0
        revision = answer.body["header"]["revision"]
        return answer.record(worker, Kind.DELETE, key, node, output=deleted, revision=revision)

    def _cas(
        self,
        http: httpx.Client,
        worker: int,
        node: int,
        key: str,
        *,
        expected: str | None,
        value: str,
    ) -> Record:
        compare: dict[str, object] = (
            {"key": key, "target": "version", "op": "=", "value": 0}
            if expected is None
            else {"key": key, "target": "value", "op": "=", "value": expected}
        )
        body = {"compares": [compare], "success": [{"op": "put", "key": key, "value": value}]}
        answer = self._call(http, "POST", f"{self._url(node)}/v1/txn", json=body)
        swapped = bool(answer.body["succeeded"]) if answer.applied else None
        revision = answer.body["header"]["revision"] if answer.applied else 0
        return answer.record(
            worker,
            Kind.CAS,
            key,
            node,
            value=value,
            expected=expected,
            output=swapped,
            revision=revision,
        )


@dataclass(frozen=True, slots=True)
class _Answer:
    """What one request got back, classified (see the module docstring)."""

    call_time: float
    return_time: float
    claim: Claim
    status: int
    code: str
    body: Any = None

    @property
    def applied(self) -> bool:
        return self.claim is Claim.APPLIED

    def record(self, worker: int, kind: Kind, key: str, node: int, **fields: Any) -> Record:
        return Record(
            worker=worker,
            kind=kind,
            key=key,
            node=node,
            call_time=self.call_time,
            return_time=self.return_time,
            claim=self.claim,
            status=self.status,
            code=self.code,
            **fields,
        )
