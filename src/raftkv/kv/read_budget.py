"""`ReadBudget`: what one request's reads may still scan and answer (STYLE: a limit on
everything). Each read of the MVCC store (raftkv.kv.mvcc) and each count (key_count) counts
what it scans against it; each key-value answered counts against its byte limit."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TypeVar

from raftkv.kv.commands import MvccKeyValue
from raftkv.kv.errors import ScanTooLarge

_ItemT = TypeVar("_ItemT")


# What a key-value costs in an answer besides its key and value: its revisions, version
# and lease, and the JSON around them (ReadBudget).
KV_OVERHEAD_BYTES = 80


@dataclass(slots=True)
class ReadBudget:
    """What one request's reads may still do (STYLE: a limit on everything). Unbounded by
    default: a txn applied through the log must answer alike on every member.

    - `max_scan_entries`: MVCC entries its ranges may scan in all (one per key in the range
      at the current revision, counted or answered; one per stored version at a past
      revision); one more raises ScanTooLarge naming `setting`.
    - `max_response_bytes`: the key-values answered, each costing its key and value plus
      KV_OVERHEAD_BYTES. The first key-value is always answered (a value at the limit can
      still be read); once one does not fit, every range after it in the request answers
      none, with `more` set and `count` still exact.
    """

    max_scan_entries: int | None = None
    max_response_bytes: int | None = None
    setting: str = "max_scan_entries"
    scanned: int = 0
    response_bytes: int = 0
    answered: int = 0
    # Set once a key-value did not fit: nothing more is answered.
    full: bool = False

    def scanning(self, items: Iterator[_ItemT]) -> Iterator[_ItemT]:
        """`items`, each counted against max_scan_entries as it is read."""
        if self.max_scan_entries is None:
            return items
        return self._counted(items, self.max_scan_entries)

    def _counted(self, items: Iterator[_ItemT], limit: int) -> Iterator[_ItemT]:
        for item in items:
            self.scanned += 1
            if self.scanned > limit:
                raise ScanTooLarge(self.setting, limit)
            yield item

    def take(self, kv: MvccKeyValue) -> bool:
        """Whether `kv` fits in the answer (then it is counted in)."""
        size = len(kv.key) + len(kv.value) + KV_OVERHEAD_BYTES
        limit = self.max_response_bytes
        over = limit is not None and self.answered > 0 and self.response_bytes + size > limit
        if self.full or over:
            self.full = True
            return False
        self.response_bytes += size
        self.answered += 1
        return True
