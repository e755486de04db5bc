"""Member client URLs published through the log (`PublishMember`, `MemberDirectory`)."""

from __future__ import annotations

import msgspec
from kv_helpers import log_command

from raftkv.kv import KvStateMachine, PublishMember, PublishMemberResponse, Put, Range
from raftkv.kv.commands import KvCommand, encode_command
from raftkv.kv.errors import InvalidRequest, LimitExceeded
from raftkv.kv.layout import MEMBER_PREFIX
from raftkv.kv.validation import MAX_CLIENT_URL_BYTES
from raftkv.raft.storage.memory import MemoryAppData


def machine() -> KvStateMachine:
    return KvStateMachine(MemoryAppData())


def test_published_urls_are_listed_and_replaced_without_a_revision() -> None:
    kv = machine()
    results = kv.apply(
        [
            log_command(1, Put(b"a", b"1")),
            log_command(2, PublishMember(1, "http://127.0.0.1:8080")),
            log_command(3, PublishMember(2, "http://127.0.0.1:8081")),
            log_command(4, PublishMember(1, "http://10.0.0.1:8080")),
        ],
        4,
        1,
    )
    assert results[1] == PublishMemberResponse(results[0].header)  # type: ignore[union-attr]
    assert kv.current_revision() == 2  # only the put made a revision
    assert kv.member_client_urls() == {1: "http://10.0.0.1:8080", 2: "http://127.0.0.1:8081"}
    # Outside the user key space: a range over every key does not see them.
    assert [item.key for item in kv.range(Range(b"\0", b"\0")).kvs] == [b"a"]


def test_urls_travel_in_snapshots() -> None:
    kv = machine()
    kv.apply([log_command(1, PublishMember(3, "http://h:1"))], 1, 1)
    other = machine()
    other.restore(kv.snapshot(), 1, 1)
    assert other.member_client_urls() == {3: "http://h:1"}
    assert other.state_hash() == kv.state_hash()


def test_bad_publications_are_refused_and_change_nothing() -> None:
    kv = machine()
    results = kv.apply(
        [
            log_command(1, PublishMember(0, "http://h:1")),
            log_command(2, PublishMember(1, "x" * (MAX_CLIENT_URL_BYTES + 1))),
            log_command(3, PublishMember(-1, "http://h:1")),
        ],
        3,
        1,
    )
    assert isinstance(results[0], InvalidRequest)
    assert isinstance(results[1], LimitExceeded)
    assert isinstance(results[2], InvalidRequest)
    assert kv.member_client_urls() == {}


def test_an_etcd_url_is_published_beside_the_client_url_and_travels_in_snapshots() -> None:
    kv = machine()
    kv.apply(
        [
            log_command(1, PublishMember(1, "http://h:8080", etcd_url="http://h:2379")),
            log_command(2, PublishMember(2, "http://h:8081")),
        ],
        2,
        1,
    )
    records = kv.member_records()
    assert (records[1].client_url, records[1].etcd_url) == ("http://h:8080", "http://h:2379")
    assert records[2].etcd_url == ""
    other = machine()
    other.restore(kv.snapshot(), 2, 1)
    assert other.member_records() == records
    refused = kv.apply([log_command(3, PublishMember(3, "u", etcd_url="x" * 10_000))], 3, 1)
    assert isinstance(refused[0], LimitExceeded)


def test_without_an_etcd_url_command_and_record_keep_their_earlier_bytes() -> None:
    """Members of the version before etcd_url existed hold, and hash, the same bytes for
    the same log: the command encodes without the field, the record as a one-field array."""
    command = encode_command(KvCommand(PublishMember(1, "http://h:1")))
    assert b"etcd_url" not in command
    kv = machine()
    kv.apply([log_command(1, PublishMember(1, "http://h:1"))], 1, 1)
    stored = dict(kv.app.scan(MEMBER_PREFIX, MEMBER_PREFIX + b"\xff"))
    assert list(stored.values()) == [msgspec.msgpack.encode(["http://h:1"])]
