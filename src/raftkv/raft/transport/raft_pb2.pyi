from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class MessageType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MESSAGE_TYPE_UNSPECIFIED: _ClassVar[MessageType]
    MSG_PROPOSE: _ClassVar[MessageType]
    MSG_APPEND: _ClassVar[MessageType]
    MSG_APPEND_RESPONSE: _ClassVar[MessageType]
    MSG_VOTE: _ClassVar[MessageType]
    MSG_VOTE_RESPONSE: _ClassVar[MessageType]
    MSG_PRE_VOTE: _ClassVar[MessageType]
    MSG_PRE_VOTE_RESPONSE: _ClassVar[MessageType]
    MSG_SNAPSHOT: _ClassVar[MessageType]
    MSG_HEARTBEAT: _ClassVar[MessageType]
    MSG_HEARTBEAT_RESPONSE: _ClassVar[MessageType]
    MSG_TRANSFER_LEADER: _ClassVar[MessageType]
    MSG_TIMEOUT_NOW: _ClassVar[MessageType]
    MSG_READ_INDEX: _ClassVar[MessageType]
    MSG_READ_INDEX_RESPONSE: _ClassVar[MessageType]

class EntryKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ENTRY_KIND_NORMAL: _ClassVar[EntryKind]
    ENTRY_KIND_CONF_CHANGE: _ClassVar[EntryKind]

class ChunkEncoding(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CHUNK_ENCODING_UNSPECIFIED: _ClassVar[ChunkEncoding]
    CHUNK_ENCODING_RAW: _ClassVar[ChunkEncoding]
    CHUNK_ENCODING_ZSTD: _ClassVar[ChunkEncoding]

class MemberAction(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MEMBER_ACTION_UNSPECIFIED: _ClassVar[MemberAction]
    MEMBER_ACTION_ADD_LEARNER: _ClassVar[MemberAction]
    MEMBER_ACTION_PROMOTE: _ClassVar[MemberAction]
    MEMBER_ACTION_REMOVE: _ClassVar[MemberAction]
    MEMBER_ACTION_MEMBERS: _ClassVar[MemberAction]
    MEMBER_ACTION_TRANSFER_LEADER: _ClassVar[MemberAction]
    MEMBER_ACTION_UPDATE: _ClassVar[MemberAction]
MESSAGE_TYPE_UNSPECIFIED: MessageType
MSG_PROPOSE: MessageType
MSG_APPEND: MessageType
MSG_APPEND_RESPONSE: MessageType
MSG_VOTE: MessageType
MSG_VOTE_RESPONSE: MessageType
MSG_PRE_VOTE: MessageType
MSG_PRE_VOTE_RESPONSE: MessageType
MSG_SNAPSHOT: MessageType
MSG_HEARTBEAT: MessageType
MSG_HEARTBEAT_RESPONSE: MessageType
MSG_TRANSFER_LEADER: MessageType
MSG_TIMEOUT_NOW: MessageType
MSG_READ_INDEX: MessageType
MSG_READ_INDEX_RESPONSE: MessageType
ENTRY_KIND_NORMAL: EntryKind
ENTRY_KIND_CONF_CHANGE: EntryKind
CHUNK_ENCODING_UNSPECIFIED: ChunkEncoding
CHUNK_ENCODING_RAW: ChunkEncoding
CHUNK_ENCODING_ZSTD: ChunkEncoding
MEMBER_ACTION_UNSPECIFIED: MemberAction
MEMBER_ACTION_ADD_LEARNER: MemberAction
MEMBER_ACTION_PROMOTE: MemberAction
MEMBER_ACTION_REMOVE: MemberAction
MEMBER_ACTION_MEMBERS: MemberAction
MEMBER_ACTION_TRANSFER_LEADER: MemberAction
MEMBER_ACTION_UPDATE: MemberAction

class Entry(_message.Message):
    __slots__ = ("term", "index", "kind", "data")
    TERM_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    term: int
    index: int
    kind: EntryKind
    data: bytes
    def __init__(self, term: _Optional[int] = ..., index: _Optional[int] = ..., kind: _Optional[_Union[EntryKind, str]] = ..., data: _Optional[bytes] = ...) -> None: ...

class ConfState(_message.Message):
    __slots__ = ("voters", "learners", "voters_outgoing", "learners_next", "auto_leave")
    VOTERS_FIELD_NUMBER: _ClassVar[int]
    LEARNERS_FIELD_NUMBER: _ClassVar[int]
    VOTERS_OUTGOING_FIELD_NUMBER: _ClassVar[int]
    LEARNERS_NEXT_FIELD_NUMBER: _ClassVar[int]
    AUTO_LEAVE_FIELD_NUMBER: _ClassVar[int]
    voters: _containers.RepeatedScalarFieldContainer[int]
    learners: _containers.RepeatedScalarFieldContainer[int]
    voters_outgoing: _containers.RepeatedScalarFieldContainer[int]
    learners_next: _containers.RepeatedScalarFieldContainer[int]
    auto_leave: bool
    def __init__(self, voters: _Optional[_Iterable[int]] = ..., learners: _Optional[_Iterable[int]] = ..., voters_outgoing: _Optional[_Iterable[int]] = ..., learners_next: _Optional[_Iterable[int]] = ..., auto_leave: _Optional[bool] = ...) -> None: ...

class SnapshotMetadata(_message.Message):
    __slots__ = ("index", "term", "conf_state")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    CONF_STATE_FIELD_NUMBER: _ClassVar[int]
    index: int
    term: int
    conf_state: ConfState
    def __init__(self, index: _Optional[int] = ..., term: _Optional[int] = ..., conf_state: _Optional[_Union[ConfState, _Mapping]] = ...) -> None: ...

class Snapshot(_message.Message):
    __slots__ = ("metadata", "data")
    METADATA_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    metadata: SnapshotMetadata
    data: bytes
    def __init__(self, metadata: _Optional[_Union[SnapshotMetadata, _Mapping]] = ..., data: _Optional[bytes] = ...) -> None: ...

class Message(_message.Message):
    __slots__ = ("type", "to", "sender", "term", "log_term", "index", "entries", "commit", "snapshot", "reject", "reject_hint", "context")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    TO_FIELD_NUMBER: _ClassVar[int]
    SENDER_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    LOG_TERM_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    COMMIT_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    REJECT_FIELD_NUMBER: _ClassVar[int]
    REJECT_HINT_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    type: MessageType
    to: int
    sender: int
    term: int
    log_term: int
    index: int
    entries: _containers.RepeatedCompositeFieldContainer[Entry]
    commit: int
    snapshot: Snapshot
    reject: bool
    reject_hint: int
    context: bytes
    def __init__(self, type: _Optional[_Union[MessageType, str]] = ..., to: _Optional[int] = ..., sender: _Optional[int] = ..., term: _Optional[int] = ..., log_term: _Optional[int] = ..., index: _Optional[int] = ..., entries: _Optional[_Iterable[_Union[Entry, _Mapping]]] = ..., commit: _Optional[int] = ..., snapshot: _Optional[_Union[Snapshot, _Mapping]] = ..., reject: _Optional[bool] = ..., reject_hint: _Optional[int] = ..., context: _Optional[bytes] = ...) -> None: ...

class MessageBatch(_message.Message):
    __slots__ = ("cluster_id", "from_node", "messages", "from_address")
    CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_NODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    FROM_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    cluster_id: int
    from_node: int
    messages: _containers.RepeatedCompositeFieldContainer[Message]
    from_address: str
    def __init__(self, cluster_id: _Optional[int] = ..., from_node: _Optional[int] = ..., messages: _Optional[_Iterable[_Union[Message, _Mapping]]] = ..., from_address: _Optional[str] = ...) -> None: ...

class SendAck(_message.Message):
    __slots__ = ("messages_received",)
    MESSAGES_RECEIVED_FIELD_NUMBER: _ClassVar[int]
    messages_received: int
    def __init__(self, messages_received: _Optional[int] = ...) -> None: ...

class SnapshotOffer(_message.Message):
    __slots__ = ("version", "cluster_id", "from_node", "message", "total_bytes", "sha256", "chunk_sha256s", "chunk_sizes", "max_chunk_bytes")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_NODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    CHUNK_SHA256S_FIELD_NUMBER: _ClassVar[int]
    CHUNK_SIZES_FIELD_NUMBER: _ClassVar[int]
    MAX_CHUNK_BYTES_FIELD_NUMBER: _ClassVar[int]
    version: int
    cluster_id: int
    from_node: int
    message: Message
    total_bytes: int
    sha256: bytes
    chunk_sha256s: bytes
    chunk_sizes: _containers.RepeatedScalarFieldContainer[int]
    max_chunk_bytes: int
    def __init__(self, version: _Optional[int] = ..., cluster_id: _Optional[int] = ..., from_node: _Optional[int] = ..., message: _Optional[_Union[Message, _Mapping]] = ..., total_bytes: _Optional[int] = ..., sha256: _Optional[bytes] = ..., chunk_sha256s: _Optional[bytes] = ..., chunk_sizes: _Optional[_Iterable[int]] = ..., max_chunk_bytes: _Optional[int] = ...) -> None: ...

class SnapshotChunkData(_message.Message):
    __slots__ = ("position", "encoding", "data")
    POSITION_FIELD_NUMBER: _ClassVar[int]
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    position: int
    encoding: ChunkEncoding
    data: bytes
    def __init__(self, position: _Optional[int] = ..., encoding: _Optional[_Union[ChunkEncoding, str]] = ..., data: _Optional[bytes] = ...) -> None: ...

class SnapshotUpload(_message.Message):
    __slots__ = ("offer", "chunk")
    OFFER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    offer: SnapshotOffer
    chunk: SnapshotChunkData
    def __init__(self, offer: _Optional[_Union[SnapshotOffer, _Mapping]] = ..., chunk: _Optional[_Union[SnapshotChunkData, _Mapping]] = ...) -> None: ...

class SnapshotWants(_message.Message):
    __slots__ = ("positions",)
    POSITIONS_FIELD_NUMBER: _ClassVar[int]
    positions: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, positions: _Optional[_Iterable[int]] = ...) -> None: ...

class SnapshotDelivered(_message.Message):
    __slots__ = ("bytes_received",)
    BYTES_RECEIVED_FIELD_NUMBER: _ClassVar[int]
    bytes_received: int
    def __init__(self, bytes_received: _Optional[int] = ...) -> None: ...

class SnapshotReply(_message.Message):
    __slots__ = ("wants", "chunks_received", "delivered")
    WANTS_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_RECEIVED_FIELD_NUMBER: _ClassVar[int]
    DELIVERED_FIELD_NUMBER: _ClassVar[int]
    wants: SnapshotWants
    chunks_received: int
    delivered: SnapshotDelivered
    def __init__(self, wants: _Optional[_Union[SnapshotWants, _Mapping]] = ..., chunks_received: _Optional[int] = ..., delivered: _Optional[_Union[SnapshotDelivered, _Mapping]] = ...) -> None: ...

class MemberRequest(_message.Message):
    __slots__ = ("cluster_id", "action", "node_id", "address")
    CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    cluster_id: int
    action: MemberAction
    node_id: int
    address: str
    def __init__(self, cluster_id: _Optional[int] = ..., action: _Optional[_Union[MemberAction, str]] = ..., node_id: _Optional[int] = ..., address: _Optional[str] = ...) -> None: ...

class MemberAddress(_message.Message):
    __slots__ = ("node_id", "address")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    node_id: int
    address: str
    def __init__(self, node_id: _Optional[int] = ..., address: _Optional[str] = ...) -> None: ...

class MemberResponse(_message.Message):
    __slots__ = ("ok", "error", "message", "leader_id", "leader_address", "members", "removed")
    OK_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    LEADER_ID_FIELD_NUMBER: _ClassVar[int]
    LEADER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    ok: bool
    error: str
    message: str
    leader_id: int
    leader_address: str
    members: _containers.RepeatedCompositeFieldContainer[MemberAddress]
    removed: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, ok: _Optional[bool] = ..., error: _Optional[str] = ..., message: _Optional[str] = ..., leader_id: _Optional[int] = ..., leader_address: _Optional[str] = ..., members: _Optional[_Iterable[_Union[MemberAddress, _Mapping]]] = ..., removed: _Optional[_Iterable[int]] = ...) -> None: ...
