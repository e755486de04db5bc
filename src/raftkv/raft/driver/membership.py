"""Membership changes for a running `Node`: add a learner, promote it, remove a member,
and the join protocol a new node follows.

One change at a time, always through the leader: a follower forwards the request to the
leader over the transport (`MemberRequest`), and the leader checks it (a promoted learner
must have caught up) before proposing it through the log. Requests are idempotent, so a
joiner can retry after a timeout without adding itself twice.

These functions are the Node's own methods kept in their own module; they use its
internals and run on its event loop.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from raftkv.raft.core.errors import (
    ConfChangeInvalid,
    ConfChangePending,
    InvalidArgument,
    NotLeader,
    ProposalDropped,
)
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
    MembershipError,
    NotCaughtUp,
    OutcomeUnknown,
    Overloaded,
    ReadTimeout,
    Removed,
    Stopped,
)
from raftkv.raft.transport.base import (
    MemberAction,
    MemberRequest,
    MemberResponse,
    NotDelivered,
    TransportError,
)

if TYPE_CHECKING:
    from raftkv.raft.driver.node import Node

logger = logging.getLogger("raftkv.node")


async def join(
    node: Node, seeds: Sequence[str], *, promote: bool = True, timeout: float | None = None
) -> ConfState:
    """Become a member of a running cluster: ask it (through any member's address in
    `seeds`) to add this node as a learner, catch up, then, if `promote`, become a
    voter once the leader finds the log caught up. The node must have been started on
    empty storage, knowing its own address (`peers[node_id]`). Safe to retry."""
    node._check_running()
    own_address = node._peers.get(node.id)
    if not own_address:
        raise InvalidArgument("join() needs this node's own address in peers[node_id]")
    if not seeds:
        raise InvalidArgument("join() needs at least one member address")
    wait = timeout if timeout is not None else node.settings.membership_timeout_s * 6
    deadline = node.clock.now() + wait
    conf_state = node._core().conf_state()
    if node.id in conf_state.voters:
        return conf_state  # joined before (a restart, or a retried call)
    if node.id not in conf_state.learners:
        await ask_cluster(
            node, seeds, MemberRequest(MemberAction.ADD_LEARNER, node.id, own_address), deadline
        )
    if promote:
        await ask_cluster(node, seeds, MemberRequest(MemberAction.PROMOTE, node.id), deadline)
    await node._leadership.wait_for(
        lambda: (
            node.id in node._core().conf_state().voters
            or (not promote and node.id in node._core().conf_state().learners)
        ),
        max(deadline - node.clock.now(), 0.0),
    )
    return node._core().conf_state()


async def ask_cluster(
    node: Node, seeds: Sequence[str], request: MemberRequest, deadline: float
) -> MemberResponse:
    """Send `request` to the cluster until the leader accepts it: follow leader hints,
    retry what may succeed later (busy, not caught up, unreachable) with capped
    backoff, give up at `deadline` (TimeoutError) or on a definite refusal."""
    candidates = list(seeds)
    backoff = node.settings.tick_interval_s
    attempt = 0
    last_error = "no answer"
    while True:
        node._check_running()
        remaining = deadline - node.clock.now()
        if remaining <= 0:
            raise TimeoutError(f"{request.action.value} of node {node.id}: {last_error}")
        address = candidates[attempt % len(candidates)]
        attempt += 1
        try:
            response = await node.transport.member_request(
                address, request, min(remaining, node.settings.membership_timeout_s)
            )
        except TransportError as error:
            last_error = str(error)
            response = None
        if response is not None:
            learn_members(node, response.members)
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
        await node.clock.sleep(backoff * (0.5 + node._rng.random() / 2))
        backoff = min(backoff * 2, node._election_timeout_s())


async def ask_members(node: Node, stranger: NodeId | None) -> None:
    """Ask the members we know, at the addresses we trust, which members they know and
    which ids were removed, and learn from the answers:
    - ids we lack (never overriding an address we have, never a removed id): `stranger`
      sent us messages, but no source we trust names it, so they were dropped; we may lag
      behind the change that added it (it may even lead now: then we could never catch up,
      since we hear none of it). A stranger no member knows stays unheard;
    - that this node was removed, if an answer's removed ids name it (ids are never
      reused, so that is final): a leader sends a member nothing more once it applied its
      removal, so a member that missed the commit would never learn it otherwise.
    Stops once it learnt what it asked (the stranger known; or, without one, any answer)."""
    request = MemberRequest(MemberAction.MEMBERS, node.id)
    addresses = [address for peer, address in sorted(node._peers.items()) if peer != node.id]
    node._rng.shuffle(addresses)
    for address in addresses:
        if node._stopping or node.removed or (stranger is not None and stranger in node._peers):
            return
        try:
            response = await node.transport.member_request(
                address, request, node._election_timeout_s()
            )
        except TransportError:
            continue
        if not response.ok:
            continue
        if node.id in response.removed:
            node._learn_removed(f"the member at {address} says so")
            return
        for peer, peer_address in response.members:
            if (
                peer != node.id
                and peer_address
                and peer not in node._peers
                and peer not in node._removed
            ):
                node._peers[peer] = peer_address
                node.transport.set_peer(peer, peer_address)
                logger.info(
                    "node %d learned member %d at %s from the member at %s (this node lags "
                    "behind the change that added it)",
                    node.id,
                    peer,
                    peer_address,
                    address,
                )
        if stranger is None:
            return


def learn_members(node: Node, members: Sequence[tuple[NodeId, str]]) -> None:
    for peer, address in members:
        if peer != node.id and address and node._peers.get(peer) != address:
            node._peers[peer] = address
            node.transport.set_peer(peer, address)


async def handle_request(node: Node, request: MemberRequest) -> MemberResponse:
    """A peer asks us (as leader) to change the membership."""
    if node._stopping or node._rawnode is None:
        return MemberResponse(ok=False, error="stopped", message="node is stopping")
    if request.action is MemberAction.MEMBERS:
        # A question, not a change: any member answers.
        leader = node._leadership.leader_id
        return MemberResponse(
            ok=True,
            leader_id=leader,
            leader_address=node._peers.get(leader, "") if leader != NO_NODE else "",
            members=tuple(sorted(node._peers.items())),
            removed=tuple(sorted(node._removed)),
        )
    if not node._leadership.is_leader:
        return not_leader_response(node)
    try:
        # Half the requester's usual wait, so it hears "busy" or "timeout" (and retries)
        # rather than timing out itself while the change may still go through.
        await change_as_leader(node, request, node.settings.membership_timeout_s / 2)
    except MembershipError as error:
        return member_error(node, error.code, error.detail)
    except NotCaughtUp as error:
        return member_error(node, "not_caught_up", str(error))
    except ConfChangeInvalid as error:
        return member_error(node, "invalid", str(error))
    except NotLeader:
        return not_leader_response(node)
    except (OutcomeUnknown, TimeoutError) as error:
        return member_error(node, "timeout", str(error))
    except (ProposalDropped, Overloaded, Stopped) as error:
        return member_error(node, "busy", str(error))
    return MemberResponse(
        ok=True,
        leader_id=node.id,
        leader_address=node._peers.get(node.id, ""),
        members=tuple(sorted(node._peers.items())),
    )


async def change(node: Node, request: MemberRequest, timeout: float | None) -> ConfState:
    node._check_running()
    wait = timeout if timeout is not None else node.settings.membership_timeout_s
    if node._leadership.is_leader:
        return await change_as_leader(node, request, wait)
    leader = node._leadership.leader_id
    address = node._peers.get(leader) if leader != NO_NODE else None
    if address is None:
        raise NotLeader(leader)
    try:
        response = await node.transport.member_request(address, request, wait)
    except NotDelivered as error:
        # Nothing reached the leader we knew (gone, or not the leader any more).
        raise MembershipError("not_sent", str(error)) from error
    except TransportError as error:
        raise MembershipError("unreachable", str(error)) from error
    if not response.ok:
        if response.error == "not_leader":
            raise NotLeader(response.leader_id)
        if response.error == "not_caught_up":
            raise NotCaughtUp(response.message)
        raise MembershipError(response.error, response.message)
    # The change is made. Wait until it is applied here too, so our status shows it; if
    # that read cannot be confirmed now, the change still stands — also when the change
    # removed this very node (its reads then fail with Removed: the caller asked for it).
    with contextlib.suppress(ReadTimeout, Removed):
        await node.read_index(timeout=wait)
    return node._core().conf_state()


async def change_as_leader(node: Node, request: MemberRequest, timeout: float | None) -> ConfState:
    """Check and propose `request` as the leader; wait until it is applied here.

    While another change is still being applied (a concurrent join, a retry of this very
    request, a new leader's first entry) it waits and tries again until the deadline:
    the retry re-checks the membership, so a retried request finds itself done."""
    wait = timeout if timeout is not None else node.settings.membership_timeout_s
    deadline = node.clock.now() + wait
    while True:
        if not node._leadership.is_leader:
            raise NotLeader(node._leadership.leader_id)
        prepared = _prepare_change(node, request)
        if isinstance(prepared, ConfState):
            return prepared
        request_id, change = prepared
        remaining = deadline - node.clock.now()
        try:
            return await node._requests.propose_conf_change(request_id, change, max(remaining, 0.0))
        except ConfChangePending as error:
            if node.clock.now() + node.settings.tick_interval_s >= deadline:
                raise MembershipError("busy", str(error)) from error
        await node.clock.sleep(node.settings.tick_interval_s)


def _prepare_change(node: Node, request: MemberRequest) -> ConfState | tuple[RequestId, ConfChange]:
    """The change to propose for `request`, or the current membership if it is done
    already. Raises MembershipError / NotCaughtUp when it cannot be made."""
    rawnode = node._core()
    conf_state = rawnode.conf_state()
    node_id = request.node_id
    if node_id == NO_NODE or node_id < 0:
        raise MembershipError("invalid", f"node id {node_id} is not valid")
    peers: dict[NodeId, str] = {}
    if request.action is MemberAction.ADD_LEARNER:
        if not request.address:
            raise MembershipError("invalid", "adding a learner needs its address")
        if node_id in node._removed:
            raise MembershipError(
                "invalid",
                f"node id {node_id} was removed from this cluster and is never reused "
                "(its old machine could come back believing it is a member): give the new "
                "node a new id",
            )
        if node_id in conf_state.voters | conf_state.learners:
            if node._peers.get(node_id) == request.address:
                # Already a member at that address: a retried join, done already.
                return conf_state
            raise MembershipError(
                "invalid",
                f"node {node_id} is already a member at {node._peers.get(node_id)!r}",
            )
        peers[node_id] = request.address
        change_type = ConfChangeType.ADD_LEARNER_NODE
    elif request.action is MemberAction.PROMOTE:
        if node_id in conf_state.voters:
            return conf_state  # a retried request: already done
        if node_id not in conf_state.learners:
            raise MembershipError("invalid", f"node {node_id} is not a learner")
        _check_promotable(node, node_id)
        change_type = ConfChangeType.ADD_NODE
    else:
        if node_id not in conf_state.voters | conf_state.learners:
            raise MembershipError("invalid", f"node {node_id} is not a member")
        change_type = ConfChangeType.REMOVE_NODE
    request_id = node._requests.next_request()
    change = ConfChange(
        changes=(ConfChangeSingle(change_type, node_id),),
        context=encode_conf_change_context(request_id, peers),
    )
    return request_id, change


def _check_promotable(node: Node, learner: NodeId) -> None:
    """Raise NotCaughtUp unless `learner` can take its part as a voter at once: the
    leader heard from it within an election timeout, and its log is close to the
    leader's both in entries and as a fraction of it (NodeSettings.promote_*)."""
    settings = node.settings
    match = node._core().match_index(learner) or 0
    last_index = node._core().last_index()
    heard = node._last_heard.get(learner)
    if heard is None:
        raise NotCaughtUp(
            f"learner {learner} has never been heard from: check that it runs and is "
            f"reachable at {node._peers.get(learner, 'its address')!r}"
        )
    silent_s = node.clock.now() - heard
    if silent_s > node._election_timeout_s():
        raise NotCaughtUp(f"learner {learner} has not been heard from for {silent_s:.1f}s")
    lag = last_index - match
    if lag > settings.promote_max_lag_entries:
        raise NotCaughtUp(
            f"learner {learner} lags the leader by {lag} entries "
            f"(limit {settings.promote_max_lag_entries})"
        )
    if match < last_index * settings.promote_min_log_fraction:
        raise NotCaughtUp(
            f"learner {learner} holds the log up to index {match} of the leader's "
            f"{last_index} (at least {settings.promote_min_log_fraction:.0%} needed)"
        )


def not_leader_response(node: Node) -> MemberResponse:
    leader = node._leadership.leader_id
    return MemberResponse(
        ok=False,
        error="not_leader",
        message=f"node {node.id} is not the leader",
        leader_id=leader,
        leader_address=node._peers.get(leader, "") if leader != NO_NODE else "",
        members=tuple(sorted(node._peers.items())),
    )


def member_error(node: Node, code: str, message: str) -> MemberResponse:
    return MemberResponse(
        ok=False,
        error=code,
        message=message,
        leader_id=node._leadership.leader_id,
        leader_address=node._peers.get(node._leadership.leader_id, ""),
    )
