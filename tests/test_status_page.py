"""The status page in a real browser (Debian's headless Chromium, driven by selenium through
Debian's chromium-driver) against a real daemon on real containers.

Screenshots go to test-artifacts/ (git-ignored), one per step, for a person to look at.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
import yaml
from conftest import REPO_ROOT, remove_project
from live_api import TOKEN, LiveApi, live_api
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

pytestmark = pytest.mark.docker

ARTIFACTS = REPO_ROOT / "test-artifacts"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1100",
)


@pytest.fixture
def live(
    tmp_path: Path, docker_client: docker.DockerClient, stand_in_image: str
) -> Iterator[LiveApi]:
    project = f"t-{uuid.uuid4().hex[:8]}"
    try:
        with live_api(tmp_path, project) as api:
            yield api
    finally:
        remove_project(docker_client, project)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    assert chromium and driver, "scripts/ensure-test-tools installs chromium and chromium-driver"
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    with webdriver.Chrome(options=options, service=Service(executable_path=driver)) as chrome:
        chrome.set_page_load_timeout(20)
        yield chrome


def shot(browser: WebDriver, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / f"status-page-{name}.png"))


def row_state(browser: WebDriver, service: str) -> str:
    row = browser.find_element(By.CSS_SELECTOR, f'#services tr[data-service="{service}"]')
    return row.get_attribute("data-state") or ""


def notice(browser: WebDriver) -> str:
    return browser.find_element(By.ID, "notice").text


def click_restart(browser: WebDriver, token: str | None) -> None:
    """Press web's restart button; answer the token dialog with `token` (empty: none)."""

    def press(b: WebDriver) -> bool:
        b.find_element(By.CSS_SELECTOR, 'button[data-action="restart"][data-service="web"]').click()
        return True

    # The table re-renders on every live event: a button found just before one goes stale, so
    # find and press it again (bounded), as a person would.
    WebDriverWait(browser, 5, ignored_exceptions=(StaleElementReferenceException,)).until(press)
    if token is not None:
        field = WebDriverWait(browser, 5).until(lambda b: b.find_element(By.ID, "token-input"))
        WebDriverWait(browser, 5).until(lambda b: field.is_displayed())
        field.send_keys(token)
        browser.find_element(By.ID, "token-ok").click()


def test_status_page_lists_the_stack_follows_a_crash_and_gates_actions(
    live: LiveApi, browser: WebDriver, docker_client: docker.DockerClient
) -> None:
    browser.get(live.base + "/")
    wait = WebDriverWait(browser, 10, ignored_exceptions=(StaleElementReferenceException,))
    wait.until(lambda b: b.find_element(By.ID, "live").text == "live")
    for service in ("init", "web"):

        def settled(b: WebDriver, s: str = service) -> bool:
            return row_state(b, s) in {"healthy", "completed"}

        wait.until(settled)
        graph_node = browser.find_element(
            By.CSS_SELECTOR, f'#graph .node[data-service="{service}"]'
        )
        assert graph_node.get_attribute("data-state") in {"healthy", "completed"}
    assert browser.find_element(By.ID, "docker").text == "connected"
    assert "completed" in browser.find_element(By.CSS_SELECTOR, "#graph .edge text").text
    shot(browser, "1-up")

    # An injected crash shows within 2 s, with no reload or polling: through the event stream.
    project = yaml.safe_load(live.config_path.read_text())["project"]
    docker_client.containers.get(f"{project}-web").kill()
    WebDriverWait(
        browser, 2, poll_frequency=0.05, ignored_exceptions=(StaleElementReferenceException,)
    ).until(lambda b: "exited with code 137 (SIGKILL)" in b.find_element(By.ID, "timeline").text)
    shot(browser, "2-crash")
    wait.until(lambda b: row_state(b, "web") == "healthy")
    assert "restart" in browser.find_element(By.ID, "timeline").text

    # Without a token the API refuses, and the page says so.
    click_restart(browser, "")
    wait.until(lambda b: "refused (401)" in notice(b))
    assert "missing bearer token" in notice(browser)
    assert browser.execute_script("return sessionStorage.length") == 0
    assert not operator_events(live)
    shot(browser, "3-refused")

    # With the token it works, and the token is kept for the tab.
    click_restart(browser, TOKEN)
    wait.until(lambda b: "restart web: accepted" in notice(b))
    stored = browser.execute_script("return sessionStorage.getItem('ovpn-supervisor-token')")
    assert stored == TOKEN
    (command,) = operator_events(live)
    assert command["data"]["action"] == "restart" and command["data"]["caller"] == "token"
    wait.until(lambda b: "operator command" in b.find_element(By.ID, "timeline").text)
    WebDriverWait(browser, 30, ignored_exceptions=(StaleElementReferenceException,)).until(
        lambda b: row_state(b, "web") == "healthy"
    )
    shot(browser, "4-restarted")


def operator_events(live: LiveApi) -> list[dict[str, Any]]:
    held = live.get_json("/v1/events?service=web")["events"]
    return [e for e in held if e["kind"] == "operator"]
