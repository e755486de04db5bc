"""`raftkv snapshot status FILE`: a backup's header and size, checked whole (streamed, not
loaded), and one error line with exit 5 for a file that is not a whole backup."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from cli_helpers import run_cli

from raftkv.cli import EXIT_INVALID_BACKUP, EXIT_OK, EXIT_USAGE
from raftkv.server.backup import FORMAT_VERSION, BackupHeader, backup_chunks

Capsys = pytest.CaptureFixture[str]
Patch = pytest.MonkeyPatch

PAYLOAD = bytes(range(256)) * 4000  # about a MiB: read in more than one chunk


def write_backup(path: Path, payload: bytes = PAYLOAD) -> bytes:
    header = BackupHeader(FORMAT_VERSION, 41, 3, 17, 2, len(payload))
    data = b"".join(backup_chunks(header, payload, 1 << 16))
    path.write_bytes(data)
    return data


def test_snapshot_status_says_what_a_backup_holds(
    tmp_path: Path, capsys: Capsys, monkeypatch: Patch
) -> None:
    path = tmp_path / "backup.bin"
    data = write_backup(path)
    ran = run_cli(capsys, monkeypatch, "snapshot", "status", str(path), "--output", "json")
    assert (ran.code, ran.err) == (EXIT_OK, "")
    assert json.loads(ran.out) == {
        "file": str(path),
        "bytes": len(data),
        "format_version": FORMAT_VERSION,
        "index": 41,
        "term": 3,
        "revision": 17,
        "node_id": 2,
        "payload_bytes": len(PAYLOAD),
        "sha256": hashlib.sha256(data[:-32]).hexdigest(),
    }
    table = run_cli(capsys, monkeypatch, "snapshot", "status", str(path))
    assert table.code == EXIT_OK and "intact" in table.out and "revision" in table.out


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda data: data[:-1], "truncated or damaged"),
        (lambda data: data + b"x", "truncated or damaged"),
        (lambda data: data[:100] + bytes([data[100] ^ 1]) + data[101:], "checksum"),
        (lambda data: b"NOTABACK" + data[8:], "wrong magic"),
        (lambda data: data[:10], "truncated"),
    ],
    ids=["truncated", "extra-bytes", "flipped-bit", "wrong-magic", "cut-in-header"],
)
def test_snapshot_status_refuses_a_damaged_backup_in_one_line(
    tmp_path: Path, capsys: Capsys, monkeypatch: Patch, damage: object, message: str
) -> None:
    path = tmp_path / "backup.bin"
    path.write_bytes(damage(write_backup(path)))  # type: ignore[operator]
    ran = run_cli(capsys, monkeypatch, "snapshot", "status", str(path))
    assert (ran.code, ran.out) == (EXIT_INVALID_BACKUP, "")
    assert ran.err.startswith(f"raftkv: invalid_backup: {path}: ") and message in ran.err
    assert len(ran.err.splitlines()) == 1


def test_snapshot_status_of_a_missing_file_is_a_usage_error(
    tmp_path: Path, capsys: Capsys, monkeypatch: Patch
) -> None:
    missing = tmp_path / "nothing.bin"
    ran = run_cli(capsys, monkeypatch, "snapshot", "status", str(missing))
    assert (ran.code, ran.out) == (EXIT_USAGE, "")
    assert (
        ran.err
        == f"raftkv: usage: cannot read the backup file {missing}: No such file or directory\n"
    )
