"""The browser tests' harness (tests/e2e/test_e2e_console*.py): headless Chromium from
Debian (`chromium`, `chromium-driver`; `make browser` installs them when it can), driven by
Selenium, and what the tests read of the console page. Every wait is bounded
(WebDriverWait), never a bare sleep. Importing it skips the importing module when the
browser or Selenium is missing, saying why."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from kv_processes import KvProcessCluster

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
DOCS = Path(__file__).resolve().parents[2] / "docs"
WRITE_DOCS = os.environ.get("RAFTKV_CONSOLE_SCREENSHOTS") == "1"
# Bounds for what the page shows after a change: it refreshes every second.
SHOWN_WITHIN_S = 10.0
NEW_LEADER_WITHIN_S = 10.0

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
    pytest.skip(
        f"{CHROMIUM} or {CHROMEDRIVER} is missing: install Debian's chromium and "
        "chromium-driver (make browser does, as root with apt-get)",
        allow_module_level=True,
    )

from selenium.common.exceptions import (  # noqa: E402
    StaleElementReferenceException,
    WebDriverException,
)
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.support import expected_conditions  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", name="browser")
def browser_fixture() -> Iterator[WebDriver]:
    """One headless Chromium for a module (import it into the module: `browser_fixture`);
    the module is skipped, saying why, if it does not start."""
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",  # root in a container has no user namespace for it
        "--disable-dev-shm-usage",
        "--window-size=1280,800",
        "--force-color-profile=srgb",
        "--no-first-run",
        "--disable-extensions",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    try:
        driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    except WebDriverException as error:
        pytest.skip(f"headless chromium did not start: {error.msg}")
    try:
        yield driver
    finally:
        driver.quit()


@contextmanager
def screenshot_on_failure(driver: WebDriver, tmp_path: Path) -> Iterator[None]:
    try:
        yield
    except BaseException as error:
        path = tmp_path / "console-failure.png"
        driver.save_screenshot(str(path))
        raise AssertionError(f"{error} (screenshot of the page: {path})") from error


def wait(
    driver: WebDriver, condition: Callable[[WebDriver], Any], what: str, seconds: float
) -> Any:
    return WebDriverWait(
        driver, seconds, poll_frequency=0.1, ignored_exceptions=(StaleElementReferenceException,)
    ).until(condition, f"the page did not show {what} within {seconds} s")


def rows_of(driver: WebDriver, selector: str) -> list[tuple[str, list[str]]]:
    """The rows `selector` finds, read at once (the page replaces them as it refreshes): each
    row's data-member (or "") and its cells' text."""
    rows: list[tuple[str, list[str]]] = driver.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0])).map("
        "row => [row.dataset.member || '', Array.from(row.cells).map(c => c.textContent)])",
        selector,
    )
    return rows


def member_rows(driver: WebDriver) -> dict[str, list[str]]:
    """The members table: member id -> its cells' text."""
    return dict(rows_of(driver, "#members-table tbody tr"))


def members_shown(driver: WebDriver, count: int, leader: int) -> None:
    def shown(driver: WebDriver) -> bool:
        rows = member_rows(driver)
        return len(rows) == count and rows.get(str(leader), ["", ""])[1] == "leader"

    wait(driver, shown, f"{count} members with member {leader} leading", SHOWN_WITHIN_S)


def confirm(driver: WebDriver) -> None:
    wait(driver, expected_conditions.alert_is_present(), "a confirmation", SHOWN_WITHIN_S)
    driver.switch_to.alert.accept()


def get_value(cluster: KvProcessCluster, key: str) -> str | None:
    status, answer = cluster.request(1, "GET", f"/v1/kv/{quote(key, safe='/')}")
    return str(answer["kv"]["value"]) if status == 200 else None


def search(driver: WebDriver, prefix: str) -> None:
    field = driver.find_element(By.ID, "key-prefix")
    field.clear()
    field.send_keys(prefix)
    driver.find_element(By.CSS_SELECTOR, "#key-search button[type=submit]").click()


def key_cells(driver: WebDriver) -> list[list[str]]:
    return [cells for _, cells in rows_of(driver, "#key-table tbody tr")]


def served_by(driver: WebDriver) -> int:
    """The member serving the page, as its header says ("member 2 · leader: ...")."""
    text = driver.find_element(By.ID, "served-by").text
    return int(text.split(" ")[1])


def severe_console_messages(driver: WebDriver) -> list[str]:
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def save_for_docs(driver: WebDriver, name: str, height: int | None) -> None:
    """Rewrite docs/<name> with the page at 1280 x `height` (None: as it is) when
    RAFTKV_CONSOLE_SCREENSHOTS=1."""
    if not WRITE_DOCS:
        return
    if height is None:
        driver.save_screenshot(str(DOCS / name))
        return
    driver.set_window_size(1280, height)
    try:
        driver.save_screenshot(str(DOCS / name))
    finally:
        driver.set_window_size(1280, 800)
