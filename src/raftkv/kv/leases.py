"""`LeaseTable`: the replicated part of leases — which leases exist, their TTLs, the time
each had left at its last renewal or checkpoint, and the keys attached to each.

It is state-machine data like the rest of the store (staged with the request that changes
it, committed with the applied index, carried by snapshots). Time itself is not in it: the
countdown of each lease runs on every node's own clock (`raftkv.kv.lease_timers`), started
when the node applies the entry that set the lease's remaining time. Only the leader acts on
the countdown (`raftkv.kv.lease_keeper`), by proposing a `LeaseExpire`.

Layout (`raftkv.kv.layout`): b"l" id -> LeaseRecord; b"L" id escape(key) -> b"" for each
key attached to the lease. The table keeps one number in memory, the count of leases (read
once at open with `load`: O(leases), bounded by `max_leases`).
"""

from __future__ import annotations

from collections.abc import Iterator

import msgspec

from raftkv.kv.errors import LeaseExists, LeaseNotFound, LimitExceeded
from raftkv.kv.layout import (
    LEASE_PREFIX,
    LeaseRecord,
    decode_record,
    encode_record,
    escaped_key_of_attachment,
    lease_attachment_key,
    lease_id_of,
    lease_key,
    lease_keys_prefix,
    prefix_successor,
)
from raftkv.kv.settings import KvSettings
from raftkv.kv.staging import StagedWrites

_RECORD_DECODER = msgspec.msgpack.Decoder(LeaseRecord)
_MS_PER_SECOND = 1000


class LeaseTable:
    def __init__(self, staged: StagedWrites, settings: KvSettings) -> None:
        self.staged = staged
        self.settings = settings
        # Invariant once known: the number of lease records, staged writes included
        # (counted on first use, or by `load`).
        self._known_count: int | None = None

    def __len__(self) -> int:
        return self._count

    @property
    def _count(self) -> int:
        if self._known_count is None:
            self._known_count = sum(1 for _ in self.records())
        return self._known_count

    @_count.setter
    def _count(self, count: int) -> None:
        self._known_count = count

    def load(self) -> list[tuple[int, LeaseRecord]]:
        """Every lease (one scan), counting them on the way."""
        records = list(self.records())
        self._known_count = len(records)
        return records

    def get(self, lease_id: int) -> LeaseRecord | None:
        stored = lease_key(lease_id)
        data = self.staged.get(stored)
        return None if data is None else decode_record(_RECORD_DECODER, stored, data)

    def records(self) -> Iterator[tuple[int, LeaseRecord]]:
        """Every lease, by increasing id."""
        for stored, data in self.staged.scan(LEASE_PREFIX, prefix_successor(LEASE_PREFIX)):
            yield lease_id_of(stored), decode_record(_RECORD_DECODER, stored, data)

    def grant(self, lease_id: int, ttl: int, index: int) -> LeaseRecord:
        """Create the lease (TTL raised to min_lease_ttl_s) at log `index`. Raises
        LeaseExists or LimitExceeded (max_leases) having staged nothing."""
        if self.get(lease_id) is not None:
            raise LeaseExists(lease_id)
        if self._count >= self.settings.max_leases:
            raise LimitExceeded("leases", self._count + 1, "max_leases", self.settings.max_leases)
        ttl = max(ttl, self.settings.min_lease_ttl_s)
        record = LeaseRecord(ttl=ttl, remaining_ms=ttl * _MS_PER_SECOND, renewed_index=index)
        self.staged.put(lease_key(lease_id), encode_record(record))
        self._count += 1
        return record

    def keep_alive(self, lease_id: int, index: int) -> LeaseRecord:
        """Renew the lease to its full TTL as of log `index`; LeaseNotFound if absent."""
        record = self.get(lease_id)
        if record is None:
            raise LeaseNotFound(lease_id)
        renewed = LeaseRecord(record.ttl, record.ttl * _MS_PER_SECOND, index)
        self.staged.put(lease_key(lease_id), encode_record(renewed))
        return renewed

    def checkpoint(
        self, lease_id: int, remaining_ms: int, renewed_index: int
    ) -> LeaseRecord | None:
        """Record the time the lease has left (never more than its TTL); None, changing
        nothing, if the lease is gone or was renewed after the leader read its timer (its
        renewed_index is no longer `renewed_index`)."""
        record = self.get(lease_id)
        if record is None or record.renewed_index != renewed_index:
            return None
        remaining_ms = min(remaining_ms, record.ttl * _MS_PER_SECOND)
        updated = LeaseRecord(record.ttl, remaining_ms, record.renewed_index)
        self.staged.put(lease_key(lease_id), encode_record(updated))
        return updated

    def attached(self, lease_id: int) -> list[bytes]:
        """The escaped keys attached to the lease, in key order."""
        prefix = lease_keys_prefix(lease_id)
        return [
            escaped_key_of_attachment(stored)
            for stored, _ in self.staged.scan(prefix, prefix_successor(prefix))
        ]

    def remove(self, lease_id: int) -> list[bytes]:
        """Delete the lease and its attachments; the escaped keys that were attached (the
        caller deletes them). LeaseNotFound, having staged nothing, if absent."""
        if self.get(lease_id) is None:
            raise LeaseNotFound(lease_id)
        escaped_keys = self.attached(lease_id)
        for escaped in escaped_keys:
            self.staged.delete(lease_attachment_key(lease_id, escaped))
        self.staged.delete(lease_key(lease_id))
        self._count -= 1
        return escaped_keys

    def attach(self, lease_id: int, escaped_key: bytes) -> None:
        self.staged.put(lease_attachment_key(lease_id, escaped_key), b"")

    def detach(self, lease_id: int, escaped_key: bytes) -> None:
        self.staged.delete(lease_attachment_key(lease_id, escaped_key))

    def restore_count(self, count: int) -> None:
        """After the staged writes are rolled back to a savepoint: the count then."""
        self._count = count
