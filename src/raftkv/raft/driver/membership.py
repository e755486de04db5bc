"""`Membership`: who this node knows as members and how it changes them — the address of
every member, the ids removed for good (this node's own included), when each peer was last
heard from, the join protocol a new node follows, and adding a learner, promoting it,
removing a member.

One change at a time, always through the leader: a follower forwards the request to the
leader over the transport (`MemberRequest`), and the leader checks it (a promoted learner
must have caught up) before proposing it through the log. Requests are idempotent, so a
joiner can retry after a timeout without adding itself twice.

Invariants:
- an address comes only from a source we trust: the operator (`peers`, `bootstrap`), our
  log and snapshots, or a member's answer to a membership request — never from what a
  message merely names;
- a removed id stays removed (ids are never reused, as etcd's are not): it is never added
  again and its messages are dropped; only the log itself may undo that, replaying a
  change that adds it, since every node follows its log alike;
- once this node knows it was removed, it stays so and serves nothing: every request
  pending then ends at once (Removed, or OutcomeUnknown for a write that left it);
- at most one lookup (`ask_members`) runs at a time, at most one per election timeout;
- it runs on the node's event loop; the node's loop applies the log's changes here
  (`apply_change`, `learn_from_snapshot`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Mapping, Sequence

from raftkv.raft.clock import Clock
from raftkv.raft.core.errors import (
    ConfChangeInvalid,
    ConfChangePending,
    InvalidArgument,
    NotLeader,
    ProposalDropped,
)
from raftkv.raft.core.rawnode import RawNode
from raftkv.raft.core.types import (
    NO_NODE,
    ConfChange,
    ConfChangeSingle,
    ConfChangeType,
    ConfState,
    NodeId,
)
from raftkv.raft.driver.envelope import RequestId, encode_conf_change_context
from raftkv.raft.driver.errors import (
    LearnerNotCaughtUp,
    MembershipError,
    OutcomeUnknown,
    Overloaded,
    ReadTimeout,
    Removed,
    Stopped,
)
from raftkv.raft.driver.leadership import Leadership
from raftkv.raft.driver.requests import Requests
from raftkv.raft.driver.settings import NodeSettings
from raftkv.raft.transport.base import (
    MemberAction,
    MemberRequest,
    MemberResponse,
    NotDelivered,
    Transport,
    TransportError,
)

logger = logging.getLogger("raftkv.node")


class Membership:
    def __init__(
        self,
        *,
        node_id: NodeId,
        peers: Mapping[NodeId, str],
        settings: NodeSettings,
        clock: Clock,
        rng: random.Random,
        transport: Transport,
        requests: Requests,
        leadership: Leadership,
        core: Callable[[], RawNode],
        check_running: Callable[[], None],
    ) -> None:
        """`peers`: the addresses the operator gave. From the node running it: `core`
        returns its RawNode (Stopped before it starts); `check_running` raises unless it
        serves requests (Stopped, Removed, NodeFailed)."""
        self._node_id = node_id
        self._settings = settings
        self._clock = clock
        self._rng = rng
        self._transport = transport
        self._requests = requests
        self._leadership = leadership
        self._core = core
        self._check_running = check_running
        # Addresses of every member we know; the log and snapshots keep it current.
        self._peers: dict[NodeId, str] = dict(peers)
        # Ids removed from the cluster (from the snapshot, then applied REMOVE changes):
        # never added again, and their messages are dropped. A removed machine that was
        # down when removed still thinks itself a member; were its id reused, its stale
        # vote would count as the new member's (etcd never reuses member ids either).
        self._removed: set[NodeId] = set()
        # This node knows it was removed (see learn_removed); told to these observers.
        self._this_node_removed = False
        self._removal_observers: list[Callable[[], None]] = []
        # When (the node's clock) a message from each known peer last arrived: "last
        # contact". Known peers only: ids a message merely names would grow it unbounded.
        self._last_heard: dict[NodeId, float] = {}
        # Asking the members about the membership (see ask_members): the task, and when
        # (our clock) another may start.
        self._lookup: asyncio.Task[None] | None = None
        self._next_lookup = 0.0

    # -- what it knows ---------------------------------------------------------------------

    def peers(self) -> dict[NodeId, str]:
        """A copy of every address known (members and, on a joiner, the leader adding it)."""
        return dict(self._peers)

    def removed_ids(self) -> frozenset[NodeId]:
        return frozenset(self._removed)

    @property
    def this_node_removed(self) -> bool:
        return self._this_node_removed

    def was_removed(self, peer: NodeId) -> bool:
        return peer in self._removed

    def knows(self, rawnode: RawNode, peer: NodeId) -> bool:
        """A member of the configuration in force, or a node whose address came from a
        source we trust (see the module's invariants). A joiner knows the leader adding it
        from the answer to its join request; a node lagging behind the change that added
        the sender drops its messages until it learns of it (see `ask_members`)."""
        return peer in self._peers or rawnode.is_member(peer)

    def heard_from(self, peer: NodeId, now: float) -> None:
        """A message from the known peer `peer` arrived at `now` (the node's clock)."""
        self._last_heard[peer] = now

    def last_contact_s(self, now: float) -> dict[NodeId, float]:
        """Seconds since each peer was last heard from (peers never heard are absent)."""
        return {peer: max(0.0, now - heard) for peer, heard in sorted(self._last_heard.items())}

    def tasks(self) -> list[asyncio.Task[None]]:
        """The tasks run on the node's behalf (the latest lookup): stopping cancels them."""
        return [] if self._lookup is None else [self._lookup]

    # -- what the operator, the log and the snapshots say ----------------------------------

    def add_founders(self, voters: Mapping[NodeId, str]) -> None:
        """The founding voters' addresses (bootstrap)."""
        self._peers.update(voters)

    def recover(self, peers: Mapping[NodeId, str], removed: frozenset[NodeId]) -> None:
        """At start, what the stored snapshot says, over the operator's addresses: a
        member's address may have changed since the cluster was founded (an update in
        the log), and the founders' list is only for a new data dir (as etcd's
        --initial-cluster). The log after the snapshot then applies its own changes."""
        self._peers.update(peers)
        self._removed |= removed
        # Removed before the snapshot was taken: a restart still knows it.
        self._this_node_removed = self._node_id in self._removed

    def connect(self) -> None:
        """Give the transport every address we know, members or not: a joiner must be able
        to answer the leader before the snapshot tells it the membership."""
        for peer, address in self._peers.items():
            if peer != self._node_id:
                self._transport.set_peer(peer, address)

    def learn_from_snapshot(self, peers: Mapping[NodeId, str], removed: frozenset[NodeId]) -> None:
        """A leader's snapshot is being installed: its addresses and removed ids hold."""
        self._peers.update(peers)
        self._removed |= removed

    def apply_change(
        self, change: ConfChange, conf_state: ConfState, peers: Mapping[NodeId, str]
    ) -> bool:
        """The log's membership change `change` applied, making `conf_state`; `peers` are
        the addresses its context carries. Returns whether it removed this very node."""
        self._peers.update(peers)
        members = conf_state.voters | conf_state.learners | conf_state.voters_outgoing
        # A member now is not a removed one (a log from before ids were never reused may
        # add one again: every node follows its log alike).
        self._removed -= members
        removed_here = False
        for single in change.changes:
            if single.type is ConfChangeType.REMOVE_NODE and single.node_id not in members:
                self._removed.add(single.node_id)
                self._peers.pop(single.node_id, None)
                if single.node_id == self._node_id:
                    # Keep the transport: until the new voters have applied this they may
                    # still need our vote.
                    removed_here = True
                else:
                    self._transport.remove_peer(single.node_id)
        self.sync_transport_peers(conf_state)
        return removed_here

    def on_removed(self, observer: Callable[[], None]) -> Callable[[], None]:
        """See `Node.on_removed`."""
        self._removal_observers.append(observer)
        if self._this_node_removed:
            _call_removal_observer(observer)
        return lambda: self._removal_observers.remove(observer)

    def learn_removed(self, how: str) -> None:
        """This node is no member any more (`how` it knows): it serves nothing from now on,
        and nothing pending here can complete, so say so now, not at deadlines."""
        if self._this_node_removed:
            return
        self._this_node_removed = True
        logger.warning("node %d was removed from the cluster (%s)", self._node_id, how)
        self._requests.end_unfinished(Removed(f"node {self._node_id} was removed from the cluster"))
        for observer in list(self._removal_observers):
            _call_removal_observer(observer)

    def sync_transport_peers(self, conf_state: ConfState) -> None:
        """Give the transport the address of every member of `conf_state` we know."""
        members = (
            conf_state.voters
            | conf_state.learners
            | conf_state.voters_outgoing
            | conf_state.learners_next
        )
        for peer in members:
            if peer != self._node_id and peer in self._peers:
                self._transport.set_peer(peer, self._peers[peer])

    # -- asking the members ----------------------------------------------------------------

    def ask_members(self, stranger: NodeId | None) -> None:
        """Ask the members we know about the membership (see `_ask_members`), at most once
        per election timeout and one question at a time. The node asks because `stranger`
        sent us messages no trusted source explains, or (None) because it has been
        leaderless for long: a member that missed its own removal learns it so."""
        lookup = self._lookup
        if lookup is not None and not lookup.done():
            return
        now = self._clock.now()
        if now < self._next_lookup:
            return
        self._next_lookup = now + self._settings.election_timeout_s
        self._lookup = asyncio.get_running_loop().create_task(
            self._ask_members(stranger), name=f"raftkv-ask-members-{self._node_id}"
        )

    async def _ask_members(self, stranger: NodeId | None) -> None:
        """Ask the members we know, at the addresses we trust, which members they know and
        which ids were removed, and learn from the answers:
        - ids we lack (never overriding an address we have, never a removed id): `stranger`
          sent us messages, but no source we trust names it, so they were dropped; we may
          lag behind the change that added it (it may even lead now: then we could never
          catch up, since we hear none of it). A stranger no member knows stays unheard;
        - that this node was removed, if an answer's removed ids name it (ids are never
          reused, so that is final): a leader sends a member nothing more once it applied
          its removal, so a member that missed the commit would never learn it otherwise.
        Stops once it learnt what it asked (the stranger known; or, without one, any
        answer)."""
        request = MemberRequest(MemberAction.MEMBERS, self._node_id)
        addresses = [
            address for peer, address in sorted(self._peers.items()) if peer != self._node_id
        ]
        self._rng.shuffle(addresses)
        for address in addresses:
            if not self._serving() or (stranger is not None and stranger in self._peers):
                return
            try:
                response = await self._transport.member_request(
                    address, request, self._settings.election_timeout_s
                )
            except TransportError:
                continue
            if not response.ok:
                continue
            if self._node_id in response.removed:
                self.learn_removed(f"the member at {address} says so")
                return
            for peer, peer_address in response.members:
                if (
                    peer != self._node_id
                    and peer_address
                    and peer not in self._peers
                    and peer not in self._removed
                ):
                    self._peers[peer] = peer_address
                    self._transport.set_peer(peer, peer_address)
                    logger.info(
                        "node %d learned member %d at %s from the member at %s (this node lags "
                        "behind the change that added it)",
                        self._node_id,
                        peer,
                        peer_address,
                        address,
                    )
            if stranger is None:
                return

    # -- changes ---------------------------------------------------------------------------

    async def join(
        self, seeds: Sequence[str], *, promote: bool, timeout: float | None
    ) -> ConfState:
        """See `Node.join`."""
        self._check_running()
        node_id = self._node_id
        own_address = self._peers.get(node_id)
        if not own_address:
            raise InvalidArgument("join() needs this node's own address in peers[node_id]")
        if not seeds:
            raise InvalidArgument("join() needs at least one member address")
        wait = timeout if timeout is not None else self._settings.membership_timeout_s * 6
        deadline = self._clock.now() + wait
        conf_state = self._core().conf_state()
        if node_id in conf_state.voters:
            return conf_state  # joined before (a restart, or a retried call)
        if node_id not in conf_state.learners:
            await self._ask_cluster(
                seeds, MemberRequest(MemberAction.ADD_LEARNER, node_id, own_address), deadline
            )
        if promote:
            await self._ask_cluster(seeds, MemberRequest(MemberAction.PROMOTE, node_id), deadline)
        await self._leadership.wait_for(
            lambda: (
                node_id in self._core().conf_state().voters
                or (not promote and node_id in self._core().conf_state().learners)
            ),
            max(deadline - self._clock.now(), 0.0),
        )
        return self._core().conf_state()

    async def _ask_cluster(
        self, seeds: Sequence[str], request: MemberRequest, deadline: float
    ) -> MemberResponse:
        """Send `request` to the cluster until the leader accepts it: follow leader hints,
        retry what may succeed later (busy, not caught up, unreachable) with capped
        backoff, give up at `deadline` (TimeoutError) or on a definite refusal."""
        candidates = list(seeds)
        backoff = self._settings.tick_interval_s
        attempt = 0
        last_error = "no answer"
        while True:
            self._check_running()
            remaining = deadline - self._clock.now()
            if remaining <= 0:
                raise TimeoutError(f"{request.action.value} of node {self._node_id}: {last_error}")
            address = candidates[attempt % len(candidates)]
            attempt += 1
            try:
                response = await self._transport.member_request(
                    address, request, min(remaining, self._settings.membership_timeout_s)
                )
            except TransportError as error:
                last_error = str(error)
                response = None
            if response is not None:
                self._learn_members(response.members)
                if response.ok:
                    return response
                last_error = f"{response.error}: {response.message}"
                if response.error == "invalid":
                    raise MembershipError(response.error, response.message)
                if response.error == "not_leader" and response.leader_address:
                    if response.leader_address not in candidates:
                        candidates.append(response.leader_address)
                    attempt = candidates.index(response.leader_address)
                    continue
            await self._clock.sleep(backoff * (0.5 + self._rng.random() / 2))
            backoff = min(backoff * 2, self._settings.election_timeout_s)

    def _learn_members(self, members: Sequence[tuple[NodeId, str]]) -> None:
        for peer, address in members:
            if peer != self._node_id and address and self._peers.get(peer) != address:
                self._peers[peer] = address
                self._transport.set_peer(peer, address)

    async def handle_request(self, request: MemberRequest) -> MemberResponse:
        """A peer asks us (as leader) to change the membership, or any member what it
        knows (MEMBERS). The node answers "stopped" itself before it runs."""
        if request.action is MemberAction.MEMBERS:
            # A question, not a change: any member answers.
            leader = self._leadership.leader_id
            return MemberResponse(
                ok=True,
                leader_id=leader,
                leader_address=self._peers.get(leader, "") if leader != NO_NODE else "",
                members=tuple(sorted(self._peers.items())),
                removed=tuple(sorted(self._removed)),
            )
        if not self._leadership.is_leader:
            return self.not_leader_response()
        try:
            # Half the requester's usual wait, so it hears "busy" or "timeout" (and retries)
            # rather than timing out itself while the change may still go through.
            await self._change_as_leader(request, self._settings.membership_timeout_s / 2)
        except MembershipError as error:
            return self.error_response(error.code, error.detail)
        except LearnerNotCaughtUp as error:
            return self.error_response("not_caught_up", str(error))
        except ConfChangeInvalid as error:
            return self.error_response("invalid", str(error))
        except NotLeader:
            return self.not_leader_response()
        except (OutcomeUnknown, TimeoutError) as error:
            return self.error_response("timeout", str(error))
        except (ProposalDropped, Overloaded, Stopped) as error:
            return self.error_response("busy", str(error))
        return MemberResponse(
            ok=True,
            leader_id=self._node_id,
            leader_address=self._peers.get(self._node_id, ""),
            members=tuple(sorted(self._peers.items())),
        )

    async def change(self, request: MemberRequest, timeout: float | None) -> ConfState:
        """Make the change `request` asks for: as the leader, or through it."""
        self._check_running()
        wait = timeout if timeout is not None else self._settings.membership_timeout_s
        if self._leadership.is_leader:
            return await self._change_as_leader(request, wait)
        response = await self.ask_leader(request, wait)
        if not response.ok:
            if response.error == "not_leader":
                raise NotLeader(response.leader_id)
            if response.error == "not_caught_up":
                raise LearnerNotCaughtUp(response.message)
            raise MembershipError(response.error, response.message)
        # The change is made. Wait until it is applied here too, so our status shows it; if
        # that read cannot be confirmed now, the change still stands — also when the change
        # removed this very node (its reads then fail with Removed: the caller asked for it).
        with contextlib.suppress(ReadTimeout, Removed):
            self._check_running()
            await self._requests.read(wait)
        return self._core().conf_state()

    async def ask_leader(self, request: MemberRequest, wait: float) -> MemberResponse:
        """Send `request` to the leader this node knows; its answer, ok or not. NotLeader
        if no leader (or no address for it) is known; MembershipError "not_sent" if the
        request surely did not reach it, "unreachable" if it may have."""
        leader = self._leadership.leader_id
        address = self._peers.get(leader) if leader != NO_NODE else None
        if address is None:
            raise NotLeader(leader)
        try:
            return await self._transport.member_request(address, request, wait)
        except NotDelivered as error:
            # Nothing reached the leader we knew (gone, or not the leader any more).
            raise MembershipError("not_sent", str(error)) from error
        except TransportError as error:
            raise MembershipError("unreachable", str(error)) from error

    async def _change_as_leader(self, request: MemberRequest, timeout: float | None) -> ConfState:
        """Check and propose `request` as the leader; wait until it is applied here.

        While another change is still being applied (a concurrent join, a retry of this very
        request, a new leader's first entry) it waits and tries again until the deadline:
        the retry re-checks the membership, so a retried request finds itself done."""
        wait = timeout if timeout is not None else self._settings.membership_timeout_s
        deadline = self._clock.now() + wait
        while True:
            if not self._leadership.is_leader:
                raise NotLeader(self._leadership.leader_id)
            prepared = self._prepare_change(request)
            if isinstance(prepared, ConfState):
                return prepared
            request_id, change = prepared
            remaining = deadline - self._clock.now()
            try:
                return await self._requests.propose_conf_change(
                    request_id, change, max(remaining, 0.0)
                )
            except ConfChangePending as error:
                if self._clock.now() + self._settings.tick_interval_s >= deadline:
                    raise MembershipError("busy", str(error)) from error
            await self._clock.sleep(self._settings.tick_interval_s)

    def _prepare_change(self, request: MemberRequest) -> ConfState | tuple[RequestId, ConfChange]:
        """The change to propose for `request`, or the current membership if it is done
        already. Raises MembershipError / LearnerNotCaughtUp when it cannot be made."""
        conf_state = self._core().conf_state()
        node_id = request.node_id
        if node_id == NO_NODE or node_id < 0:
            raise MembershipError("invalid", f"node id {node_id} is not valid")
        peers: dict[NodeId, str] = {}
        if request.action is MemberAction.ADD_LEARNER:
            if not request.address:
                raise MembershipError("invalid", "adding a learner needs its address")
            if node_id in self._removed:
                raise MembershipError(
                    "invalid",
                    f"node id {node_id} was removed from this cluster and is never reused "
                    "(its old machine could come back believing it is a member): give the new "
                    "node a new id",
                )
            if node_id in conf_state.voters | conf_state.learners:
                if self._peers.get(node_id) == request.address:
                    # Already a member at that address: a retried join, done already.
                    return conf_state
                raise MembershipError(
                    "invalid",
                    f"node {node_id} is already a member at {self._peers.get(node_id)!r}",
                )
            peers[node_id] = request.address
            change_type = ConfChangeType.ADD_LEARNER_NODE
        elif request.action is MemberAction.PROMOTE:
            if node_id in conf_state.voters:
                return conf_state  # a retried request: already done
            if node_id not in conf_state.learners:
                raise MembershipError("invalid", f"node {node_id} is not a learner")
            self._check_promotable(node_id)
            change_type = ConfChangeType.ADD_NODE
        elif request.action is MemberAction.UPDATE:
            if node_id not in conf_state.voters | conf_state.learners:
                raise MembershipError("invalid", f"node {node_id} is not a member")
            if not request.address:
                raise MembershipError("invalid", "updating a member needs its new address")
            if self._peers.get(node_id) == request.address:
                return conf_state  # a retried request, or nothing to change
            taken = [
                peer
                for peer, address in self._peers.items()
                if address == request.address and peer != node_id
            ]
            if taken:
                raise MembershipError(
                    "invalid", f"{request.address} is the address of member {taken[0]}"
                )
            peers[node_id] = request.address
            change_type = ConfChangeType.UPDATE_NODE
        else:
            if node_id not in conf_state.voters | conf_state.learners:
                raise MembershipError("invalid", f"node {node_id} is not a member")
            change_type = ConfChangeType.REMOVE_NODE
        request_id = self._requests.next_request()
        change = ConfChange(
            changes=(ConfChangeSingle(change_type, node_id),),
            context=encode_conf_change_context(request_id, peers),
        )
        return request_id, change

    def _check_promotable(self, learner: NodeId) -> None:
        """Raise LearnerNotCaughtUp unless `learner` can take its part as a voter at once: the
        leader heard from it within an election timeout, and its log is close to the
        leader's both in entries and as a fraction of it (NodeSettings.promote_*)."""
        settings = self._settings
        match = self._core().match_index(learner) or 0
        last_index = self._core().last_index()
        heard = self._last_heard.get(learner)
        if heard is None:
            raise LearnerNotCaughtUp(
                f"learner {learner} has never been heard from: check that it runs and is "
                f"reachable at {self._peers.get(learner, 'its address')!r}"
            )
        silent_s = self._clock.now() - heard
        if silent_s > self._settings.election_timeout_s:
            raise LearnerNotCaughtUp(
                f"learner {learner} has not been heard from for {silent_s:.1f}s"
            )
        lag = last_index - match
        if lag > settings.promote_max_lag_entries:
            raise LearnerNotCaughtUp(
                f"learner {learner} lags the leader by {lag} entries "
                f"(limit {settings.promote_max_lag_entries})"
            )
        if match < last_index * settings.promote_min_log_fraction:
            raise LearnerNotCaughtUp(
                f"learner {learner} holds the log up to index {match} of the leader's "
                f"{last_index} (at least {settings.promote_min_log_fraction:.0%} needed)"
            )

    def not_leader_response(self) -> MemberResponse:
        leader = self._leadership.leader_id
        return MemberResponse(
            ok=False,
            error="not_leader",
            message=f"node {self._node_id} is not the leader",
            leader_id=leader,
            leader_address=self._peers.get(leader, "") if leader != NO_NODE else "",
            members=tuple(sorted(self._peers.items())),
        )

    def error_response(self, code: str, message: str) -> MemberResponse:
        leader = self._leadership.leader_id
        return MemberResponse(
            ok=False,
            error=code,
            message=message,
            leader_id=leader,
            leader_address=self._peers.get(leader, ""),
        )

    # -- helpers ---------------------------------------------------------------------------

    def _serving(self) -> bool:
        """Whether the node still serves requests (neither stopping nor removed)."""
        try:
            self._check_running()
        except Stopped:  # Removed and NodeFailed are Stopped too
            return False
        return True


def _call_removal_observer(observer: Callable[[], None]) -> None:
    try:
        observer()
    except Exception:
        logger.exception("removal observer failed")
