"""The dashboard on a server with API keys: a browser signs in with a `read` key kept in an HttpOnly cookie.

Its own server (no workers, no jobs needed): the shared one runs in open mode for the other tests.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from selenium.webdriver.common.by import By

from tests.browser.conftest import ARTIFACTS, free_port
from tests.browser.test_dashboard_pages import shot, wait_until
from tests.conftest import REPO

ADMIN_KEY = "cg_test_admin_key_0123456789abcdef"


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("keyed")
    port = free_port()
    env = {**os.environ, "CARRYGATE_DATA_DIR": str(root), "CARRYGATE_API_KEYS": ADMIN_KEY, "CARRYGATE_DATABASE_URL": "",
           "CARRYGATE_ARTIFACT_STORE": "", "OMP_NUM_THREADS": "1"}
    ARTIFACTS.mkdir(exist_ok=True)
    with (ARTIFACTS / "server-keys.log").open("w") as log:
        command = [sys.executable, "-m", "carrygate.app", "serve", "--host", "127.0.0.1", "--port", str(port), "--no-workers"]
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"{url}/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"the keyed server did not start; see {ARTIFACTS / 'server-keys.log'}")
                time.sleep(0.3)
            yield url
        finally:
            process.terminate()
            process.wait(timeout=30)


def create_key(url: str, scopes: list[str]) -> str:
    response = httpx.post(f"{url}/keys", json={"name": "-".join(scopes), "scopes": scopes}, headers={"X-API-Key": ADMIN_KEY})
    assert response.status_code == 201, response.text
    return str(response.json()["key"])


def load(browser: Any, url: str) -> None:
    browser.get(url)
    wait_until(lambda: browser.execute_script("return document.readyState") == "complete", what=f"{url} to load")


def sign_in(browser: Any, key: str) -> None:
    field = browser.find_element(By.ID, "login-key")
    field.clear()
    field.send_keys(key)
    browser.find_element(By.CSS_SELECTOR, "#login-form button").click()


def test_pages_need_a_key_and_redirect_to_the_sign_in(keyed_server: str) -> None:
    response = httpx.get(f"{keyed_server}/dashboard/grid?checkpoint=x")
    assert response.status_code == 303
    assert response.headers["location"] == "/dashboard/login?next=%2Fdashboard%2Fgrid%3Fcheckpoint%3Dx&reason=401"
    assert httpx.get(f"{keyed_server}/jobs").status_code == 401  # the JSON API keeps its plain 401
    assert httpx.get(f"{keyed_server}/dashboard", headers={"X-API-Key": ADMIN_KEY}).status_code == 200


def test_browser_signs_in_with_a_read_key(keyed_server: str, browser: Any) -> None:
    read_key = create_key(keyed_server, ["read"])
    try:
        load(browser, f"{keyed_server}/dashboard/checkpoints")
        assert browser.current_url.startswith(f"{keyed_server}/dashboard/login")
        assert "read scope is needed" in browser.find_element(By.ID, "login-reason").text

        sign_in(browser, "cg_wrong_key")
        wait_until(lambda: "reason=invalid" in browser.current_url, what="the refusal of a wrong key")
        assert "not accepted" in browser.find_element(By.ID, "login-reason").text

        sign_in(browser, read_key)
        wait_until(lambda: browser.current_url == f"{keyed_server}/dashboard/checkpoints", what="the page asked for")
        assert browser.find_element(By.ID, "empty-checkpoints").is_displayed()
        assert browser.execute_script("return typeof window.Plotly") == "object"  # the bundle route needs the key too
        assert "carrygate_key" not in browser.execute_script("return document.cookie")  # HttpOnly
        shot(browser, "keys-signed-in")

        cookie = {c["name"]: c["value"] for c in browser.get_cookies()}["carrygate_key"]
        assert cookie == read_key
        # The cookie only ever reads: a write carrying it (as a page on another site could) is unauthenticated.
        refused = httpx.post(f"{keyed_server}/checkpoints/register", json={"path": "/nowhere"}, cookies={"carrygate_key": cookie})
        assert refused.status_code == 401

        browser.find_element(By.ID, "logout").click()
        wait_until(lambda: "/dashboard/login" in browser.current_url, what="the sign-out")
        load(browser, f"{keyed_server}/dashboard")
        assert "/dashboard/login" in browser.current_url
    finally:
        browser.delete_all_cookies()


def test_a_revoked_key_is_sent_back_to_the_sign_in(keyed_server: str) -> None:
    created = httpx.post(f"{keyed_server}/keys", json={"name": "short-lived", "scopes": ["read"]}, headers={"X-API-Key": ADMIN_KEY}).json()
    assert httpx.get(f"{keyed_server}/dashboard", cookies={"carrygate_key": created["key"]}).status_code == 200
    assert httpx.delete(f"{keyed_server}/keys/{created['id']}", headers={"X-API-Key": ADMIN_KEY}).status_code == 200
    response = httpx.get(f"{keyed_server}/dashboard", cookies={"carrygate_key": created["key"]})
    assert response.status_code == 303 and response.headers["location"].endswith("reason=invalid")
