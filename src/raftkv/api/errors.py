"""The answer of every refusal: `{"error": {"code", "message", ...}}`."""

from __future__ import annotations

import msgspec

__all__ = ["ErrorAnswer", "ErrorDetail"]


class ErrorDetail(msgspec.Struct, frozen=True, omit_defaults=True):
    code: str
    message: str
    # `compacted` only: the revision history was compacted at, and the oldest revision a
    # read or a watch can still start from: compact_revision itself, but for a watch on a
    # store last compacted by a raftkv that kept no events of that revision, the one after.
    compact_revision: int | None = None
    oldest_revision: int | None = None


class ErrorAnswer(msgspec.Struct, frozen=True):
    error: ErrorDetail
