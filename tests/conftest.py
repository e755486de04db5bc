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


# Test folders whose tests run clusters of real `raftkv serve` processes.
PROCESS_CLUSTER_FOLDERS = frozenset({"e2e", "integration"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under pytest-xdist (`make test`: `-n 2 --dist loadgroup`), the tests that run clusters
    of real processes share one worker, so at most one such cluster runs at a time, beside
    the in-process tests on the other worker."""
    del config
    for item in items:
        if PROCESS_CLUSTER_FOLDERS & set(item.path.parts):
            item.add_marker(pytest.mark.xdist_group("processes"))
