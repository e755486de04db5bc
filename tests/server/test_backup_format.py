"""The backup file format (`raftkv.server.backup`): round trip, and every way a file can be
broken is refused before anything is restored."""

from __future__ import annotations

import pytest

from raftkv.server.backup import (
    BackupHeader,
    BackupInvalid,
    backup_chunks,
    encode_prefix,
    padded_for_etcd,
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
        (whole(BackupHeader(1, 1, 1, 1, 1, 10, b"\x01")), "padding is not a few zero bytes"),
        (whole(BackupHeader(1, 1, 1, 1, 1, 10, bytes(5000))), "padding is not a few zero"),
    ],
)
def test_a_broken_file_is_refused(broken: bytes, message: str) -> None:
    with pytest.raises(BackupInvalid, match=message):
        read_backup(broken)


@pytest.mark.parametrize("payload_bytes", [0, 10, 300, 479, 480, 481, 5000, 1 << 20])
def test_padding_for_etcd_makes_the_size_etcdctl_keeps_and_reads_back(payload_bytes: int) -> None:
    """etcdctl snapshot save keeps a file only if its size is 32 (a SHA-256) more than a
    multiple of 512; the padded backup is still read as the same backup."""
    header = BackupHeader(1, 42, 3, 17, 2, payload_bytes)
    payload = bytes(range(256)) * (payload_bytes // 256) + bytes(payload_bytes % 256)
    padded = padded_for_etcd(header)
    data = whole(padded, payload)
    assert len(data) % 512 == 32
    read_header, read_payload = read_backup(data)
    assert (read_header, bytes(read_payload)) == (padded, payload)
    # Without padding the header is the bytes it always was (no field for it).
    assert b"padding" not in encode_prefix(header)
