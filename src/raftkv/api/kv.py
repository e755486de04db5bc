"""The KV routes' requests and answers: put, get, delete, range, txn, compact (and the
seed's `POST /set`)."""

from __future__ import annotations

from typing import Literal

import msgspec

from raftkv.api.keys import Header, Int64, KeyValueAnswer

__all__ = [
    "CompactAnswer",
    "CompactBody",
    "CompareBody",
    "CompareOp",
    "CompareTarget",
    "DeleteAnswer",
    "DeleteOpAnswer",
    "DeleteOpBody",
    "GetAnswer",
    "OpAnswer",
    "OpBody",
    "PutAnswer",
    "PutBody",
    "PutOpAnswer",
    "PutOpBody",
    "RangeAnswer",
    "RangeOpAnswer",
    "RangeOpBody",
    "SetBody",
    "TxnAnswer",
    "TxnBody",
]

CompareTarget = Literal["value", "version", "create", "mod", "lease"]
CompareOp = Literal["=", "!=", "<", ">"]

# -- request bodies --------------------------------------------------------------------------


class PutBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """`PUT /v1/kv/{key}`. With `client_id` and `sequence` (>= 1, increasing per client) a
    retry after an unknown outcome returns the first result instead of applying twice."""

    value: str
    lease: Int64 = 0
    prev_kv: bool = False
    client_id: str = ""
    sequence: Int64 = 0


class SetBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """`POST /set`: the seed's spelling of a put."""

    key: str
    value: str


class CompactBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    revision: Int64


class CompareBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """`target` of `key` compared with `value`: a string for "value", an integer for the
    others ("create"/"mod" are create_revision/mod_revision). With `range_end` (or
    `prefix`, as a range op takes them) it compares every key in the range: it holds when
    each live key there satisfies it; a range with none compares as a missing key."""

    key: str
    target: CompareTarget
    op: CompareOp
    value: str | int
    range_end: str = ""
    prefix: bool = False


class RangeOpBody(msgspec.Struct, tag="range", tag_field="op", forbid_unknown_fields=True):
    key: str
    range_end: str = ""
    prefix: bool = False
    limit: Int64 = 0
    revision: Int64 = 0
    keys_only: bool = False
    count_only: bool = False


class PutOpBody(msgspec.Struct, tag="put", tag_field="op", forbid_unknown_fields=True):
    key: str
    value: str
    lease: Int64 = 0
    prev_kv: bool = False


class DeleteOpBody(msgspec.Struct, tag="delete", tag_field="op", forbid_unknown_fields=True):
    key: str
    range_end: str = ""
    prefix: bool = False
    prev_kv: bool = False


OpBody = RangeOpBody | PutOpBody | DeleteOpBody


class TxnBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """`POST /v1/txn`: if every compare holds run `success`, else `failure`."""

    compares: list[CompareBody] = msgspec.field(default_factory=list)
    success: list[OpBody] = msgspec.field(default_factory=list)
    failure: list[OpBody] = msgspec.field(default_factory=list)
    client_id: str = ""
    sequence: Int64 = 0


# -- answers ---------------------------------------------------------------------------------


class PutAnswer(msgspec.Struct, frozen=True, omit_defaults=True):
    header: Header
    # The key's previous value, when asked with prev_kv and the key existed.
    prev_kv: KeyValueAnswer | None = None


class GetAnswer(msgspec.Struct, frozen=True):
    header: Header
    kv: KeyValueAnswer


class DeleteAnswer(msgspec.Struct, frozen=True, omit_defaults=True):
    header: Header
    deleted: int
    prev_kvs: list[KeyValueAnswer] = msgspec.field(default_factory=list)


class RangeAnswer(msgspec.Struct, frozen=True):
    """`kvs` in key order; `count`: the keys in the range, whatever was answered; `more`:
    keys were left out, by `limit` or by the server's `max_response_bytes` (it answers at
    most that many bytes of key-values, the first one always): read on from after the
    last key answered."""

    header: Header
    kvs: list[KeyValueAnswer]
    # Keys in the range, regardless of limit; whether limit (or max_response_bytes) left
    # some out.
    count: int
    more: bool


# A txn's responses: the same answers, tagged with the op that made them ("op").


class RangeOpAnswer(RangeAnswer, frozen=True, tag="range", tag_field="op"):
    pass


class PutOpAnswer(PutAnswer, frozen=True, tag="put", tag_field="op", omit_defaults=True):
    pass


class DeleteOpAnswer(DeleteAnswer, frozen=True, tag="delete", tag_field="op", omit_defaults=True):
    pass


OpAnswer = RangeOpAnswer | PutOpAnswer | DeleteOpAnswer


class TxnAnswer(msgspec.Struct, frozen=True):
    header: Header
    succeeded: bool
    # One per op of the branch that ran, in order.
    responses: list[OpAnswer]


class CompactAnswer(msgspec.Struct, frozen=True):
    header: Header
