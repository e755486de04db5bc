"""`MemberDirectory`: where clients reach each member, replicated through the log.

A node publishes its client URL with a `PublishMember` command once it runs (etcd publishes
member attributes the same way), so every member, and a node that joins later through a
snapshot, can answer `/v1/cluster` with every member's client URL. Records live under
`layout.MEMBER_PREFIX`, beside the MVCC data but outside the user key space: they create no
revision and no watch event. A removed member's record stays (a few bytes per member id
ever used); readers list only current members.
"""

from __future__ import annotations

import msgspec

from raftkv.kv.commands import PublishMember
from raftkv.kv.layout import (
    MEMBER_PREFIX,
    MemberRecord,
    decode_integer,
    decode_record,
    encode_member_record,
    member_key,
)
from raftkv.kv.staging import StagedWrites
from raftkv.raft.storage.base import AppData

_MEMBER_DECODER = msgspec.msgpack.Decoder(MemberRecord)


class MemberDirectory:
    def __init__(self, staged: StagedWrites) -> None:
        self.staged = staged

    def publish(self, request: PublishMember) -> None:
        """Stage the member's record (validated by the caller)."""
        record = MemberRecord(request.client_url, request.etcd_url)
        self.staged.put(member_key(request.member_id), encode_member_record(record))

    def client_urls(self) -> dict[int, str]:
        """Every published client URL by member id, as committed."""
        return {member: record.client_url for member, record in self.records().items()}

    def records(self) -> dict[int, MemberRecord]:
        """Everything each member published, by member id, as committed."""
        return read_member_records(self.staged.app)


def read_client_urls(app: AppData) -> dict[int, str]:
    return {member: record.client_url for member, record in read_member_records(app).items()}


def read_member_records(app: AppData) -> dict[int, MemberRecord]:
    end = MEMBER_PREFIX[:-1] + bytes([MEMBER_PREFIX[-1] + 1])
    records: dict[int, MemberRecord] = {}
    for key, data in app.scan(MEMBER_PREFIX, end):
        records[decode_integer(key[len(MEMBER_PREFIX) :])] = decode_record(
            _MEMBER_DECODER, key, data
        )
    return records
