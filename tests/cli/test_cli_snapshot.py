"""`raftkv snapshot save` / `restore` failing well: a backup that is not one is refused
with one line and exit 5 before anything is written, a local file problem is a local error
(exit 2, not "unavailable"), a directory as FILE is refused before anything is downloaded,
and no `*.part` file stays behind."""

from __future__ import annotations

import contextlib
import json
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cli_helpers import Cli, in_cluster, run_cli

from raftkv.cli import EXIT_INVALID_BACKUP, EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE
from raftkv.server.backup import BackupHeader, backup_chunks, open_backup
from raftkv.server.identity import read_identity

INITIAL = ["--id", "1", "--initial-cluster", "1=127.0.0.1:7999"]


def write_backup(path: Path, payload: bytes, **fields: int) -> Path:
    values = {"index": 10, "term": 2, "revision": 5, "node_id": 1} | fields
    header = BackupHeader(format_version=1, payload_bytes=len(payload), **values)
    path.write_bytes(b"".join(backup_chunks(header, payload, 1 << 20)))
    return path


def one_line(err: str) -> str:
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize(
    "case",
    [
        ({}, b"garbage, though its checksum is right", "state is damaged"),
        ({"index": 2**64 - 1}, b"x", "index 18446744073709551615 is out of range"),
        ({"index": -5}, b"x", "index -5 is out of range"),
        ({"term": -5}, b"x", "term -5 is out of range"),
        ({"term": 2**64 - 1}, b"x", "term 18446744073709551615 is out of range"),
        ({"revision": -1}, b"x", "revision -1 is out of range"),
    ],
)
def test_an_invalid_backup_is_refused_in_one_line_before_anything_is_written(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    case: tuple[dict[str, int], bytes, str],
) -> None:
    fields, payload, message = case
    backup = write_backup(tmp_path / "bad.raftkv", payload, **fields)
    data_dir = tmp_path / "restored"
    ran = run_cli(
        capsys, monkeypatch, "snapshot", "restore", str(backup),
        "--data-dir", str(data_dir), *INITIAL,
    )  # fmt: skip
    assert ran.code == EXIT_INVALID_BACKUP == 5
    line = one_line(ran.err)
    assert line.startswith("raftkv: invalid_backup:") and message in line
    assert sorted(path.name for path in tmp_path.iterdir()) == ["bad.raftkv"]


def test_a_backup_that_cannot_be_read_is_a_local_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for missing in (tmp_path / "missing.raftkv", tmp_path):
        ran = run_cli(
            capsys, monkeypatch, "snapshot", "restore", str(missing),
            "--data-dir", str(tmp_path / "restored"), *INITIAL,
        )  # fmt: skip
        assert ran.code == EXIT_USAGE
        assert one_line(ran.err).startswith(f"raftkv: local_error: {missing}: ")
    assert not (tmp_path / "restored").exists()


def test_checking_a_backup_does_not_read_it_into_memory(tmp_path: Path) -> None:
    size = 32 << 20
    backup = write_backup(tmp_path / "big.raftkv", bytes(size))
    tracemalloc.start()
    try:
        with open_backup(backup) as (header, payload):
            assert header.payload_bytes == len(payload) == size
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < size // 8


def test_save_to_a_directory_is_refused_before_downloading(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_download(*arguments: object, **options: object) -> None:
        raise AssertionError("downloaded")

    monkeypatch.setattr(httpx, "stream", no_download)
    ran = run_cli(capsys, monkeypatch, "snapshot", "save", str(tmp_path))
    assert ran.code == EXIT_USAGE
    assert "is a directory: name the backup file" in one_line(ran.err)
    missing_parent = tmp_path / "no-such-dir" / "backup.raftkv"
    ran = run_cli(capsys, monkeypatch, "snapshot", "save", str(missing_parent))
    assert ran.code == EXIT_USAGE and "is not a directory" in one_line(ran.err)
    assert list(tmp_path.iterdir()) == []


class _Response:
    def __init__(self, chunks: list[bytes], error: Exception | None) -> None:
        self.status_code = 200
        self.headers = {"content-length": str(sum(map(len, chunks)))}
        self._chunks = chunks
        self._error = error

    def iter_bytes(self, size: int) -> Iterator[bytes]:
        yield from self._chunks
        if self._error is not None:
            raise self._error


def _serving(chunks: list[bytes], error: Exception | None = None) -> Any:
    @contextlib.contextmanager
    def stream(*arguments: object, **options: object) -> Iterator[_Response]:
        yield _Response(chunks, error)

    return stream


@pytest.mark.parametrize(
    "case",
    [
        ([b"RAFTKVBK", b"not a backup at all" * 10], None, EXIT_INVALID_BACKUP, "invalid_backup"),
        ([b"RAFTKVBK", b"half of it"], httpx.ReadError("reset"), EXIT_UNAVAILABLE, "unavailable"),
    ],
)
def test_a_failed_save_leaves_no_part_file(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    case: tuple[list[bytes], Exception | None, int, str],
) -> None:
    chunks, error, code, error_code = case
    monkeypatch.setattr(httpx, "stream", _serving(chunks, error))
    ran = run_cli(capsys, monkeypatch, "snapshot", "save", str(tmp_path / "backup.raftkv"))
    assert ran.code == code
    assert one_line(ran.err).startswith(f"raftkv: {error_code}: ")
    assert list(tmp_path.iterdir()) == []


def test_a_local_write_error_is_not_blamed_on_the_server(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(httpx, "stream", _serving([b"RAFTKVBK"]))
    target = tmp_path / "backup.raftkv"
    (tmp_path / "backup.raftkv.part").mkdir()  # the partial file cannot be opened
    ran = run_cli(capsys, monkeypatch, "snapshot", "save", str(target))
    assert ran.code == EXIT_USAGE
    line = one_line(ran.err)
    assert line.startswith("raftkv: local_error: ") and "127.0.0.1" not in line


def test_save_then_restore_through_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    async def test(cli: Cli) -> None:
        assert (await cli("put", "k", "v")).code == EXIT_OK
        saved = await cli("snapshot", "save", str(tmp_path / "b.raftkv"))
        assert saved.code == EXIT_OK, saved.err

    in_cluster(capsys, monkeypatch, test)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["b.raftkv"]
    cluster_ids = set()
    for node in (1, 2):
        ran = run_cli(
            capsys, monkeypatch, "snapshot", "restore", str(tmp_path / "b.raftkv"),
            "--data-dir", str(tmp_path / f"restored-{node}"), "--id", str(node),
            "--initial-cluster", "1=127.0.0.1:7998,2=127.0.0.1:7999",
        )  # fmt: skip
        assert ran.code == EXIT_OK, ran.err
        identity = read_identity(tmp_path / f"restored-{node}")
        assert identity is not None and identity.cluster_id == json.loads(ran.out)["cluster_id"]
        cluster_ids.add(identity.cluster_id)
    # A new cluster id (etcd's restore does the same), on which the founders agree.
    assert len(cluster_ids) == 1 and cluster_ids != {1}
    names = ["b.raftkv", "restored-1", "restored-2"]
    assert sorted(path.name for path in tmp_path.iterdir()) == names
