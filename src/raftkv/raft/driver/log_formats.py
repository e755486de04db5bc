"""`LogFormats`: which log entry formats the members read, and so whether this node may
write batch entries (envelope.BATCH_VERSION): etcd's cluster version, for one feature.

A raftkv older than batch entries skips them, so a member running one would silently
diverge from the members that apply them. So every member declares through the log the
newest entry format it reads (envelope.Declaration), and a node writes batch entries only
while every member of the configuration it has applied (voters and learners, those of a
joint configuration included) has declared that it reads them. NodeSettings.batch_proposals
turns batching off altogether.

A member declares
- when it starts, or becomes a member, and its view is incomplete: some member (itself
  included) has not declared the newest format here — an older member, or a snapshot taken
  by an older raftkv, which did not keep declarations;
- when a declaration applies here from a member that had applied past our latest
  declaration yet did not know it (its view came from such a snapshot). So every view
  becomes complete, and declarations stop once they are.

Invariants:
- `_declared` is replicated state: changed only by applying declarations in log order,
  alike on every member (and merged from installed snapshots); snapshots carry it
  (envelope V3) and a restart replays the declarations after its snapshot, as it does
  membership changes (applying a declaration again changes nothing);
- a declaration by an id that is not a member where it applies is ignored, so a peer
  cannot grow `_declared` without bound;
- at most one declaration of ours is in flight; it is retried every election timeout until
  it applies here, and ends when the node stops or leaves.

A member added after batching began must run a raftkv that reads batch entries: the
entries already in the log are batches. (etcd refuses a member older than its cluster
version; an older raftkv cannot know to refuse.) docs/operations.md#upgrades says so.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from raftkv.raft.clock import Clock
from raftkv.raft.core.errors import RaftError
from raftkv.raft.core.types import ConfState, NodeId
from raftkv.raft.driver.envelope import BATCH_VERSION, Declaration, RequestId
from raftkv.raft.driver.errors import Removed, Stopped
from raftkv.raft.driver.requests import Requests
from raftkv.raft.driver.settings import NodeSettings

# The newest entry format this raftkv reads.
THIS_VERSION_READS = BATCH_VERSION
# What a member that never declared reads: single proposals (envelope.PROPOSAL_VERSION).
_UNDECLARED = (1, 0)


class LogFormats:
    def __init__(
        self,
        *,
        node_id: NodeId,
        settings: NodeSettings,
        clock: Clock,
        requests: Requests,
    ) -> None:
        self._node_id = node_id
        self._settings = settings
        self._clock = clock
        self._requests = requests
        # Member id → (the newest entry format it declared it reads, the index of that
        # declaration): see the module's invariants.
        self._declared: dict[NodeId, tuple[int, int]] = {}
        # The members of the configuration applied here.
        self._members: frozenset[NodeId] = frozenset()
        # The index up to which entries have been applied here (or a snapshot covered).
        self._applied_through = 0
        # The commit index stored at start: the view is checked once the log replayed so far.
        self._replay_until = 0
        # Whether every member reads batch entries (kept in step with the two above).
        self._all_read_batches = False
        # A member asked for our declaration (see the module's docstring), or we started.
        self._asked = False
        # The view is still to be checked after start (see the module's docstring).
        self._starting = True
        # From start() on (the node's loop runs): declarations may be proposed.
        self._running = False
        self._declaring: asyncio.Task[None] | None = None

    # -- what the node asks ----------------------------------------------------------------

    def batching_allowed(self) -> bool:
        """Whether this node may write batch entries now."""
        return self._settings.batch_proposals and self._all_read_batches

    def declared(self) -> dict[NodeId, tuple[int, int]]:
        """The declarations applied here, for a snapshot (envelope.encode_snapshot)."""
        return dict(self._declared)

    def tasks(self) -> list[asyncio.Task[None]]:
        """The declaration under way, for the node to cancel when it stops."""
        return [] if self._declaring is None else [self._declaring]

    # -- the log, applied --------------------------------------------------------------------

    def learn_from_snapshot(
        self, declared: Mapping[NodeId, tuple[int, int]], conf_state: ConfState, index: int
    ) -> None:
        """A snapshot at `index` is installed (or found in storage at start). Its
        declarations are merged with ours, the later of two for the same member kept: a
        snapshot taken by an older raftkv has none, and what we knew is still true."""
        for member, (reads, declared_at) in declared.items():
            if declared_at >= self._declared.get(member, _UNDECLARED)[1]:
                self._declared[member] = (reads, declared_at)
        self._applied_through = max(self._applied_through, index)
        self.apply_conf_state(conf_state)

    def apply_conf_state(self, conf_state: ConfState) -> None:
        """A membership change (or snapshot) made `conf_state` the configuration here."""
        self._members = conf_state.members()
        self._update()
        self._maybe_declare()

    def entries_applied(self, index: int) -> None:
        """The log up to `index` is applied here."""
        self._applied_through = max(self._applied_through, index)
        if self._starting:
            self._maybe_declare()

    def apply(self, index: int, declaration: Declaration, *, replayed: bool) -> None:
        """The declaration at log `index` applies (`replayed`: again, after a restart)."""
        member = declaration.request.origin
        self._applied_through = max(self._applied_through, index)
        if member not in self._members:
            return
        self._declared[member] = (declaration.reads, index)
        self._update()
        ours = self._declared.get(self._node_id)
        if (
            not replayed
            and member != self._node_id
            and ours is not None
            and ours[1] <= declaration.applied
            and self._node_id not in declaration.known
        ):
            # Its view came from a snapshot without ours: tell it again.
            self._asked = True
        self._maybe_declare()

    def _update(self) -> None:
        self._all_read_batches = bool(self._members) and self._every_member_reads(BATCH_VERSION)

    def _every_member_reads(self, version: int) -> bool:
        return all(
            self._declared.get(member, _UNDECLARED)[0] >= version for member in self._members
        )

    # -- our own declaration ---------------------------------------------------------------

    def start(self, replay_until: int) -> None:
        """The node's loop runs; `replay_until` is the commit index it stored. Once the log
        up to there is applied again, declare if the view is incomplete."""
        self._running = True
        self._replay_until = replay_until
        self._maybe_declare()

    def _maybe_declare(self) -> None:
        if not self._running or self._declaring is not None or self._node_id not in self._members:
            return
        if self._starting and self._applied_through >= self._replay_until:
            self._starting = False
            # The view is complete once every member declared what this version reads.
            self._asked = self._asked or not self._every_member_reads(THIS_VERSION_READS)
        if self._asked:
            self._declaring = asyncio.get_running_loop().create_task(
                self._declare(), name=f"raftkv-declare-{self._node_id}"
            )

    async def _declare(self) -> None:
        try:
            while True:
                self._asked = False
                try:
                    await self._requests.propose_declaration(self._declaration)
                    break
                except (Stopped, Removed):
                    return
                except RaftError:
                    # Dropped, overloaded, refused (NotLeader: forward_proposals is off,
                    # so only a leader declares), timed out (it may still apply: declaring
                    # twice changes nothing): try again.
                    await self._clock.sleep(self._settings.election_timeout_s)
        finally:
            self._declaring = None
        # Asked again while ours was on its way.
        self._maybe_declare()

    def _declaration(self, request: RequestId) -> Declaration:
        return Declaration(
            request=request,
            reads=THIS_VERSION_READS,
            applied=self._applied_through,
            known=frozenset(
                member
                for member, (reads, _) in self._declared.items()
                if reads >= THIS_VERSION_READS
            ),
        )
