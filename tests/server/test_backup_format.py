"""The backup file format (`raftkv.server.backup`): round trip, and every way a file can be
broken is refused before anything is restored."""

from __future__ import annotations

import pytest

from raftkv.server.backup import (
    BackupHeader,
    BackupInvalid,
    backup_chunks,
    encode_prefix,
    read_backup,
)

HEADER = BackupHeader(format_version=1, index=42, term=3, revision=17, node_id=2, payload_bytes=10)


def whole(header: BackupHeader = HEADER, payload: bytes = b"0123456789") -> bytes:
    return b"".join(backup_chunks(header, payload, chunk_bytes=3))


def test_round_trip_in_chunks() -> None:
    data = whole()
    assert read_backup(data) == (HEADER, b"0123456789")
    assert len(data) == len(encode_prefix(HEADER)) + 10 + 32


@pytest.mark.parametrize(
    ("broken", "message"),
    [
        (b"NOTABACKUP" + whole()[10:], "wrong magic"),
        (whole()[:-1], "checksum does not match"),
        (whole()[:20], "truncated"),
        (whole()[:50], "checksum does not match"),
        (whole()[:-40] + b"X" + whole()[-39:], "checksum does not match"),
        (b"RAFTKVBK", "truncated"),
        (whole(BackupHeader(9, 1, 1, 1, 1, 10)), "backup format 9"),
        (whole(BackupHeader(1, 1, 1, 1, 1, 11)), "wrong length"),
        (whole(BackupHeader(1, 2**64 - 1, 1, 1, 1, 10)), "index 18446744073709551615 is out"),
        (whole(BackupHeader(1, -5, 1, 1, 1, 10)), "index -5 is out of range"),
        (whole(BackupHeader(1, 1, 0, 1, 1, 10)), "term 0 is out of range"),
        (whole(BackupHeader(1, 1, 1, 1, 0, 10)), "node_id 0 is out of range"),
    ],
)
def test_a_broken_file_is_refused(broken: bytes, message: str) -> None:
    with pytest.raises(BackupInvalid, match=message):
        read_backup(broken)
