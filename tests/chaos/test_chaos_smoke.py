"""A short chaos run inside `make test`: every kind of fault once, in order, on a real
3-member cluster in network namespaces; every check must pass. `make chaos` runs long,
random schedules. Needs root (namespaces, tmpfs mounts): CI runs as root."""

from __future__ import annotations

from pathlib import Path

import pytest

from raftkv.testing.chaos import FAULTS, ChaosSettings, run_chaos
from raftkv.testing.chaos.lab import check_can_run


def test_every_fault_once_and_every_check_passes(tmp_path: Path) -> None:
    reason = check_can_run()
    if reason:
        pytest.skip(f"{reason}; CI runs as root")
    report = run_chaos(
        ChaosSettings(
            seed=12,
            duration_s=120.0,
            faults=FAULTS,
            in_order=True,
            hold_s=(0.5, 1.5),
            calm_s=(0.3, 0.6),
            directory=tmp_path / "run",
        )
    )
    assert report.verdict.ok, "\n".join(report.lines())
    assert [fault.split()[0] for fault in report.faults] == [
        "kill",
        "pause",
        "partition",
        "disk",
        "replace",
        "transfer",
    ], report.faults
    assert report.claims.get("applied", 0) > 100
