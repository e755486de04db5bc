"""The web console with auth enabled, in a real browser against 3 processes: the page asks
to sign in, a user sees what its roles permit (and is told "permission denied" for the
rest), signing out forgets the token, and root's backup download carries root's token."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from console_browser import (
    SHOWN_WITHIN_S,
    By,
    WebDriver,
    browser_fixture,  # noqa: F401 - the fixture "browser"
    key_cells,
    members_shown,
    screenshot_on_failure,
    search,
    wait,
)
from kv_processes import KvProcessCluster

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KvProcessCluster]:
    """Users root and alice (read and write on app/), a key in app/ and one in other/,
    auth enabled."""
    cluster = KvProcessCluster(tmp_path_factory.mktemp("console-auth"))
    try:
        cluster.start_all()
        leader = cluster.wait_for_leader()
        for method, path, body in (
            ("PUT", "/v1/kv/app/greeting", {"value": "hello"}),
            ("PUT", "/v1/kv/other/secret", {"value": "hidden"}),
            ("POST", "/v1/auth/users", {"name": "root", "password": "root-password"}),
            ("POST", "/v1/auth/users/root/roles", {"role": "root"}),
            ("POST", "/v1/auth/roles", {"name": "app"}),
            (
                "POST",
                "/v1/auth/roles/app/permissions",
                {"kind": "readwrite", "key": "app/", "prefix": True},
            ),
            ("POST", "/v1/auth/users", {"name": "alice", "password": "alice-password"}),
            ("POST", "/v1/auth/users/alice/roles", {"role": "app"}),
            ("POST", "/v1/auth/enable", None),
        ):
            assert cluster.request(leader, method, path, json=body)[0] == 200, path
        yield cluster
    finally:
        cluster.stop()


def sign_in(driver: WebDriver, name: str, password: str) -> None:
    wait(
        driver,
        lambda driver: driver.find_element(By.ID, "login").is_displayed(),
        "the sign-in form",
        SHOWN_WITHIN_S,
    )
    driver.find_element(By.ID, "login-name").send_keys(name)
    driver.find_element(By.ID, "login-password").send_keys(password)
    driver.find_element(By.CSS_SELECTOR, "#login-form button[type=submit]").click()
    wait(
        driver,
        lambda driver: driver.find_element(By.ID, "signed-in-user").text == name,
        f"{name} signed in",
        SHOWN_WITHIN_S,
    )


def test_a_user_signs_in_and_sees_what_its_roles_permit(
    cluster: KvProcessCluster, browser: WebDriver, tmp_path: Path
) -> None:
    leader = cluster.wait_for_leader()
    browser.get(f"{cluster.url(leader)}/ui")
    with screenshot_on_failure(browser, tmp_path):
        # The members need no sign-in (as /v1/status); the keys do.
        members_shown(browser, 3, leader)
        wrong = browser.find_element(By.ID, "login-password")
        wait(browser, lambda driver: wrong.is_displayed(), "the sign-in form", SHOWN_WITHIN_S)
        browser.find_element(By.ID, "login-name").send_keys("alice")
        wrong.send_keys("wrong")
        browser.find_element(By.CSS_SELECTOR, "#login-form button[type=submit]").click()
        wait(
            browser,
            lambda driver: "auth_failed" in driver.find_element(By.ID, "login-error").text,
            "the refused sign-in",
            SHOWN_WITHIN_S,
        )
        browser.find_element(By.ID, "login-name").clear()
        browser.find_element(By.ID, "login-password").clear()
        sign_in(browser, "alice", "alice-password")
        assert not browser.find_element(By.ID, "login").is_displayed()
        search(browser, "app/")
        wait(
            browser,
            lambda driver: any("app/greeting" in " ".join(row) for row in key_cells(driver)),
            "alice's key",
            SHOWN_WITHIN_S,
        )
        search(browser, "other/")
        wait(
            browser,
            lambda driver: "permission_denied" in driver.find_element(By.ID, "key-count").text,
            "that alice may not read other/",
            SHOWN_WITHIN_S,
        )
        assert not any("hidden" in " ".join(row) for row in key_cells(browser))
        # Signing out forgets the token: the form is back, and a reload keeps it so.
        browser.find_element(By.ID, "sign-out").click()
        assert browser.find_element(By.ID, "login").is_displayed()
        browser.refresh()
        search(browser, "app/")
        sign_in(browser, "root", "root-password")
        search(browser, "other/")
        wait(
            browser,
            lambda driver: any("other/secret" in " ".join(row) for row in key_cells(driver)),
            "root's view of other/",
            SHOWN_WITHIN_S,
        )
        # The backup is fetched with root's token, not followed as a bare link.
        browser.execute_script("window.confirm = () => true")
        browser.find_element(By.ID, "backup").click()
        wait(
            browser,
            lambda driver: "backup downloaded" in driver.find_element(By.ID, "action-result").text,
            "the backup downloaded",
            SHOWN_WITHIN_S,
        )


# Holds the answer to one request sent without a token until the test releases it: the
# page's refreshes do this by themselves when the server is slow (a run of `make test` once
# lost a sign-in to it).
HOLD_ONE_UNSIGNED_REQUEST = """
const realFetch = window.fetch;
let release;
const gate = new Promise((resolve) => { release = resolve; });
window.fetch = async (...args) => {
  const response = await realFetch(...args);
  await gate;
  return response;
};
window.staleCode = null;
window.staleSettled = false;
api("GET", "/v1/kv/app/greeting")
  .catch((error) => { window.staleCode = error.code; })
  .finally(() => { window.staleSettled = true; });
window.fetch = realFetch;
window.releaseStale = release;
"""


def test_a_refusal_sent_before_signing_in_does_not_sign_the_user_out(
    cluster: KvProcessCluster, browser: WebDriver, tmp_path: Path
) -> None:
    leader = cluster.wait_for_leader()
    browser.get(f"{cluster.url(leader)}/ui")
    with screenshot_on_failure(browser, tmp_path):
        if browser.find_element(By.ID, "sign-out").is_displayed():
            browser.find_element(By.ID, "sign-out").click()
        browser.execute_script(HOLD_ONE_UNSIGNED_REQUEST)
        sign_in(browser, "alice", "alice-password")
        browser.execute_script("window.releaseStale()")
        wait(
            browser,
            lambda driver: driver.execute_script("return window.staleSettled") is True,
            "the held answer",
            SHOWN_WITHIN_S,
        )
        assert browser.execute_script("return window.staleCode") == "auth_required"
        assert browser.find_element(By.ID, "signed-in-user").text == "alice"
        assert not browser.find_element(By.ID, "login").is_displayed()
        assert browser.execute_script("return sessionStorage.getItem('raftkv-user')") == "alice"
