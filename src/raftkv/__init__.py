"""raftkv: a Raft-replicated key-value store and embeddable Raft library."""

__all__: list[str] = []
