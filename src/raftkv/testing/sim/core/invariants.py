"""Raft's safety properties, checked after every simulator event.

The checker keeps global registries built from everything any node ever did, and compares
each new observation with them, so every check costs about as much as the event itself:

- Election Safety: at most one leader per term (`leader_of_term`).
- Log Matching (§5.3): an (index, term) pair identifies one entry and one predecessor term,
  so two logs holding the same (index, term) hold the same prefix (by induction). Checked
  on every entry a node persists (`persisted_entries`).
- Leader Completeness (§5.4): an entry committed while the cluster was in term T is in the
  log of every leader of a term above T. `committed` maps each committed index to its
  entry's term and the term in which its commit was first observed; checked when a node
  becomes leader and whenever a commit is observed while a later-term leader exists.
- State Machine Safety: every node applies the same entry at each index (`applied`), in
  order without gaps, and a snapshot installs the same image some node had at its index.
- Monotonicity: per incarnation, commit and applied never decrease; across crashes, the
  durable term, the durable commit and the state machine's durable applied index never
  decrease, and the durable vote never changes within a term.
- Durability before promises: a granted vote is durable (term and vote, or a later term)
  when it is sent, and an append acknowledgement only covers durable entries.

A broken property raises `SafetyViolation`; the run stops there.
"""

from __future__ import annotations

from dataclasses import dataclass

from raftkv.raft.core.errors import LogCompacted, LogUnavailable
from raftkv.raft.core.types import (
    NO_NODE,
    Entry,
    EntryKind,
    HardState,
    Message,
    MessageType,
    NodeId,
    Snapshot,
    StateRole,
)
from raftkv.testing.sim.core.disk import Disk
from raftkv.testing.sim.core.node import SimNode

__all__ = ["SafetyChecker", "SafetyViolation"]


class SafetyViolation(Exception):
    """A Raft safety property does not hold. `kind` names the property."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


@dataclass(frozen=True, slots=True)
class _Committed:
    term: int  # the entry's term
    observed_in: int  # the term of the node that first reported the index committed


@dataclass(slots=True)
class _Watermarks:
    """What one incarnation of a node has reported so far."""

    incarnation: int
    committed: int
    applied: int


class SafetyChecker:
    def __init__(self, nodes: dict[NodeId, SimNode]) -> None:
        self.nodes = nodes
        self.leader_of_term: dict[int, NodeId] = {}
        # (index, term) -> (kind, data, term of the entry before it).
        self.persisted_entries: dict[tuple[int, int], tuple[EntryKind, bytes, int]] = {}
        self.committed: dict[int, _Committed] = {}
        self.max_committed = 0
        # index -> (term, kind, data) of the entry applied there.
        self.applied: dict[int, tuple[int, EntryKind, bytes]] = {}
        # index -> snapshot data of a state machine image at that index.
        self.images: dict[int, bytes] = {}
        self._watermarks: dict[NodeId, _Watermarks] = {}

    # -- after every event -----------------------------------------------------------------

    def check_node(self, node: SimNode) -> None:
        """Check the volatile state of `node` (call after each event that touched it)."""
        rawnode = node.rawnode
        if rawnode is None:
            return
        raft = rawnode.raft
        log = raft.log
        marks = self._watermarks.get(node.id)
        if marks is None or marks.incarnation != node.incarnation:
            marks = _Watermarks(node.incarnation, log.committed, log.applied)
            self._watermarks[node.id] = marks
            self._observe_commits(node, log.first_index() - 1, log.committed)
        if raft.role is StateRole.LEADER:
            holder = self.leader_of_term.get(raft.term)
            if holder is None:
                self.leader_of_term[raft.term] = node.id
                self._check_new_leader(node)
            elif holder != node.id:
                raise SafetyViolation(
                    "election safety",
                    f"n{node.id} and n{holder} are both leaders of term {raft.term}",
                )
        if log.committed < marks.committed:
            raise SafetyViolation(
                "commit monotonicity",
                f"n{node.id} commit index went from {marks.committed} to {log.committed}",
            )
        if log.committed > marks.committed:
            self._observe_commits(node, marks.committed + 1, log.committed)
            marks.committed = log.committed
        if log.applied < marks.applied:
            raise SafetyViolation(
                "apply monotonicity",
                f"n{node.id} applied index went from {marks.applied} to {log.applied}",
            )
        marks.applied = log.applied
        if log.applied > log.committed:
            raise SafetyViolation(
                "apply monotonicity",
                f"n{node.id} applied {log.applied} beyond its commit index {log.committed}",
            )

    def _observe_commits(self, node: SimNode, low: int, high: int) -> None:
        assert node.rawnode is not None
        raft = node.rawnode.raft
        log = raft.log
        low = max(low, log.first_index() - 1, 1)
        for index in range(low, high + 1):
            try:
                term = log.term(index)
            except (LogCompacted, LogUnavailable) as error:
                raise SafetyViolation(
                    "log matching",
                    f"n{node.id} reports index {index} committed but cannot read it: {error}",
                ) from None
            known = self.committed.get(index)
            if known is None:
                self.committed[index] = _Committed(term, raft.term)
                self.max_committed = max(self.max_committed, index)
                self._check_later_leaders_hold(index, term, raft.term)
            elif known.term != term:
                raise SafetyViolation(
                    "state machine safety",
                    f"index {index} committed with term {known.term} earlier, but n{node.id} "
                    f"has it committed with term {term}",
                )

    def _check_later_leaders_hold(self, index: int, term: int, observed_in: int) -> None:
        for other in self.nodes.values():
            rawnode = other.rawnode
            if rawnode is None or rawnode.raft.role is not StateRole.LEADER:
                continue
            if rawnode.raft.term > observed_in:
                self._require_entry(other, index, term, f"committed in term {observed_in}")

    def _check_new_leader(self, node: SimNode) -> None:
        assert node.rawnode is not None
        raft = node.rawnode.raft
        start = max(raft.log.first_index() - 1, 1)
        for index in range(start, self.max_committed + 1):
            known = self.committed.get(index)
            if known is not None and known.observed_in < raft.term:
                self._require_entry(node, index, known.term, f"committed in {known.observed_in}")

    def _require_entry(self, leader: SimNode, index: int, term: int, why: str) -> None:
        assert leader.rawnode is not None
        raft = leader.rawnode.raft
        log = raft.log
        if index < log.first_index() - 1:
            return  # covered by the leader's snapshot, checked when it was installed
        held = log.term(index) if index <= log.last_index() else None
        if held != term:
            raise SafetyViolation(
                "leader completeness",
                f"n{leader.id}, leader of term {raft.term}, lacks entry {index} (term {term}, "
                f"{why}); its log has {'nothing' if held is None else f'term {held}'} there",
            )

    # -- durable writes --------------------------------------------------------------------

    def before_hard_state(self, node: SimNode, new: HardState) -> None:
        old = node.disk.storage.hard_state
        if new.term < old.term:
            raise SafetyViolation(
                "durable term", f"n{node.id} persists term {new.term} after term {old.term}"
            )
        if new.term == old.term and old.vote not in (NO_NODE, new.vote):
            raise SafetyViolation(
                "durable vote",
                f"n{node.id} changes its vote in term {new.term} from {old.vote} to {new.vote}",
            )
        if new.commit < old.commit:
            raise SafetyViolation(
                "durable commit", f"n{node.id} persists commit {new.commit} after {old.commit}"
            )

    def after_persist(self, node: SimNode, entries: tuple[Entry, ...]) -> None:
        """Log Matching on the entries just written, and commit within the durable log."""
        storage = node.disk.storage
        first = storage.first_index()
        for entry in entries:
            if entry.index < first:
                continue
            previous_term = storage.term(entry.index - 1)
            record = (entry.kind, entry.data, previous_term)
            known = self.persisted_entries.setdefault((entry.index, entry.term), record)
            if known != record:
                raise SafetyViolation(
                    "log matching",
                    f"n{node.id} persisted entry {entry.index} term {entry.term} "
                    f"(after term {previous_term}, {len(entry.data)} bytes) but another node "
                    f"holds a different one (after term {known[2]}, {len(known[1])} bytes)",
                )
        commit = storage.hard_state.commit
        durable_last = max(storage.last_index(), storage.snapshot().metadata.index)
        if commit > durable_last:
            raise SafetyViolation(
                "durable commit",
                f"n{node.id} persisted commit {commit} beyond its durable log ({durable_last})",
            )

    def before_image_flush(self, node: SimNode, applied: int) -> None:
        if applied < node.disk.image.applied:
            raise SafetyViolation(
                "durable applied",
                f"n{node.id} state machine image goes from {node.disk.image.applied} "
                f"back to {applied}",
            )

    def on_snapshot_created(self, node: SimNode, snapshot: Snapshot) -> None:
        self._check_image(node, snapshot, "created")

    def on_snapshot_install(self, node: SimNode, snapshot: Snapshot) -> None:
        metadata = snapshot.metadata
        assert node.state_machine is not None
        if metadata.index <= node.state_machine.applied:
            raise SafetyViolation(
                "state machine safety",
                f"n{node.id} asked to install a snapshot at {metadata.index}, not above its "
                f"applied index {node.state_machine.applied}",
            )
        self._check_image(node, snapshot, "installed")

    def _check_image(self, node: SimNode, snapshot: Snapshot, verb: str) -> None:
        metadata = snapshot.metadata
        known = self.committed.get(metadata.index)
        if known is not None and known.term != metadata.term:
            raise SafetyViolation(
                "state machine safety",
                f"n{node.id} {verb} a snapshot at {metadata.index} term {metadata.term}; the "
                f"entry committed there has term {known.term}",
            )
        image = self.images.setdefault(metadata.index, snapshot.data)
        if image != snapshot.data:
            raise SafetyViolation(
                "state machine safety",
                f"n{node.id} {verb} a snapshot at {metadata.index} whose state differs from "
                "another node's state at that index",
            )

    # -- messages and applies --------------------------------------------------------------

    def on_send(self, node: SimNode, message: Message) -> None:
        """Promises in outgoing messages must be backed by the disk at send time.

        A node may make a promise in term T and move to a later term before the Ready
        carrying it is persisted (both in one batch). Once a later term is durable the node
        can never act in term T again, so the promise is safe: only a node still in T must
        have the promise itself on disk.
        """
        if message.type is MessageType.VOTE_RESPONSE and not message.reject:
            hard = node.disk.storage.hard_state
            if hard.term < message.term or (hard.term == message.term and hard.vote != message.to):
                raise SafetyViolation(
                    "durable vote",
                    f"n{node.id} grants its term-{message.term} vote to n{message.to} but its "
                    f"disk says term {hard.term}, vote {hard.vote}",
                )
        elif message.type is MessageType.APPEND_RESPONSE and not message.reject:
            storage = node.disk.storage
            if storage.hard_state.term != message.term:
                return
            durable = max(storage.last_index(), storage.snapshot().metadata.index)
            if message.index > durable:
                raise SafetyViolation(
                    "durable append",
                    f"n{node.id} acknowledges index {message.index} to n{message.to} but only "
                    f"{durable} is durable",
                )

    def on_apply(self, node: SimNode, entry: Entry) -> None:
        assert node.state_machine is not None
        expected = node.state_machine.applied + 1
        if entry.index != expected:
            raise SafetyViolation(
                "state machine safety",
                f"n{node.id} asked to apply entry {entry.index}, expected {expected}",
            )
        record = (entry.term, entry.kind, entry.data)
        known = self.applied.setdefault(entry.index, record)
        if known != record:
            raise SafetyViolation(
                "state machine safety",
                f"n{node.id} applies entry {entry.index} term {entry.term} but another node "
                f"applied term {known[0]} there",
            )
        committed = self.committed.get(entry.index)
        if committed is not None and committed.term != entry.term:
            raise SafetyViolation(
                "state machine safety",
                f"n{node.id} applies entry {entry.index} term {entry.term}; the committed "
                f"entry there has term {committed.term}",
            )

    def check_disk(self, node_id: NodeId, disk: Disk) -> None:
        """Sanity of a disk a node restarts from."""
        image_applied = disk.image.applied
        storage = disk.storage
        covered = max(storage.last_index(), storage.snapshot().metadata.index)
        if image_applied > covered:
            raise SafetyViolation(
                "durable applied",
                f"n{node_id} restarts with state machine at {image_applied} beyond its log "
                f"({covered})",
            )
