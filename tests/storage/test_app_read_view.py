"""`RocksAppData.read_view()`: scans that share the view's one scan iterator, stepped in
turns (as a range's count reads the rest of its range and the keys outside it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from raftkv.raft.storage.base import AppBatch, StorageClosed
from raftkv.raft.storage.rocks import RocksStorage


def test_scans_stepped_in_turns_each_yield_their_own_range(tmp_path: Path) -> None:
    storage = RocksStorage(tmp_path / "db")
    try:
        app = storage.app_data()
        batch = AppBatch()
        keys = [b"%c%02d" % (letter, number) for letter in b"abc" for number in range(5)]
        for key in keys:
            batch.put(key, key)
        app.commit(batch, 1, 1)
        view = app.read_view()
        first = view.scan(b"a", b"b")
        taken = [next(first), next(first)]
        # Started while the first is under way: its first step seeks the shared iterator
        # (the bug this guards: the first scan then went on from where the second was).
        second = view.scan(b"c", None)
        third = view.scan(b"b", b"c")
        rest: dict[str, list[bytes]] = {"first": [], "second": [], "third": []}
        scans = {"first": first, "second": second, "third": third}
        while scans:
            for name, scan in list(scans.items()):
                item = next(scan, None)
                if item is None:
                    del scans[name]
                else:
                    rest[name].append(item[0])
        assert [key for key, _ in taken] + rest["first"] == keys[:5]
        assert rest["third"] == keys[5:10]
        assert rest["second"] == keys[10:]
        view.close()
    finally:
        storage.close()


def test_a_count_counts_the_keys_of_its_range_and_a_scan_under_way_goes_on(
    tmp_path: Path,
) -> None:
    storage = RocksStorage(tmp_path / "db")
    try:
        app = storage.app_data()
        batch = AppBatch()
        for number in range(100):
            batch.put(b"k%03d" % number, b"v")
        app.commit(batch, 1, 1)
        view = app.read_view()
        scan = view.scan(b"k000", b"k010")
        first = next(scan)
        assert view.count(b"k", b"l") == 100
        assert view.count(b"k050", b"k060") == 10
        assert view.count(b"x", b"y") == 0
        assert [first, *scan] == [(b"k%03d" % number, b"v") for number in range(10)]
        view.close()
        with pytest.raises(StorageClosed):
            view.count(b"k", b"l")
    finally:
        storage.close()
