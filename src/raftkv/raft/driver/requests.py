"""`Requests`: the proposals and linearizable reads made on one node, from the call that
makes one to the outcome that ends it (the role of hashicorp/raft's `future.go`).

A caller's task registers a request and waits on its future (`propose`,
`propose_conf_change`, `read`). The node's loop hands what is queued to the core
(`drain_proposals`, `drain_reads`), ends requests as the core and the state machine
answer (`complete`, `record_read_states`, `answer_reads`, `fail_overwritten`,
`fail_covered_by_snapshot`), at their deadline (`expire`) or when the node stops or is
removed (`end_unfinished`, `end_all`).

Invariants:
- Every future ends: with its outcome, a typed failure, ProposalTimeout / ReadTimeout at
  its deadline (by the node's clock), or the reason the node stopped or left.
- A proposal is `sent` once the core took it (appended as leader, or forwarded to the
  leader): from then on it may apply whatever happens here, so ending it early is
  OutcomeUnknown, never an error that says "not applied".
- At most `max_pending_requests` proposals and as many reads wait (Overloaded beyond).
- A read is answered only once the state machine has applied its read index: an index
  the core confirmed after the read was asked, so it covers every write acknowledged
  before the call.
- One ReadIndex request (a batch of reads) is in flight at a time, for at most
  `retry_ticks`; the reads queued meanwhile wait for its answer and go together next.
- Request ids and read contexts are unique per node incarnation (one sequence for both).
- Only the loop steps requests into the core and ends them; callers register and wait.
- While batching is allowed (`may_batch`: log_formats.py), consecutive batchable commands
  drained together go into one batch entry (envelope.encode_batch), at most
  MAX_BATCH_COMMANDS and max_command_bytes of commands each; the entry's index then owns
  every request in it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from raftkv.raft.clock import Clock
from raftkv.raft.core.errors import ConfChangeInvalid, NotLeader, ProposalDropped
from raftkv.raft.core.rawnode import RawNode
from raftkv.raft.core.types import (
    NO_NODE,
    ConfChange,
    ConfState,
    NodeId,
    ReadState,
    StateRole,
)
from raftkv.raft.driver.envelope import (
    BATCH_HEADER_BYTES,
    BATCH_ITEM_HEADER_BYTES,
    MAX_BATCH_COMMANDS,
    Declaration,
    RequestId,
    encode_batch,
    encode_declaration,
    encode_proposal,
)
from raftkv.raft.driver.errors import (
    OutcomeUnknown,
    Overloaded,
    ProposalTimeout,
    ReadTimeout,
    Stopped,
)
from raftkv.raft.driver.settings import NodeSettings
from raftkv.raft.driver.status import NodeStats


@dataclass(slots=True)
class _Proposal:
    """A proposal waiting for its outcome."""

    future: asyncio.Future[Any]
    deadline: float
    # Set once the core took the proposal (see the module's invariants).
    sent: bool = False
    # The driver's own (a format declaration): not a caller's proposal, so neither counted
    # in the stats nor against max_pending_requests.
    internal: bool = False


@dataclass(slots=True)
class _Read:
    future: asyncio.Future[int]
    deadline: float
    # Set once the core answered; resolved when the state machine has applied it.
    index: int = 0
    requested_at_tick: int = 0


@dataclass(slots=True)
class _Queued:
    """A proposal waiting to be stepped into the core."""

    request: RequestId
    command: bytes
    # ConfChange proposals carry the change instead of a command.
    change: ConfChange | None = None
    # Whether the command may share a batch entry (Node.propose).
    batchable: bool = False
    # `command` is already an entry's data (a format declaration), not a command to wrap.
    encoded: bool = False


class Requests:
    def __init__(
        self,
        *,
        node_id: NodeId,
        incarnation: int,
        settings: NodeSettings,
        clock: Clock,
        stats: NodeStats,
        wake: Callable[[], None],
        may_batch: Callable[[], bool],
    ) -> None:
        """`incarnation` tells this run's request ids from a previous run's; `wake`
        tells the node's loop there is work for it; `may_batch`, whether batch entries
        may be written now."""
        self._node_id = node_id
        self._may_batch = may_batch
        self._incarnation = incarnation
        self._settings = settings
        self._clock = clock
        self._stats = stats
        self._wake = wake
        # The last number given to a request id or a read context.
        self._sequence = 0
        self._proposals: dict[RequestId, _Proposal] = {}
        # Log index -> the proposals this node appended there as leader (one, or a batch).
        self._appended_at: dict[int, tuple[RequestId, ...]] = {}
        self._queued: collections.deque[_Queued] = collections.deque()
        # Proposals the core refused for want of a leader; retried until their deadline.
        self._parked: list[_Queued] = []
        self._reads: dict[bytes, _Read] = {}
        # Contexts of the reads to ask the core about, in the order they came.
        self._read_requests: collections.deque[bytes] = collections.deque()
        # One ReadIndex request serves every read queued when it was made (etcd's
        # linearizableReadLoop): its context -> the contexts of those reads. Its answer
        # covers each of them, as each was asked before it. Pruned by expire.
        self._read_batches: dict[bytes, list[bytes]] = {}
        # The batch asked last and when (tick): while it waits for its answer, newly queued
        # reads wait too and then go together, so batches grow with the load instead of
        # each read arriving alone costing a round. A batch unanswered for retry_ticks no
        # longer holds the queue (its answer may be lost).
        self._read_in_flight: bytes | None = None
        self._read_in_flight_tick = 0
        # Core ticks since start: the age of reads and of the batch in flight.
        self._ticks = 0
        # Commands stepped into the core since the last Ready was taken (group commit:
        # at most max_batch_entries / max_batch_bytes go into one Ready).
        self._batch_entries = 0
        self._batch_bytes = 0
        # Internal proposals in `_proposals` (at most one: LogFormats declares one at a time).
        self._internal_pending = 0

    @property
    def pending_proposals(self) -> int:
        """Callers' proposals waiting for their outcome (the driver's own left out)."""
        return len(self._proposals) - self._internal_pending

    @property
    def pending_reads(self) -> int:
        return len(self._reads)

    def next_request(self) -> RequestId:
        self._sequence += 1
        return RequestId(self._node_id, self._incarnation, self._sequence)

    def next_context(self) -> bytes:
        """A read context no other request of this node uses."""
        self._sequence += 1
        return self._incarnation.to_bytes(8, "big") + self._sequence.to_bytes(8, "big")

    # -- callers -------------------------------------------------------------------------

    async def propose(
        self, command: bytes, timeout: float | None, *, batchable: bool = False
    ) -> object:
        """Queue `command` and wait for the state machine's result (the caller checked
        the node runs and the command's size)."""
        request = self.next_request()
        future = self._register(request, timeout)
        self._queued.append(_Queued(request, command, batchable=batchable))
        self._wake()
        try:
            return await future
        finally:
            self._proposals.pop(request, None)

    async def propose_declaration(self, make: Callable[[RequestId], Declaration]) -> None:
        """Queue this node's format declaration (log_formats.py), made for its request
        id, and wait until it is applied here."""
        request = self.next_request()
        future = self._register(request, None, internal=True)
        self._queued.append(_Queued(request, encode_declaration(make(request)), encoded=True))
        self._internal_pending += 1
        self._wake()
        try:
            await future
        finally:
            self._internal_pending -= 1
            self._proposals.pop(request, None)

    async def propose_conf_change(
        self, request: RequestId, change: ConfChange, timeout: float | None
    ) -> ConfState:
        """Queue the membership change `change` (its context names `request`) and wait
        until it is applied here: the configuration it made."""
        future = self._register(request, timeout)
        self._queued.append(_Queued(request, b"", change))
        self._wake()
        try:
            result = await future
        finally:
            self._proposals.pop(request, None)
        assert isinstance(result, ConfState)
        return result

    async def read(self, timeout: float | None) -> int:
        """Wait for a read index this node has applied (see the module's invariants)."""
        if len(self._reads) >= self._settings.max_pending_requests:
            self._stats.overloaded += 1
            raise Overloaded(f"{len(self._reads)} reads pending")
        context = self.next_context()
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        deadline = self._clock.now() + (
            timeout if timeout is not None else self._settings.read_timeout_s
        )
        self._reads[context] = _Read(future, deadline, requested_at_tick=self._ticks)
        self._read_requests.append(context)
        self._wake()
        try:
            return await future
        finally:
            self._reads.pop(context, None)

    def _register(
        self, request: RequestId, timeout: float | None, *, internal: bool = False
    ) -> asyncio.Future[Any]:
        pending = self.pending_proposals
        if not internal and pending >= self._settings.max_pending_requests:
            self._stats.overloaded += 1
            raise Overloaded(f"{pending} proposals pending")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        wait = timeout if timeout is not None else self._settings.proposal_timeout_s
        self._proposals[request] = _Proposal(future, self._clock.now() + wait, internal=internal)
        return future

    # -- the loop: into the core ---------------------------------------------------------

    def tick(self, rawnode: RawNode) -> None:
        """The core ticked. Every retry_ticks, with a leader known, ask again for reads
        not answered for a while (the request or its answer may be lost) and propose the
        parked proposals again."""
        self._ticks += 1
        retry_ticks = self._settings.retry_ticks
        if self._ticks % retry_ticks == 0 and rawnode.soft_state().leader_id != NO_NODE:
            self.requeue_waiting(min_age_ticks=retry_ticks)

    def start_batch(self) -> None:
        """A Ready was just taken: what is proposed from now on goes into the next one."""
        self._batch_entries = 0
        self._batch_bytes = 0

    def drain_proposals(self, rawnode: RawNode) -> None:
        """Step queued proposals into the core, as few messages as possible: consecutive
        commands go in one multi-entry proposal (one append per follower), a membership
        change on its own. Stops at the batch limits (group commit: the rest waits for
        the next Ready)."""
        settings = self._settings
        queued = self._queued
        batch: list[_Queued] = []
        while queued:
            if (
                self._batch_entries >= settings.max_batch_entries
                or self._batch_bytes >= settings.max_batch_bytes
            ):
                break
            item = queued.popleft()
            if not self._is_pending(item.request):
                continue  # cancelled or timed out while queued
            if item.change is not None:
                self._propose_now(rawnode, batch)
                batch = []
                self._propose_now(rawnode, [item])
                continue
            batch.append(item)
            self._batch_entries += 1
            self._batch_bytes += len(item.command)
        self._propose_now(rawnode, batch)

    def _propose_now(self, rawnode: RawNode, items: list[_Queued]) -> None:
        if not items:
            return
        change = items[0].change
        entries = [items] if change is not None else self._entries_of(items)
        try:
            if change is not None:
                rawnode.propose_conf_change(change)
            else:
                rawnode.propose_many([_entry_data(entry) for entry in entries])
        except (NotLeader, ConfChangeInvalid) as error:
            self._fail_items(items, error)
            return
        except ProposalDropped as error:
            if rawnode.soft_state().leader_id == NO_NODE or rawnode.lead_transferee() != NO_NODE:
                # An election or a leadership transfer is under way: try again soon.
                self._parked.extend(items)
            else:
                self._fail_items(items, error)
            return
        for item in items:
            proposal = self._proposals.get(item.request)
            if proposal is not None:
                proposal.sent = True
        # Counted once the core took them: parked proposals are grouped again on retry.
        self._stats.proposals_batched += len(items) - len(entries)
        if rawnode.soft_state().role is StateRole.LEADER:
            first = rawnode.last_index() - len(entries) + 1
            for offset, entry in enumerate(entries):
                self._appended_at[first + offset] = tuple(item.request for item in entry)

    def _entries_of(self, items: list[_Queued]) -> list[list[_Queued]]:
        """`items` (commands, in order) grouped into log entries: each alone, or with
        batching allowed the batchable ones that follow each other together, up to
        MAX_BATCH_COMMANDS and max_command_bytes of batch per entry."""
        if not self._may_batch():
            return [[item] for item in items]
        limit = self._settings.max_command_bytes
        entries: list[list[_Queued]] = []
        batch: list[_Queued] = []
        size = BATCH_HEADER_BYTES  # of `batch` as one entry
        for item in items:
            if not item.batchable:
                if batch:
                    entries.append(batch)
                    batch, size = [], BATCH_HEADER_BYTES
                entries.append([item])
                continue
            item_size = BATCH_ITEM_HEADER_BYTES + len(item.command)
            if batch and (len(batch) >= MAX_BATCH_COMMANDS or size + item_size > limit):
                entries.append(batch)
                batch, size = [], BATCH_HEADER_BYTES
            batch.append(item)
            size += item_size
        if batch:
            entries.append(batch)
        return entries

    def drain_reads(self, rawnode: RawNode) -> None:
        """Ask for one read index covering every read queued since the last ask: one
        heartbeat round (or one message to the leader) for all of them, not one each."""
        in_flight = self._read_in_flight
        if (
            in_flight is not None
            and in_flight in self._read_batches
            and self._ticks - self._read_in_flight_tick < self._settings.retry_ticks
        ):
            return
        self._read_in_flight = None
        batch: list[bytes] = []
        while self._read_requests:
            context = self._read_requests.popleft()
            read = self._reads.get(context)
            if read is None or read.future.done() or read.index != 0:
                continue
            read.requested_at_tick = self._ticks
            batch.append(context)
        if not batch:
            return
        batch_context = batch[0] if len(batch) == 1 else self.next_context()
        self._read_batches[batch_context] = batch
        self._read_in_flight, self._read_in_flight_tick = batch_context, self._ticks
        # With no leader the request is dropped; the retry (tick) asks again.
        with contextlib.suppress(ProposalDropped, NotLeader):
            rawnode.read_index(batch_context)

    def requeue_waiting(self, *, min_age_ticks: int) -> None:
        """Queue again the proposals parked for want of a leader, and the reads not
        answered that were last asked at least `min_age_ticks` ago."""
        for context, read in self._reads.items():
            if read.index == 0 and self._ticks - read.requested_at_tick >= min_age_ticks:
                self._read_requests.append(context)
                self._read_in_flight = None
        parked, self._parked = self._parked, []
        self._queued.extendleft(reversed(parked))
        self._wake()

    def expire(self, now: float) -> None:
        """End the requests whose deadline is past `now`."""
        # Parked and queued items of finished requests hold their commands: drop them.
        self._parked = [item for item in self._parked if self._is_pending(item.request)]
        for request, proposal in list(self._proposals.items()):
            if now >= proposal.deadline:
                self._fail(
                    proposal, ProposalTimeout(f"no outcome for proposal {request.sequence} in time")
                )
        for read in list(self._reads.values()):
            if now >= read.deadline and not read.future.done():
                read.future.set_exception(ReadTimeout("the read could not be confirmed in time"))
        # A batch whose answer was lost is asked again read by read (requeue_waiting);
        # forget it once none of its reads still waits for an index.
        for batch_context, batch in list(self._read_batches.items()):
            if not any(self._waiting_for_index(context) for context in batch):
                del self._read_batches[batch_context]

    # -- the loop: outcomes --------------------------------------------------------------

    def record_read_states(self, read_states: Sequence[ReadState]) -> None:
        """The core confirmed these read indexes (a Ready's read states): each covers every
        read of its batch, answered once applied (answer_reads)."""
        if read_states and self._read_requests:
            self._wake()  # reads held behind the batch answered now go next
        for read_state in read_states:
            batch = self._read_batches.pop(read_state.request_context, ())
            for context in batch:
                read = self._reads.get(context)
                if read is not None and read.index == 0:
                    read.index = max(read_state.index, 1)

    def answer_reads(self, applied: int) -> None:
        """The state machine has applied up to `applied`: answer the reads it covers."""
        for read in self._reads.values():
            if 0 < read.index <= applied and not read.future.done():
                read.future.set_result(read.index)

    def complete(self, request: RequestId, outcome: object) -> None:
        """The entry carrying `request` applied here with `outcome` (an exception is
        raised to the caller). A request of another node, or one already ended, is
        ignored."""
        proposal = self._proposals.get(request)
        if proposal is None or proposal.future.done():
            return
        if not proposal.internal:
            self._stats.proposals_committed += 1
        if isinstance(outcome, BaseException):
            proposal.future.set_exception(outcome)
        else:
            proposal.future.set_result(outcome)

    def fail_overwritten(self, index: int, requests: tuple[RequestId, ...]) -> None:
        """The entry at `index` applies, carrying `requests` (none: a no-op, or not a
        proposal). If this node appended other proposals there as leader, a new leader has
        overwritten them: they will never apply, so fail them now instead of at their
        deadline."""
        owners = self._appended_at.pop(index, None)
        if owners is None or owners == requests:
            return
        for owner in owners:
            self._fail(
                self._proposals.get(owner),
                ProposalDropped(f"entry {index} was replaced by a new leader's entry"),
            )

    def fail_covered_by_snapshot(self, snapshot_index: int) -> None:
        """A snapshot up to `snapshot_index` is installed: the entries this node appended
        as leader at or below it are never applied here one by one, and whether they
        committed is unknown to us now."""
        for index in [index for index in self._appended_at if index <= snapshot_index]:
            for owner in self._appended_at.pop(index):
                self._fail(
                    self._proposals.get(owner),
                    OutcomeUnknown(f"entry {index} is covered by a snapshot: it may have applied"),
                )

    def end_unfinished(self, reason: Stopped) -> None:
        """End every pending request because of `reason` (stopping, failed, removed): a
        proposal that never left this node and every read with `reason`; a proposal that
        left it with OutcomeUnknown, since the cluster may apply it all the same."""
        for proposal in self._proposals.values():
            if proposal.sent:
                unknown = OutcomeUnknown(f"{reason}; the write had been sent and may apply")
                unknown.__cause__ = reason
                self._fail(proposal, unknown)
            else:
                self._fail(proposal, reason)
        for read in self._reads.values():
            if not read.future.done():
                read.future.set_exception(reason)

    def end_all(self, reason: Stopped) -> None:
        """The node stopped: end every request and forget them all."""
        self.end_unfinished(reason)
        self._proposals.clear()
        self._reads.clear()
        self._read_batches.clear()
        self._queued.clear()
        self._parked.clear()
        self._read_requests.clear()

    # -- helpers -------------------------------------------------------------------------

    def _fail_items(self, items: list[_Queued], error: Exception) -> None:
        for item in items:
            self._fail(self._proposals.get(item.request), error)

    def _fail(self, proposal: _Proposal | None, error: BaseException) -> None:
        """End a proposal that will never apply, or whose outcome is unknown."""
        if proposal is not None and not proposal.future.done():
            proposal.future.set_exception(error)
            if not proposal.internal:
                self._stats.proposals_failed += 1

    def _is_pending(self, request: RequestId) -> bool:
        proposal = self._proposals.get(request)
        return proposal is not None and not proposal.future.done()

    def _waiting_for_index(self, context: bytes) -> bool:
        read = self._reads.get(context)
        return read is not None and read.index == 0 and not read.future.done()


def _entry_data(entry: list[_Queued]) -> bytes:
    if entry[0].encoded:
        return entry[0].command
    if len(entry) == 1:
        return encode_proposal(entry[0].request, entry[0].command)
    return encode_batch([(item.request, item.command) for item in entry])
