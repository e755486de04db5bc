"""Project-wide pytest hooks: `--rewrite` regenerates datadriven golden files."""

from __future__ import annotations

import pytest

from raftkv.testing.scripts.datadriven import rewrite_requested


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--rewrite",
        action="store_true",
        default=False,
        help="rewrite the expected output of datadriven scripts (same as RAFTKV_REWRITE=1)",
    )


@pytest.fixture
def datadriven_rewrite(request: pytest.FixtureRequest) -> bool:
    """Whether datadriven tests should rewrite their scripts instead of comparing."""
    return bool(request.config.getoption("--rewrite")) or rewrite_requested()
