"""`SessionTable`: exactly-once writes (Raft thesis §6.3), kept in `AppData`.

A client numbers its writes 1, 2, ... and retries a write with the same number. The table
holds, per client id, the last sequence applied, the log index of that command and its
encoded result, so a retry is answered from the table instead of applied again.

Bounded: at most `max_clients` sessions. Recording a new client when the table is full
forgets the client whose last write has the smallest log index: the first key of the
session-age space (`layout.py`). Log indexes are the same on every replica and unique per
command, so every replica forgets the same client (revisions would not do: commands that
change nothing share one). A forgotten client's retry applies again; a client that stays
silent for more than `max_clients` other clients' writes should not retry.

Invariants: the session-age space holds exactly one key per session, naming the session's
index; "meta:sessions" holds the number of sessions (absent: 0).
"""

from __future__ import annotations

import msgspec

from raftkv.kv.layout import (
    SESSION_AGE_PREFIX,
    SESSIONS_META_KEY,
    SessionRecord,
    SessionsMeta,
    client_of_session_age_key,
    decode_record,
    encode_record,
    prefix_successor,
    session_age_key,
    session_key,
)
from raftkv.kv.staging import StagedWrites

_SESSION_DECODER = msgspec.msgpack.Decoder(SessionRecord)
_META_DECODER = msgspec.msgpack.Decoder(SessionsMeta)


class SessionTable:
    def __init__(self, staged: StagedWrites, max_clients: int) -> None:
        self._staged = staged
        self._max_clients = max_clients
        data = staged.get(SESSIONS_META_KEY)
        self._count = (
            0 if data is None else decode_record(_META_DECODER, SESSIONS_META_KEY, data).count
        )

    def last(self, client_id: str) -> SessionRecord | None:
        """The client's last applied write, if the table remembers the client."""
        stored = session_key(client_id)
        data = self._staged.get(stored)
        return None if data is None else decode_record(_SESSION_DECODER, stored, data)

    def record(self, client_id: str, sequence: int, index: int, result: bytes) -> None:
        """Remember `result` as the client's write `sequence`, applied at log `index`."""
        previous = self.last(client_id)
        if previous is not None:
            self._staged.delete(session_age_key(previous.index, client_id))
        else:
            # More than one only after max_clients was lowered.
            while self._count >= self._max_clients:
                self._forget_oldest()
            self._count += 1
            self._staged.put(SESSIONS_META_KEY, encode_record(SessionsMeta(self._count)))
        self._staged.put(session_age_key(index, client_id), b"")
        self._staged.put(
            session_key(client_id), encode_record(SessionRecord(sequence, index, result))
        )

    def _forget_oldest(self) -> None:
        ages = self._staged.scan(SESSION_AGE_PREFIX, prefix_successor(SESSION_AGE_PREFIX))
        oldest = next(ages)[0]
        self._staged.delete(oldest)
        self._staged.delete(session_key(client_of_session_age_key(oldest)))
        self._count -= 1
