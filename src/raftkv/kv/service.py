"""`KvService`: the KV store's API on a running node — what the HTTP server (and anyone
embedding raftkv as a KV store) calls.

- Writes are checked here first, so a refused request costs no log entry, then proposed
  through Raft (any node accepts them; followers forward to the leader) and answered with
  the state machine's result once applied on this node.
- Reads are linearizable by default: ReadIndex confirms the read point with a quorum and the
  local state machine answers once it has applied that far, on any node. With
  `serializable=True` the local state answers as it is (possibly stale; no leader needed).
- Exactly-once: a write may carry `client_id` and `sequence`. After an unknown outcome
  (ProposalTimeout, a lost connection) retrying with the same pair returns the original
  result instead of applying twice.

Errors: a `KvError` for a refused request (the same on every node), or the driver's own:
NotLeader, ProposalDropped, ProposalTimeout (outcome unknown), ReadTimeout, Overloaded,
Stopped.
"""

from __future__ import annotations

from typing import TypeVar

from raftkv.kv.commands import (
    Compact,
    CompactResult,
    DeleteRange,
    DeleteResult,
    KvCommand,
    PublishMember,
    PublishMemberResult,
    Put,
    PutResult,
    Range,
    RangeResult,
    Txn,
    TxnResult,
    WriteRequest,
    encode_command,
)
from raftkv.kv.settings import KvSettings
from raftkv.kv.state_machine import KvStateMachine
from raftkv.kv.validation import check_request, check_session
from raftkv.raft.core.errors import InvariantViolation
from raftkv.raft.driver.node import Node

ResultT = TypeVar("ResultT", PutResult, DeleteResult, TxnResult, CompactResult, PublishMemberResult)


class KvService:
    def __init__(
        self, node: Node, machine: KvStateMachine, settings: KvSettings | None = None
    ) -> None:
        if node.state_machine is not machine:
            raise ValueError("the KvStateMachine must be the one the node applies to")
        self.node = node
        self.machine = machine
        self.settings = settings if settings is not None else KvSettings()

    # -- writes ---------------------------------------------------------------------------

    async def put(
        self,
        key: bytes,
        value: bytes,
        *,
        lease: int = 0,
        prev_kv: bool = False,
        client_id: str = "",
        sequence: int = 0,
        timeout: float | None = None,
    ) -> PutResult:
        request = Put(key=key, value=value, lease=lease, prev_kv=prev_kv)
        return await self._write(request, PutResult, client_id, sequence, timeout)

    async def delete_range(
        self,
        key: bytes,
        range_end: bytes = b"",
        *,
        prev_kv: bool = False,
        client_id: str = "",
        sequence: int = 0,
        timeout: float | None = None,
    ) -> DeleteResult:
        request = DeleteRange(key=key, range_end=range_end, prev_kv=prev_kv)
        return await self._write(request, DeleteResult, client_id, sequence, timeout)

    async def txn(
        self,
        request: Txn,
        *,
        client_id: str = "",
        sequence: int = 0,
        timeout: float | None = None,
    ) -> TxnResult:
        return await self._write(request, TxnResult, client_id, sequence, timeout)

    async def compact(self, revision: int, *, timeout: float | None = None) -> CompactResult:
        return await self._write(Compact(revision=revision), CompactResult, "", 0, timeout)

    async def publish_member(
        self, member_id: int, client_url: str, *, timeout: float | None = None
    ) -> PublishMemberResult:
        """Record, through the log, where clients reach member `member_id`."""
        request = PublishMember(member_id=member_id, client_url=client_url)
        return await self._write(request, PublishMemberResult, "", 0, timeout)

    async def _write(
        self,
        request: WriteRequest,
        expected: type[ResultT],
        client_id: str,
        sequence: int,
        timeout: float | None,
    ) -> ResultT:
        command = KvCommand(request=request, client_id=client_id, sequence=sequence)
        check_request(request, self.settings)
        check_session(command, self.settings)
        # A refusal applied in the log comes back as the KvError raised by propose.
        result = await self.node.propose(encode_command(command), timeout=timeout)
        if not isinstance(result, expected):
            raise InvariantViolation(
                f"{type(request).__name__} answered with {type(result).__name__}"
            )
        return result

    # -- reads ----------------------------------------------------------------------------

    async def range(
        self, request: Range, *, serializable: bool = False, timeout: float | None = None
    ) -> RangeResult:
        check_request(request, self.settings)
        if not serializable:
            await self.node.read_index(timeout=timeout)
        return self.machine.range(request)

    async def get(
        self, key: bytes, *, serializable: bool = False, timeout: float | None = None
    ) -> RangeResult:
        return await self.range(Range(key=key), serializable=serializable, timeout=timeout)
