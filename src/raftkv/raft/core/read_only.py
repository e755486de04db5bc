"""ReadIndex requests waiting for a heartbeat quorum (Raft thesis §6.4).

A leader serving a linearizable read records its commit index as the read index, then
confirms it is still the leader by a round of heartbeats carrying the request's context.
Once a quorum acknowledges that round, every request queued before (and including) the
acknowledged one may be served at its read index: a later round confirms earlier ones too.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from raftkv.raft.core.types import Message, NodeId, ReadOnlyOption


@dataclass(slots=True)
class ReadIndexStatus:
    request: Message
    index: int
    acks: dict[NodeId, bool] = field(default_factory=dict)


class ReadOnly:
    """Pending safe reads in arrival order. Contexts are unique among pending requests."""

    def __init__(self, option: ReadOnlyOption) -> None:
        self.option = option
        self.pending: dict[bytes, ReadIndexStatus] = {}
        self.queue: list[bytes] = []

    def add_request(self, index: int, request: Message) -> None:
        context = request.entries[0].data
        if context in self.pending:
            return
        self.pending[context] = ReadIndexStatus(request=request, index=index)
        self.queue.append(context)

    def receive_ack(self, node_id: NodeId, context: bytes) -> dict[NodeId, bool] | None:
        status = self.pending.get(context)
        if status is None:
            return None
        status.acks[node_id] = True
        return status.acks

    def advance(self, context: bytes) -> list[ReadIndexStatus]:
        """Remove and return every request up to and including `context`."""
        if context not in self.pending:
            return []
        position = self.queue.index(context)
        released = [self.pending.pop(item) for item in self.queue[: position + 1]]
        del self.queue[: position + 1]
        return released

    def last_pending_context(self) -> bytes:
        return self.queue[-1] if self.queue else b""

    def reset(self) -> None:
        self.pending.clear()
        self.queue.clear()
