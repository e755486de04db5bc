"""`LeadershipTransfers`: handing leadership to another voter, from any member.

On the leader a transfer asks the core to hand over (`RawNode.transfer_leader`) and waits
until the cluster has another leader. On a follower it goes to the leader this node knows
as a `MemberAction.TRANSFER_LEADER` request — the way membership changes are forwarded —
and the leader's refusals come back as the errors the leader raises itself:
- NotLeader (with the hint) when no leader is known or the one asked no longer leads;
- InvalidArgument when the target is not a voter;
- TimeoutError when no other leader was seen in time (the transfer may still happen);
  a transfer to the leader itself is done at once (it already leads);
- ProposalDropped when nothing was done (no other voter, the leader is stopping);
- MembershipError "not_sent" / "unreachable" from the transport (see Membership.ask_leader).

A stopping leader hands over with `hand_over`, which also stops waiting once waiting cannot
help: the core gave the transfer up, or the campaign it started found no leader within an
election timeout (the transferee is stopping too, as when a whole cluster is stopped).

Invariant: a node only ever asks its own core to transfer while it leads; a forwarded
request never travels further than the leader (a leader that lost leadership meanwhile
answers not_leader, and the requester's caller decides whether to retry).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from raftkv.raft.clock import Clock
from raftkv.raft.core.errors import InvalidArgument, NotLeader, ProposalDropped
from raftkv.raft.core.rawnode import RawNode
from raftkv.raft.core.types import NO_NODE, NodeId, StateRole
from raftkv.raft.driver.errors import Stopped
from raftkv.raft.driver.leadership import Leadership, best_transferee
from raftkv.raft.driver.membership import Membership
from raftkv.raft.driver.settings import NodeSettings
from raftkv.raft.transport.base import MemberAction, MemberRequest, MemberResponse

__all__ = ["LeadershipTransfers"]


class LeadershipTransfers:
    def __init__(
        self,
        *,
        node_id: NodeId,
        settings: NodeSettings,
        core: Callable[[], RawNode],
        wake: asyncio.Event,
        leadership: Leadership,
        membership: Membership,
        clock: Clock,
    ) -> None:
        self._node_id = node_id
        self._settings = settings
        self._core = core
        # Set after asking the core for something, so the loop takes its next Ready.
        self._wake = wake
        self._leadership = leadership
        self._membership = membership
        self._clock = clock

    async def transfer(self, to: NodeId | None, wait: float) -> NodeId:
        """Hand leadership to `to` (None: the most caught-up other voter), here or through
        the leader; the new leader's id."""
        if self._core().soft_state().role is StateRole.LEADER:
            return await self._transfer_as_leader(to, wait)
        request = MemberRequest(MemberAction.TRANSFER_LEADER, NO_NODE if to is None else to)
        response = await self._membership.ask_leader(request, wait)
        if response.ok:
            return response.leader_id
        match response.error:
            case "not_leader":
                raise NotLeader(response.leader_id)
            case "invalid":
                raise InvalidArgument(response.message)
            case "timeout":
                raise TimeoutError(response.message)
            case _:  # "busy", "stopped": nothing was done
                raise ProposalDropped(response.message)

    async def hand_over(self, to: NodeId, wait: float) -> None:
        """Stopping as leader: hand leadership to `to` and wait, at most `wait` seconds,
        until another member leads; or, sooner, until waiting is pointless: we still lead
        and the core gave the transfer up (`to` did not take over within an election
        timeout), or we stepped down and no leader came within an election timeout of it.
        TimeoutError after `wait`."""
        rawnode = self._core()
        rawnode.transfer_leader(to)
        self._wake.set()
        leadership = self._leadership
        own = self._node_id
        clock = self._clock
        election_timeout = self._settings.election_timeout_s
        stepped_down_at: list[float] = []

        def over() -> bool:
            if leadership.leader_id not in (NO_NODE, own):
                return True
            if rawnode.soft_state().role is StateRole.LEADER:
                return rawnode.lead_transferee() == NO_NODE
            if not stepped_down_at:
                stepped_down_at.append(clock.now())
            return clock.now() - stepped_down_at[0] >= election_timeout

        await leadership.wait_for(over, wait)

    async def answer(self, request: MemberRequest) -> MemberResponse:
        """A member forwards a transfer to us: make it if we lead, say why not otherwise."""
        membership = self._membership
        to = None if request.node_id == NO_NODE else request.node_id
        try:
            leader = await self._transfer_as_leader(to, self._settings.election_timeout_s * 2)
        except NotLeader:
            return membership.not_leader_response()
        except InvalidArgument as error:
            return membership.error_response("invalid", str(error))
        except TimeoutError as error:
            return membership.error_response("timeout", str(error))
        except (ProposalDropped, Stopped) as error:
            return membership.error_response("busy", str(error))
        return MemberResponse(ok=True, leader_id=leader)

    async def _transfer_as_leader(self, to: NodeId | None, wait: float) -> NodeId:
        rawnode = self._core()
        if rawnode.soft_state().role is not StateRole.LEADER:
            raise NotLeader(self._leadership.leader_id)
        if to is None:
            to = best_transferee(rawnode, self._node_id)
            if to is None:
                raise ProposalDropped("no other voter to transfer leadership to")
        elif to == self._node_id:
            # Already where it was asked to go (the core ignores a transfer to itself, so
            # waiting for another leader would time out): done, and a retry is a no-op.
            return to
        rawnode.transfer_leader(to)
        self._wake.set()
        leadership = self._leadership
        own = self._node_id
        await leadership.wait_for(lambda: leadership.leader_id not in (NO_NODE, own), wait)
        return leadership.leader_id
