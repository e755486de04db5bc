"""A linearizability checker for key-value histories.

Theory of operation
-------------------
A history is a set of operations, each with a call time and a return time. It is
*linearizable* if every operation can be given a point in time between its call and its
return such that executing the operations one by one in that order, against a sequential
model, produces every recorded output (Herlihy & Wing, 1990).

The search is the Wing-Gong algorithm with Lowe's memoization, as in Porcupine
(anishathalye/porcupine):

- The history becomes a list of call and return events sorted by time. At equal times calls
  sort before returns, so operations that touch the same instant count as concurrent: the
  checker never reports a violation that a finer clock could have explained away.
- Walking the list, a call event is a candidate to linearize next: if the model accepts the
  operation and the pair (set of linearized operations, model state) has not been seen
  before, the operation is linearized and removed from the list, and the walk restarts from
  the head. Reaching a return event means its operation should already have been
  linearized: the search backtracks to the last choice.
- The history is linearizable when every operation with a known outcome has been
  linearized.

Keys are independent registers, so the history is partitioned by key and each key is
checked on its own (P-compositionality): this is what keeps the search small. Unknown-outcome
writes that no read could have observed are dropped first (see `_prune_unobserved`).

Unknown outcomes: an operation whose `return_time` is None (the client never learnt the
result: the node crashed, the request timed out) may or may not have taken effect, at any
time after its call. It is modelled with a return time of +infinity and an unconstrained
output, so the checker may linearize it anywhere after its call, including after every
other operation, which is the same as never.

A limit on everything: a key with more than `max_operations_per_key` operations, or a
search over more than `max_steps` steps, raises `CheckLimitExceeded` instead of running for
an unbounded time. A failing key is reduced to a minimal failing sub-history (removing any
single operation of the excerpt makes it linearizable) within a separate step budget.
"""

from __future__ import annotations

import enum
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import TypeAlias

__all__ = [
    "CheckLimitExceeded",
    "CheckResult",
    "OpKind",
    "Operation",
    "Value",
    "cas",
    "check_history",
    "delete",
    "get",
    "put",
    "with_unknown_outcome",
]

# A register value. None means "no value" (key absent), which is also the initial state.
Value: TypeAlias = Hashable

DEFAULT_MAX_OPERATIONS_PER_KEY = 10_000
DEFAULT_MAX_STEPS = 5_000_000
DEFAULT_MAX_MINIMIZE_STEPS = 2_000_000


class OpKind(enum.Enum):
    PUT = "put"
    GET = "get"
    DELETE = "delete"
    CAS = "cas"


@dataclass(frozen=True, slots=True)
class Operation:
    """One client operation on one key.

    `value` is the input of PUT (the value written) and CAS (the new value). `expected` is
    CAS's comparand. `output` is what the client observed: GET's value read (None if the key
    was absent), CAS's success (bool), DELETE's "a value existed" (bool, or None if the
    client did not observe it). PUT has no output. When `return_time` is None the outcome is
    unknown and `output` is ignored.
    """

    kind: OpKind
    key: Hashable
    call_time: float
    return_time: float | None
    value: Value = None
    expected: Value = None
    output: Value = None
    client: int = 0

    def __post_init__(self) -> None:
        if self.return_time is not None and self.return_time < self.call_time:
            raise ValueError(f"operation returns before it is called: {self.describe()}")
        cas_known = self.kind is OpKind.CAS and self.return_time is not None
        if cas_known and not isinstance(self.output, bool):
            raise ValueError(f"cas output must be a bool: {self.describe()}")

    @property
    def outcome_known(self) -> bool:
        return self.return_time is not None

    def describe(self) -> str:
        """One line: `[call, return] client c: put('k', 'v')` (`-> ?` if unknown)."""
        returned = "?" if self.return_time is None else _time(self.return_time)
        span = f"[{_time(self.call_time)}, {returned}]"
        match self.kind:
            case OpKind.PUT:
                call = f"put({self.key!r}, {self.value!r})"
                result = "" if self.outcome_known else " -> ?"
            case OpKind.GET:
                call = f"get({self.key!r})"
                result = f" -> {self.output!r}" if self.outcome_known else " -> ?"
            case OpKind.DELETE:
                call = f"delete({self.key!r})"
                if not self.outcome_known:
                    result = " -> ?"
                else:
                    result = "" if self.output is None else f" -> {self.output!r}"
            case OpKind.CAS:
                call = f"cas({self.key!r}, {self.expected!r}, {self.value!r})"
                result = f" -> {self.output!r}" if self.outcome_known else " -> ?"
        return f"{span} client {self.client}: {call}{result}"


def _time(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def put(
    key: Hashable, value: Value, call: float, returned: float | None, *, client: int = 0
) -> Operation:
    return Operation(OpKind.PUT, key, call, returned, value=value, client=client)


def get(
    key: Hashable, output: Value, call: float, returned: float | None, *, client: int = 0
) -> Operation:
    return Operation(OpKind.GET, key, call, returned, output=output, client=client)


def delete(
    key: Hashable,
    call: float,
    returned: float | None,
    *,
    existed: bool | None = None,
    client: int = 0,
) -> Operation:
    return Operation(OpKind.DELETE, key, call, returned, output=existed, client=client)


def cas(
    key: Hashable,
    expected: Value,
    new: Value,
    call: float,
    returned: float | None,
    *,
    succeeded: bool,
    client: int = 0,
) -> Operation:
    return Operation(
        OpKind.CAS,
        key,
        call,
        returned,
        value=new,
        expected=expected,
        output=succeeded,
        client=client,
    )


def _step(state: Value, operation: Operation) -> tuple[bool, Value]:
    """The sequential register model: (is `operation`'s output legal here, next state)."""
    known = operation.return_time is not None
    match operation.kind:
        case OpKind.PUT:
            return True, operation.value
        case OpKind.GET:
            return (not known or operation.output == state), state
        case OpKind.DELETE:
            if known and operation.output is not None and operation.output != (state is not None):
                return False, state
            return True, None
        case OpKind.CAS:
            swapped = state == operation.expected
            if not known:
                # Unknown outcome: either branch could have happened; the model takes the
                # one the state dictates, which is the only one consistent with it.
                return True, operation.value if swapped else state
            if operation.output != swapped:
                return False, state
            return True, operation.value if swapped else state


class CheckLimitExceeded(Exception):
    """The history is too large to check within the configured limits."""


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The verdict. When not `ok`, `key` failed and `excerpt` is a minimal failing
    sub-history of that key (every operation in it is needed for the failure)."""

    ok: bool
    keys_checked: int
    operations_checked: int
    key: Hashable | None = None
    excerpt: tuple[Operation, ...] = ()
    # Operations of the failing key, for context.
    key_operations: int = 0
    # True if the excerpt could not be minimized within the step budget.
    excerpt_truncated: bool = False
    steps: int = 0
    notes: tuple[str, ...] = field(default=())

    def __bool__(self) -> bool:
        return self.ok

    def describe(self) -> str:
        if self.ok:
            return f"linearizable: {self.operations_checked} operations on {self.keys_checked} keys"
        size = "" if not self.excerpt_truncated else " (not fully minimized)"
        lines = [
            f"NOT linearizable: key {self.key!r} ({self.key_operations} operations); "
            f"a minimal failing excerpt{size}:"
        ]
        lines.extend(f"  {operation.describe()}" for operation in self.excerpt)
        lines.extend(self.notes)
        return "\n".join(lines)


def check_history(
    history: Iterable[Operation],
    *,
    max_operations_per_key: int = DEFAULT_MAX_OPERATIONS_PER_KEY,
    max_steps: int = DEFAULT_MAX_STEPS,
    max_minimize_steps: int = DEFAULT_MAX_MINIMIZE_STEPS,
) -> CheckResult:
    """Check `history` for linearizability against a per-key register model.

    Raises CheckLimitExceeded if a key has more than `max_operations_per_key` operations or
    the search needs more than `max_steps` steps (summed over keys).
    """
    by_key: dict[Hashable, list[Operation]] = {}
    total = 0
    for operation in history:
        # A read whose outcome is unknown constrains nothing: drop it.
        if operation.kind is OpKind.GET and operation.return_time is None:
            continue
        by_key.setdefault(operation.key, []).append(operation)
        total += 1
    steps_left = max_steps
    by_key = {key: _prune_unobserved(operations) for key, operations in by_key.items()}
    for key, operations in by_key.items():
        if len(operations) > max_operations_per_key:
            raise CheckLimitExceeded(
                f"key {key!r} has {len(operations)} operations, more than the limit of "
                f"{max_operations_per_key}"
            )
        ok, used = _linearizable(operations, steps_left)
        steps_left -= used
        if not ok:
            excerpt, truncated = _minimize(operations, max_minimize_steps)
            return CheckResult(
                ok=False,
                keys_checked=len(by_key),
                operations_checked=total,
                key=key,
                excerpt=tuple(sorted(excerpt, key=_by_call)),
                key_operations=len(operations),
                excerpt_truncated=truncated,
                steps=max_steps - steps_left,
            )
    return CheckResult(
        ok=True, keys_checked=len(by_key), operations_checked=total, steps=max_steps - steps_left
    )


def _prune_unobserved(operations: list[Operation]) -> list[Operation]:
    """Drop unknown-outcome writes nothing could have observed.

    An operation of unknown outcome can always be linearized after everything else (the
    same as never taking effect), so it only matters if it explains an observation. A PUT
    of a value no GET returned, or a DELETE when no GET returned None, explains nothing, as
    long as the key has no operation that observes state indirectly (a CAS, or a DELETE
    reporting whether a value existed). Each dropped operation would otherwise stay
    concurrent with the rest of the history and multiply the search space.
    """
    indirect = any(
        operation.kind is OpKind.CAS
        or (operation.kind is OpKind.DELETE and operation.output is not None)
        for operation in operations
        if operation.return_time is not None
    )
    if indirect or all(operation.return_time is not None for operation in operations):
        return operations
    read = {operation.output for operation in operations if operation.kind is OpKind.GET}

    def observable(operation: Operation) -> bool:
        if operation.return_time is not None:
            return True
        match operation.kind:
            case OpKind.PUT:
                return operation.value in read
            case OpKind.DELETE:
                return None in read
            case _:
                return True

    return [operation for operation in operations if observable(operation)]


def _by_call(operation: Operation) -> tuple[float, float]:
    returned = operation.return_time
    return operation.call_time, float("inf") if returned is None else returned


class _Event:
    """A node of the doubly linked event list (call or return of one operation)."""

    __slots__ = ("index", "is_call", "match", "next", "prev")

    def __init__(self, index: int, is_call: bool) -> None:
        self.index = index
        self.is_call = is_call
        self.match: _Event | None = None  # a call's return event
        self.prev: _Event | None = None
        self.next: _Event | None = None


def _linearizable(operations: Sequence[Operation], max_steps: int) -> tuple[bool, int]:
    """(whether `operations`, all on one key, are linearizable; steps used)."""
    infinity = float("inf")
    keyed: list[tuple[float, int, int, bool]] = []
    for index, operation in enumerate(operations):
        returned = infinity if operation.return_time is None else operation.return_time
        # Calls (0) sort before returns (1) at equal times: touching operations overlap.
        keyed.append((operation.call_time, 0, index, True))
        keyed.append((returned, 1, index, False))
    keyed.sort()

    head = _Event(-1, False)
    previous = head
    calls: dict[int, _Event] = {}
    for _, _, index, is_call in keyed:
        event = _Event(index, is_call)
        if is_call:
            calls[index] = event
        else:
            calls[index].match = event
        previous.next = event
        event.prev = previous
        previous = event

    def lift(call: _Event) -> None:
        # Unlink a call and its return; the nodes keep their own links for `unlift`.
        assert call.prev is not None and call.match is not None
        call.prev.next = call.next
        if call.next is not None:
            call.next.prev = call.prev
        returned = call.match
        assert returned.prev is not None
        returned.prev.next = returned.next
        if returned.next is not None:
            returned.next.prev = returned.prev

    def unlift(call: _Event) -> None:
        returned = call.match
        assert returned is not None and returned.prev is not None
        returned.prev.next = returned
        if returned.next is not None:
            returned.next.prev = returned
        assert call.prev is not None
        call.prev.next = call
        if call.next is not None:
            call.next.prev = call

    known_left = sum(1 for operation in operations if operation.return_time is not None)
    state: Value = None
    linearized = 0
    cache: set[tuple[int, Value]] = set()
    stack: list[tuple[_Event, Value]] = []
    entry = head.next
    steps = 0
    while known_left > 0:
        steps += 1
        if steps > max_steps:
            raise CheckLimitExceeded(
                f"linearizability search exceeded {max_steps} steps on a key with "
                f"{len(operations)} operations"
            )
        assert entry is not None  # the list always ends with a return event
        if entry.is_call:
            operation = operations[entry.index]
            legal, new_state = _step(state, operation)
            if legal:
                candidate = linearized | (1 << entry.index)
                if (candidate, new_state) not in cache:
                    cache.add((candidate, new_state))
                    stack.append((entry, state))
                    state = new_state
                    linearized = candidate
                    lift(entry)
                    if operation.return_time is not None:
                        known_left -= 1
                    entry = head.next
                    continue
            entry = entry.next
        else:
            # An operation returned without being linearized: undo the last choice.
            if not stack:
                return False, steps
            call, state = stack.pop()
            linearized &= ~(1 << call.index)
            if operations[call.index].return_time is not None:
                known_left += 1
            unlift(call)
            entry = call.next
    return True, steps


def _minimize(operations: list[Operation], max_steps: int) -> tuple[list[Operation], bool]:
    """A 1-minimal failing sub-history of a non-linearizable `operations` (ddmin-style:
    drop chunks while the rest still fails, halving the chunk size down to one). A write
    whose value a remaining read returns is never dropped."""
    current = list(operations)
    written = {operation.value for operation in operations if operation.kind in _WRITES}
    budget = max_steps
    chunk = max(1, len(current) // 2)
    while True:
        position = 0
        while position < len(current):
            candidate = current[:position] + current[position + chunk :]
            if not candidate or not _reads_keep_their_writes(candidate, written):
                position += chunk
                continue
            try:
                ok, used = _linearizable(candidate, budget)
            except CheckLimitExceeded:
                return current, True
            budget -= used
            if ok:
                position += chunk
            else:
                current = candidate
        if chunk == 1:
            return current, False
        chunk = max(1, chunk // 2)


_WRITES = frozenset({OpKind.PUT, OpKind.CAS})


def _reads_keep_their_writes(candidate: list[Operation], written: set[Value]) -> bool:
    """Whether every value read in `candidate` that some write of the original history
    produced is still written in `candidate`. Keeps excerpts explanatory: a stale read
    stays a stale read instead of shrinking to "read a value nobody wrote"."""
    remaining = {operation.value for operation in candidate if operation.kind in _WRITES}
    return all(
        operation.output in remaining
        for operation in candidate
        if operation.kind is OpKind.GET
        and operation.output is not None
        and operation.output in written
    )


def with_unknown_outcome(operation: Operation) -> Operation:
    """`operation` as if its client never learnt the result."""
    return replace(operation, return_time=None, output=None)
