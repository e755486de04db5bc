"""The web console (`/ui`) in a real browser against a real 3-process cluster: headless
Chromium from Debian (`chromium`, `chromium-driver`; `make browser` installs them when it
can), driven by Selenium. One cluster and one browser for the module; each test waits on
conditions with a bound (WebDriverWait), never a bare sleep.

The page is served by a follower (so that killing the leader leaves it up). A failing test
saves a screenshot and names it in its failure; with RAFTKV_CONSOLE_SCREENSHOTS=1 the tests
also rewrite the pictures docs/console.md and the README show.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from console_browser import (
    NEW_LEADER_WITHIN_S,
    SHOWN_WITHIN_S,
    By,
    WebDriver,
    browser_fixture,  # noqa: F401 - the fixture "browser"
    confirm,
    get_value,
    key_cells,
    member_rows,
    members_shown,
    rows_of,
    save_for_docs,
    screenshot_on_failure,
    search,
    served_by,
    severe_console_messages,
    wait,
)
from kv_processes import KvProcessCluster
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KvProcessCluster]:
    cluster = KvProcessCluster(tmp_path_factory.mktemp("console"))
    try:
        cluster.start_all()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def page(cluster: KvProcessCluster, browser: WebDriver) -> WebDriver:
    """The console of a follower, loaded, with every member shown."""
    leader = cluster.wait_for_leader()
    follower = next(node for node in cluster.ids if node != leader)
    browser.get(f"{cluster.url(follower)}/ui")
    members_shown(browser, 3, leader)
    return browser


# -- the tests, in the module's order: the leader is killed last ------------------------------


def test_page_loads_without_console_errors_and_shows_the_members_and_the_leader(
    cluster: KvProcessCluster, page: WebDriver, tmp_path: Path
) -> None:
    with screenshot_on_failure(page, tmp_path):
        leader = cluster.wait_for_leader()
        rows = member_rows(page)
        assert sorted(rows) == ["1", "2", "3"]
        assert [rows[member][1] for member in sorted(rows)].count("leader") == 1
        assert all(cells[8] == "ok" for cells in rows.values()), rows
        assert page.find_element(By.ID, "banners").text == ""
        served_by = page.find_element(By.ID, "served-by").text
        assert f"leader: member {leader}" in served_by
        # The charts have points, and the timeline starts with the console's start.
        wait(
            page,
            lambda driver: driver.find_elements(By.CSS_SELECTOR, "#chart-commit polyline"),
            "a commit index chart",
            SHOWN_WITHIN_S,
        )
        wait(
            page,
            lambda driver: "console started" in driver.find_element(By.ID, "event-list").text,
            "the console's start in the timeline",
            SHOWN_WITHIN_S,
        )
        assert severe_console_messages(page) == []


def test_a_key_put_through_the_page_is_read_through_the_api_and_back(
    cluster: KvProcessCluster, page: WebDriver, tmp_path: Path
) -> None:
    with screenshot_on_failure(page, tmp_path):
        page.find_element(By.ID, "put-key").send_keys("console/from-page")
        page.find_element(By.ID, "put-value").send_keys("written in a browser")
        page.find_element(By.CSS_SELECTOR, "#put-form button[type=submit]").click()
        confirm(page)
        wait(
            page,
            lambda driver: get_value(cluster, "console/from-page") == "written in a browser",
            "the put reaching the store",
            SHOWN_WITHIN_S,
        )
        for number in range(3):
            status, _ = cluster.request(
                2, "PUT", f"/v1/kv/console/from-api-{number}", json={"value": f"api {number}"}
            )
            assert status == 200
        search(page, "console/")
        wait(
            page,
            lambda driver: (
                [cells[:2] for cells in key_cells(driver)]
                == [
                    ["console/from-api-0", "api 0"],
                    ["console/from-api-1", "api 1"],
                    ["console/from-api-2", "api 2"],
                    ["console/from-page", "written in a browser"],
                ]
            ),
            "the four console/ keys",
            SHOWN_WITHIN_S,
        )
        # Pages of 20 with 25 keys: the second page has the last 5.
        for number in range(25):
            cluster.request(1, "PUT", f"/v1/kv/paged/{number:02}", json={"value": "x"})
        Select(page.find_element(By.ID, "key-limit")).select_by_visible_text("20")
        search(page, "paged/")
        wait(
            page,
            lambda driver: (
                [cells[0] for cells in key_cells(driver)]
                == [f"paged/{number:02}" for number in range(20)]
            ),
            "a page of 20 keys",
            SHOWN_WITHIN_S,
        )
        page.find_element(By.ID, "key-next").click()
        wait(
            page,
            lambda driver: (
                [cells[0] for cells in key_cells(driver)]
                == [f"paged/{number}" for number in range(20, 25)]
            ),
            "the second page",
            SHOWN_WITHIN_S,
        )
        # A key's value, metadata and earlier revisions.
        cluster.request(1, "PUT", "/v1/kv/console/from-api-0", json={"value": "api 0, again"})
        search(page, "console/from-api-0")
        wait(
            page,
            lambda driver: [cells[0] for cells in key_cells(driver)] == ["console/from-api-0"],
            "the one key",
            SHOWN_WITHIN_S,
        )
        page.find_element(By.CSS_SELECTOR, "#key-table tbody tr").click()
        wait(
            page,
            lambda driver: (
                driver.find_element(By.ID, "detail-value").text == "api 0, again"
                and "api 0" in driver.find_element(By.ID, "detail-history").text.split("\n")[-1]
            ),
            "the value and its earlier revision",
            SHOWN_WITHIN_S,
        )
        save_for_docs(page, "console-keys.png", 1400)
        assert severe_console_messages(page) == []


def test_keys_and_values_with_markup_are_shown_as_text(
    cluster: KvProcessCluster, page: WebDriver, tmp_path: Path
) -> None:
    key = "<script>window.injected=1</script>"
    value = '<img src=x onerror="window.injected=2">'
    with screenshot_on_failure(page, tmp_path):
        status, _ = cluster.request(
            1, "PUT", f"/v1/kv/{quote(key, safe='/')}", json={"value": value}
        )
        assert status == 200
        search(page, "<script>")
        wait(
            page,
            lambda driver: [cells[:2] for cells in key_cells(driver)] == [[key, value]],
            "the key and value as text",
            SHOWN_WITHIN_S,
        )
        # From the keyboard: a row takes the focus and opens with Enter.
        page.find_element(By.CSS_SELECTOR, "#key-table tbody tr").send_keys(Keys.ENTER)
        wait(
            page,
            lambda driver: driver.find_element(By.ID, "detail-value").text == value,
            "the value in the key's detail",
            SHOWN_WITHIN_S,
        )
        assert page.find_elements(By.CSS_SELECTOR, "main img, main script") == []
        assert page.execute_script("return window.injected === undefined")


def test_the_watch_tail_shows_a_put_made_with_the_api(
    cluster: KvProcessCluster, page: WebDriver, tmp_path: Path
) -> None:
    with screenshot_on_failure(page, tmp_path):
        page.find_element(By.ID, "watch-prefix").send_keys("tail/")
        page.find_element(By.ID, "watch-start").click()
        wait(
            page,
            lambda driver: driver.find_element(By.ID, "watch-state").text.startswith("watching"),
            "the watch started",
            SHOWN_WITHIN_S,
        )
        status, _ = cluster.request(3, "PUT", "/v1/kv/tail/curl", json={"value": "from curl"})
        assert status == 200
        wait(
            page,
            lambda driver: any(
                cells[1:] == ["put", "tail/curl", "from curl"]
                for _, cells in rows_of(driver, "#watch-table tbody tr")
            ),
            "the put in the watch tail",
            SHOWN_WITHIN_S,
        )
        page.find_element(By.ID, "watch-stop").click()
        assert severe_console_messages(page) == []


def test_a_huge_value_is_shown_truncated(
    cluster: KvProcessCluster, page: WebDriver, tmp_path: Path
) -> None:
    with screenshot_on_failure(page, tmp_path):
        huge = "0123456789" * 20_000
        status, _ = cluster.request(1, "PUT", "/v1/kv/huge/value", json={"value": huge})
        assert status == 200
        search(page, "huge/")
        wait(
            page,
            lambda driver: [cells[0] for cells in key_cells(driver)] == ["huge/value"],
            "the huge key",
            SHOWN_WITHIN_S,
        )
        assert len(key_cells(page)[0][1]) <= 121  # one line: the first 120 characters and "…"
        page.find_element(By.CSS_SELECTOR, "#key-table tbody tr").click()
        wait(
            page,
            lambda driver: driver.find_element(By.ID, "detail-truncated").is_displayed(),
            "the value said to be truncated",
            SHOWN_WITHIN_S,
        )
        shown = page.execute_script("return document.getElementById('detail-value').textContent")
        assert shown == huge[: 64 * 1024]
        assert "200000 bytes" in page.find_element(By.ID, "detail-truncated").text


def test_leases_count_down_and_show_their_keys(
    cluster: KvProcessCluster, page: WebDriver, tmp_path: Path
) -> None:
    with screenshot_on_failure(page, tmp_path):
        status, grant = cluster.request(1, "POST", "/v1/lease", json={"ttl": 600})
        assert status == 200
        lease = str(grant["id"])
        status, _ = cluster.request(
            1, "PUT", "/v1/kv/leased/key", json={"value": "v", "lease": grant["id"]}
        )
        assert status == 200

        def ttl_shown(driver: WebDriver) -> int | None:
            for _, cells in rows_of(driver, "#lease-table tbody tr"):
                if cells[0] == lease:
                    return int(cells[1].removesuffix(" s"))
            return None

        first = wait(page, ttl_shown, f"lease {lease}", SHOWN_WITHIN_S)
        assert 0 < first <= 600
        wait(
            page,
            lambda driver: (ttl_shown(driver) or first) < first,
            "the lease's TTL counting down",
            SHOWN_WITHIN_S,
        )
        page.execute_script(
            "Array.from(document.querySelectorAll('#lease-table tbody tr'))"
            ".find(row => row.cells[0].textContent === arguments[0])"
            ".querySelector('button').click()",
            lease,
        )
        wait(
            page,
            lambda driver: any(
                cells[0] == lease and cells[3] == "leased/key"
                for _, cells in rows_of(driver, "#lease-table tbody tr")
            ),
            "the lease's key",
            SHOWN_WITHIN_S,
        )


def test_leadership_is_transferred_through_the_page(
    cluster: KvProcessCluster, page: WebDriver, tmp_path: Path
) -> None:
    with screenshot_on_failure(page, tmp_path):
        leader = cluster.wait_for_leader()
        serving = served_by(page)
        target = next(node for node in cluster.ids if node not in (leader, serving))
        Select(page.find_element(By.ID, "transfer-to")).select_by_value(str(target))
        page.find_element(By.CSS_SELECTOR, "#transfer-form button[type=submit]").click()
        confirm(page)
        wait(
            page,
            lambda driver: (
                f"Member {target} leads now" in driver.find_element(By.ID, "action-result").text
            ),
            "the transfer's outcome",
            SHOWN_WITHIN_S,
        )
        members_shown(page, 3, target)
        wait(
            page,
            lambda driver: (
                f"member {target} leads" in driver.find_element(By.ID, "event-list").text
            ),
            "the transfer in the timeline",
            SHOWN_WITHIN_S,
        )
        assert severe_console_messages(page) == []


def test_the_page_shows_the_new_leader_after_the_leader_is_killed(
    cluster: KvProcessCluster, page: WebDriver, tmp_path: Path
) -> None:
    with screenshot_on_failure(page, tmp_path):
        page.execute_script("window.scrollTo(0, 0)")
        save_for_docs(page, "console-members.png", 1000)
        old = cluster.wait_for_leader()
        cluster.kill(old)

        def new_leader_shown(driver: WebDriver) -> bool:
            rows = member_rows(driver)
            others = [member for member in rows if member != str(old)]
            return (
                rows.get(str(old), ["", ""])[1] == "unreachable"
                and sum(rows[member][1] == "leader" for member in others) == 1
            )

        wait(
            page, new_leader_shown, "a new leader and the old one unreachable", NEW_LEADER_WITHIN_S
        )
        new = cluster.wait_for_leader()
        assert member_rows(page)[str(new)][1] == "leader"
        assert f"Member {old} is unreachable" in page.find_element(By.ID, "banners").text
        wait(
            page,
            lambda driver: f"member {new} leads" in driver.find_element(By.ID, "event-list").text,
            "the leader change in the timeline",
            SHOWN_WITHIN_S,
        )
        save_for_docs(page, "console-unreachable.png", 800)
        assert severe_console_messages(page) == []


def test_the_page_says_when_there_is_no_leader(
    cluster: KvProcessCluster, page: WebDriver, tmp_path: Path
) -> None:
    """With one member of three left, no leader can be elected: the page stays up and says
    so (the member serving it answers for itself)."""
    with screenshot_on_failure(page, tmp_path):
        serving = served_by(page)
        for node in cluster.running():
            if node != serving:
                cluster.kill(node)

        def no_leader_shown(driver: WebDriver) -> bool:
            rows = member_rows(driver)
            down = [member for member in rows if member != str(serving)]
            return "No leader" in driver.find_element(By.ID, "banners").text and all(
                rows[member][1] == "unreachable" for member in down
            )

        wait(page, no_leader_shown, "that there is no leader", NEW_LEADER_WITHIN_S)
        assert "no leader" in page.find_element(By.ID, "served-by").text


def test_dark_mode_follows_the_system(page: WebDriver, tmp_path: Path) -> None:
    def background() -> str:
        color: str = page.execute_script("return getComputedStyle(document.body).backgroundColor")
        return color

    with screenshot_on_failure(page, tmp_path):
        light = background()
        page.execute_cdp_cmd(
            "Emulation.setEmulatedMedia",
            {"features": [{"name": "prefers-color-scheme", "value": "dark"}]},
        )
        try:
            assert background() != light
        finally:
            page.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})


def test_phone_width_layout_has_no_horizontal_page_scroll(page: WebDriver, tmp_path: Path) -> None:
    with screenshot_on_failure(page, tmp_path):
        # A phone's screen, as Chrome's device emulation makes it (a window cannot be made
        # that narrow).
        page.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": 390, "height": 844, "deviceScaleFactor": 1, "mobile": True},
        )
        try:
            overflow = page.execute_script(
                "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
            # What is wider than the screen, outside the tables' own scrolling boxes.
            wider = page.execute_script(
                "const width = document.documentElement.clientWidth;"
                "return Array.from(document.querySelectorAll('main *'))"
                ".filter(e => e.scrollWidth > width && !e.closest('.scroll'))"
                ".map(e => `${e.tagName}#${e.id}.${e.className}`)"
            )
            assert overflow <= 1, f"the page scrolls sideways by {overflow} px: {wider}"
            save_for_docs(page, "console-phone.png", None)
        finally:
            page.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
