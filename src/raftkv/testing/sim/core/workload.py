"""Clients of the simulated KV store, and the history they record.

Each client is a sequential process: one operation at a time, on a random key. It picks a
node (the current leader most of the time, a random live node otherwise) and sticks to it
until an operation there fails or times out.

- A write (`put`, sometimes `delete`) is proposed on that node; it completes when that same
  node applies the entry carrying the client's (client, request) pair. If the proposal is
  dropped the operation never happened; if the node crashes or the client times out, the
  outcome is unknown (it may still take effect later) and is recorded so.
- A read calls `read_index` on the node and completes when the node has applied up to the
  ReadState's index; the value is read from that node's state machine at that moment. A
  read that never completes constrains nothing and is left out of the history.

Times in the history are the simulator's event numbers: each call and each completion is
an event of its own (`client c3.17 ...` in the trace), so "returned before called" is exact
and every time in a linearizability report can be found in the trace as `#<time>`.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass

from raftkv.raft.core.errors import ProposalDropped
from raftkv.raft.core.types import NodeId
from raftkv.testing.linearizability import Operation, OpKind
from raftkv.testing.sim.core.node import SimNode
from raftkv.testing.sim.core.state_machine import Command

__all__ = ["LIVENESS_CLIENT", "Workload"]

# The client id of the liveness phase's marker write (clients are numbered from 1).
LIVENESS_CLIENT = 0


@dataclass(slots=True)
class _Pending:
    client: int
    request: int
    kind: OpKind
    key: str
    value: str | None
    call_time: int
    node: NodeId
    incarnation: int
    deadline_step: int


class Workload:
    def __init__(
        self,
        rng: random.Random,
        event: Callable[[str], int],
        *,
        clients: int,
        keys: int,
        rate: float,
        read_share: float,
        timeout_steps: int,
    ) -> None:
        self.rng = rng
        # Records one simulator event and returns its number (the history's clock).
        self.event = event
        self.clients = list(range(1, clients + 1))
        self.keys = [f"k{index}" for index in range(keys)]
        self.rate = rate
        self.read_share = read_share
        self.timeout_steps = timeout_steps
        self.next_request = dict.fromkeys(self.clients, 0)
        self.pending: dict[int, _Pending] = {}
        # The node each client talks to until it fails it.
        self.targets: dict[int, SimNode] = {}
        # Pending reads by their read_index context.
        self.reads: dict[bytes, _Pending] = {}
        self.history: list[Operation] = []
        self.issued = 0
        self.completed = 0
        self.unknown = 0
        self.failed = 0
        self.enabled = True

    # -- issuing ---------------------------------------------------------------------------

    def on_tick(self, now_step: int, nodes: list[SimNode], leader: SimNode | None) -> None:
        """Let idle clients start operations (each call is an event) and time out others."""
        for client in self.clients:
            pending = self.pending.get(client)
            if pending is not None:
                if now_step >= pending.deadline_step:
                    self._give_up(pending)
                continue
            if not self.enabled or not nodes or self.rng.random() >= self.rate:
                continue
            # Clients stick to the node that last served them, as real clients cache the
            # leader: that is how a client keeps talking to a deposed leader.
            target = self.targets.get(client)
            if target is None or target.rawnode is None:
                if leader is not None and self.rng.random() < 0.7:
                    target = leader
                else:
                    target = self.rng.choice(nodes)
                self.targets[client] = target
            self._issue(client, target, now_step)

    def _issue(
        self,
        client: int,
        node: SimNode,
        now_step: int,
    ) -> None:
        rawnode = node.rawnode
        assert rawnode is not None
        self.next_request[client] += 1
        request = self.next_request[client]
        key = self.rng.choice(self.keys)
        roll = self.rng.random()
        if roll < self.read_share:
            kind, value = OpKind.GET, None
        elif roll < self.read_share + (1 - self.read_share) * 0.1:
            kind, value = OpKind.DELETE, None
        else:
            kind, value = OpKind.PUT, f"{client}.{request}"
        label = f"c{client}.{request} {kind.value} {key}" + (f"={value}" if value else "")
        time = self.event(f"client {label} at n{node.id}")
        pending = _Pending(
            client,
            request,
            kind,
            key,
            value,
            time,
            node.id,
            node.incarnation,
            now_step + self.timeout_steps,
        )
        self.issued += 1
        try:
            if kind is OpKind.GET:
                context = f"{client}.{request}".encode()
                rawnode.read_index(context)
                self.reads[context] = pending
            else:
                op = "put" if kind is OpKind.PUT else "delete"
                command = Command(client, request, op, key, value)
                rawnode.propose(command.encode())
        except ProposalDropped as error:
            # Nothing was appended or forwarded: the operation did not happen.
            self.failed += 1
            self.targets.pop(client, None)
            self.event(f"client c{client}.{request} dropped: {error.reason}")
            return
        self.pending[client] = pending

    # -- completing ------------------------------------------------------------------------

    def on_apply(self, node: SimNode, command: Command) -> None:
        """`node` applied `command` (taking effect): complete the write it answers."""
        pending = self.pending.get(command.client)
        if (
            pending is None
            or pending.request != command.request
            or pending.node != node.id
            or pending.incarnation != node.incarnation
        ):
            return
        del self.pending[command.client]
        self.completed += 1
        time = self.event(f"client c{pending.client}.{pending.request} ok at n{node.id}")
        self.history.append(
            Operation(
                pending.kind,
                pending.key,
                pending.call_time,
                time,
                value=pending.value,
                client=pending.client,
            )
        )

    def on_read(self, node: SimNode, context: bytes, value: str | None) -> None:
        pending = self.reads.pop(context, None)
        if pending is None or pending.node != node.id or pending.incarnation != node.incarnation:
            return
        if self.pending.get(pending.client) is not pending:
            return
        del self.pending[pending.client]
        self.completed += 1
        time = self.event(
            f"client c{pending.client}.{pending.request} read {value!r} at n{node.id}"
        )
        self.history.append(
            Operation(
                OpKind.GET,
                pending.key,
                pending.call_time,
                time,
                output=value,
                client=pending.client,
            )
        )

    def read_key(self, context: bytes) -> str | None:
        pending = self.reads.get(context)
        return None if pending is None else pending.key

    def on_crash(self, node: SimNode) -> None:
        for pending in list(self.pending.values()):
            if pending.node == node.id and pending.incarnation == node.incarnation:
                self._give_up(pending)

    def _give_up(self, pending: _Pending) -> None:
        del self.pending[pending.client]
        self.targets.pop(pending.client, None)
        if pending.kind is OpKind.GET:
            self.reads.pop(f"{pending.client}.{pending.request}".encode(), None)
            self.event(f"client c{pending.client}.{pending.request} read abandoned")
            return
        self.unknown += 1
        self.event(f"client c{pending.client}.{pending.request} outcome unknown")
        self.history.append(
            Operation(
                pending.kind,
                pending.key,
                pending.call_time,
                None,
                value=pending.value,
                client=pending.client,
            )
        )

    def finish(self) -> None:
        """End of the run: whatever is still pending has an unknown outcome."""
        for pending in list(self.pending.values()):
            self._give_up(pending)

    def summary(self) -> str:
        return json.dumps(
            {
                "issued": self.issued,
                "completed": self.completed,
                "unknown": self.unknown,
                "dropped": self.failed,
            },
            sort_keys=True,
        )
