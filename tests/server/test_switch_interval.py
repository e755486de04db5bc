"""A server process's thread switch interval (raftkv.server.switch_interval): shortened
once at start-up, so that the event loop waits at most that long for the GIL while a worker
thread runs Python. (What it buys is measured, not timed in tests: docs/performance.md.)"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

from raftkv.server.switch_interval import SWITCH_INTERVAL_S, shorten_switch_interval


@pytest.fixture
def restored_interval() -> Iterator[None]:
    interval = sys.getswitchinterval()
    yield
    sys.setswitchinterval(interval)


@pytest.mark.usefixtures("restored_interval")
def test_the_switch_interval_is_shortened_below_cpythons_default() -> None:
    sys.setswitchinterval(0.005)  # CPython's default
    shorten_switch_interval()
    assert sys.getswitchinterval() == pytest.approx(SWITCH_INTERVAL_S)
    assert SWITCH_INTERVAL_S < 0.005
