"""The web page in a real browser: headless Chromium from Debian's packages, driven by
Selenium through the system's chromedriver (nothing is downloaded).

Opens the page, expands the tree, opens a file, sees a lock's holder and waiter, watches an
edit by another client arrive live, logs in and edits with compare-and-swap (a stale edit
refused with the difference shown), and sees an anonymous edit refused. A screenshot of
each page goes to var/screenshots/ (tree, node, lock, sessions, cell, and the refusals).

Without chromium and chromium-driver these tests fail, saying how to install them: they
are part of what `make test` checks (`.ci/run` installs the two packages).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

import pytest

from chubbypy.client import HandleMode
from chubbypy.protocol.namespace import AclNames
from tests.integration.harness import LiveCell
from tests.integration.web_harness import WebProcess

CHROMIUM: Final = Path("/usr/bin/chromium")
CHROMEDRIVER: Final = Path("/usr/bin/chromedriver")
INSTALL: Final = (
    "the browser tests need Debian's chromium and chromium-driver: "
    "sudo apt-get install -y chromium chromium-driver (.ci/run does this as root)"
)
SCREENSHOTS: Final = Path(__file__).resolve().parents[2] / "var" / "screenshots"
WAIT_SECONDS: Final = 20.0
OPS = AclNames("ops", "ops", "ops")


def token_of(cell: LiveCell, principal: str) -> str:
    return (cell.data_dir / "_secrets" / f"{principal}.token").read_text().strip()


@pytest.fixture(scope="module")
def cell(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveCell]:
    """A cell with an app directory (JSON, text, a lock with a holder and a waiter), a
    file only 'ops' (the operator) may write, and one only 'ops' may read."""
    live = LiveCell(tmp_path_factory.mktemp("web-browser"))
    live.start()
    try:
        operator = live.client(principal=live.operator[0], token=live.operator[1])
        operator.create(live.path("acl/ops"), b"operator\n")
        operator.create(live.path("app"), directory=True)
        operator.create(live.path("app/config.json"), b'{"replicas": 3, "flags": {"beta": true}}')
        operator.create(live.path("app/notes.txt"), b"version 1\n")
        operator.create(live.path("app/guarded.txt"), b"only ops write here\n",
                        acl=AclNames("all", "ops", "ops"))  # fmt: skip
        operator.create(live.path("app/private"), directory=True, acl=OPS)
        operator.create(live.path("app/private/key"), b"secret", acl=OPS)
        operator.create(live.path("app/jobs"), directory=True)
        for name in ("alpha", "beta", "gamma"):
            operator.create(live.path(f"app/jobs/{name}"), name.encode())
        yield live
    finally:
        live.close()


@pytest.fixture(scope="module")
def web(cell: LiveCell) -> Iterator[WebProcess]:
    process = WebProcess(cell, web={"status_poll_seconds": 0.5})
    yield process
    assert process.stop() == 0, process.logs()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium through the system's chromedriver; fails (not skips) without them."""
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.exists()]
    if missing:
        pytest.fail(f"{', '.join(missing)} missing: {INSTALL}", pytrace=False)
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail("selenium is missing: pip install -e '.[test]' (make test does)", pytrace=False)
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must never download a browser
    profile = tempfile.mkdtemp(prefix="chubbypy-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={profile}", "--window-size=1280,900", "--hide-scrollbars",
    ):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(WAIT_SECONDS)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def wait(driver: Any, condition: Callable[[Any], Any], what: str) -> Any:
    from selenium.common.exceptions import (
        NoSuchElementException,
        StaleElementReferenceException,
        TimeoutException,
    )
    from selenium.webdriver.support.ui import WebDriverWait

    # An element read while its page is being replaced (a form's redirect, mid-poll) is
    # gone: the condition is asked again at the next poll, as for one not there yet.
    ignored = (NoSuchElementException, StaleElementReferenceException)
    try:
        waiting = WebDriverWait(
            driver, WAIT_SECONDS, poll_frequency=0.1, ignored_exceptions=ignored
        )
        return waiting.until(condition)
    except TimeoutException:
        raise AssertionError(
            f"not within {WAIT_SECONDS:g} s: {what}\n{driver.page_source[:3000]}"
        ) from None


def css(driver: Any, selector: str) -> Any:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, selector)


def all_css(driver: Any, selector: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return list(driver.find_elements(By.CSS_SELECTOR, selector))


def shot(driver: Any, name: str) -> None:
    """The whole page (the window grown to its height for the shot) as var/screenshots/NAME.png."""
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1280, max(900, min(int(height), 3000)))
    try:
        driver.save_screenshot(str(SCREENSHOTS / f"{name}.png"))
    finally:
        driver.set_window_size(1280, 900)


def live(driver: Any) -> None:
    """Wait until the page's event stream watches its nodes."""
    wait(driver, lambda d: "watching" in css(d, "#live").text, "the page watches its nodes")


def no_script_errors(driver: Any) -> None:
    errors = [
        e
        for e in driver.get_log("browser")
        if e["level"] == "SEVERE" and "favicon" not in e["message"]
    ]
    assert not [
        e for e in errors if "Content Security Policy" in e["message"] or "Uncaught" in e["message"]
    ], errors


# ----------------------------------------------------------------------------- reading


def test_the_tree_expands_lazily_and_opens_a_file(
    browser: Any, web: WebProcess, cell: LiveCell
) -> None:
    """The root lists app/; expanding it in place fetches its children; a file opens on
    its page with contents, metadata and the ACL names with their principals."""
    browser.get(f"{web.base}/tree")
    app = cell.path("app")
    css(browser, f'a.toggle[data-path="{app}"]').click()
    config = cell.path("app/config.json")
    wait(browser, lambda d: all_css(d, f'li.node[data-path="{config}"]'), "app/ expands in place")
    jobs = cell.path("app/jobs")
    css(browser, f'a.toggle[data-path="{jobs}"]').click()
    wait(browser, lambda d: all_css(d, f'li.node[data-path="{jobs}/gamma"]'), "jobs/ expands too")
    private = css(browser, f'li.node[data-path="{cell.path("app/private")}"]')
    assert "no read access" in private.text  # the ACL hides its metadata from anonymous
    assert browser.current_url == f"{web.base}/tree"  # nothing navigated
    live(browser)
    shot(browser, "tree")
    css(browser, f'li.node[data-path="{config}"] a.name').click()
    wait(browser, lambda d: d.current_url.startswith(f"{web.base}/node"), "the file's page opens")
    assert css(browser, "#contents").text == '{"replicas": 3, "flags": {"beta": true}}'
    css(browser, ".tabs a:nth-child(2)").click()  # JSON
    indented = '{\n  "replicas": 3,\n  "flags": {\n    "beta": true\n  }\n}'
    wait(browser, lambda d: css(d, "#contents").text == indented, "the JSON view is indented")
    assert css(browser, '#stat dd[data-field="content_generation"]').text == "1"
    acl = css(browser, "table.grid").text
    assert "everyone" in acl
    shot(browser, "node")
    no_script_errors(browser)


def test_a_lock_shows_its_holder_and_its_waiter(
    browser: Any, web: WebProcess, cell: LiveCell
) -> None:
    """The lock page names the holder and the waiter, with their clients and principals,
    and counts a waiter queued after it was drawn; the tree marks the lock, drawn by the
    server or expanded in place."""
    path = cell.path("app/leader")
    holder = cell.client(name="scheduler-a", principal=cell.operator[0], token=cell.operator[1])
    waiter = cell.client(name="scheduler-b")
    held = holder.open(
        path, mode=HandleMode.READ | HandleMode.WRITE, create=True, lock_delay_seconds=5
    )
    held.acquire()
    waiting = threading.Thread(target=lambda: waiter.open(path).acquire(), daemon=True)
    waiting.start()
    browser.get(f"{web.base}/lock?path={path}")
    wait(browser, lambda d: "scheduler-b" in css(d, "#waiters").text, "the waiter is listed")
    wait(browser, lambda d: css(d, "#waiter-count").text.startswith("1 in all"), "one waiter")
    holders = css(browser, "#holders").text
    for shown in ("scheduler-a", "operator", "5 s"):
        assert shown in holders
    assert "End session" not in holders  # anonymous is no operator here: not offered
    assert css(browser, "#lock-mode").text == "exclusive"
    shot(browser, "lock")
    browser.get(f"{web.base}/tree?path={cell.path('app')}")
    assert "locked · exclusive" in css(browser, f'li.node[data-path="{path}"]').text
    browser.get(f"{web.base}/tree")  # the root; app/ expanded in place marks the lock too
    css(browser, f'a.toggle[data-path="{cell.path("app")}"]').click()
    row = f'li.node[data-path="{path}"]'
    wait(browser, lambda d: all_css(d, row), "app/ expands in place")
    assert "locked · exclusive" in css(browser, row).text


def test_an_edit_by_another_client_arrives_live(
    browser: Any, web: WebProcess, cell: LiveCell
) -> None:
    """With the file's page open, another client's write shows without a reload, and so
    does a new child in the directory shown."""
    path = cell.path("app/notes.txt")
    browser.get(f"{web.base}/node?path={path}")
    live(browser)
    marker = browser.execute_script("window.__noReload = 1; return window.__noReload;")
    assert marker == 1
    other = cell.client()
    written = other.set_contents(path, b"version 2, written elsewhere\n").content_generation
    wait(
        browser,
        lambda d: css(d, "#contents").text == "version 2, written elsewhere",
        "the new contents appear",
    )
    assert css(browser, '#stat dd[data-field="content_generation"]').text == str(written)
    assert "changed by another client" in css(browser, "#banner").text
    assert browser.execute_script("return window.__noReload;") == 1  # no reload happened
    browser.get(f"{web.base}/tree?path={cell.path('app/jobs')}")
    live(browser)
    other.create(cell.path("app/jobs/delta"), b"new")
    wait(
        browser,
        lambda d: all_css(d, f'li.node[data-path="{cell.path("app/jobs/delta")}"]'),
        "the new child appears",
    )
    no_script_errors(browser)


# ----------------------------------------------------------------------------- changing


def test_logging_in_and_editing_with_compare_and_swap(
    browser: Any, web: WebProcess, cell: LiveCell
) -> None:
    """The operator logs in, saves an edit, then has a stale edit refused with the
    difference shown; the other client's write is kept."""
    browser.get(f"{web.base}/login")
    css(browser, 'input[name="principal"]').send_keys("operator")
    css(browser, 'input[name="token"]').send_keys(token_of(cell, "operator"))
    css(browser, "#login button").click()
    wait(browser, lambda d: css(d, "#principal").text == "operator", "logged in as the operator")
    path = cell.path("app/guarded.txt")
    browser.get(f"{web.base}/node?path={path}")
    saved = f"Saved: content generation {cell.client().get_stat(path).content_generation + 1}"
    editor = css(browser, "#edit-contents")
    editor.clear()
    editor.send_keys("edited by the operator\n")
    css(browser, "#edit button").click()
    wait(browser, lambda d: saved in d.page_source, "the edit is saved")
    assert cell.client().get_contents_and_stat(path).contents == b"edited by the operator\n"
    editor = css(browser, "#edit-contents")
    editor.clear()
    editor.send_keys("my stale edit\n")
    cell.client(principal=cell.operator[0], token=cell.operator[1]).set_contents(
        path, b"meanwhile\n"
    )
    css(browser, "#edit button").click()
    wait(browser, lambda d: "Not saved" in d.page_source, "the stale edit is refused")
    diff = css(browser, "#diff").text
    assert "-meanwhile" in diff
    assert "+my stale edit" in diff
    assert cell.client().get_contents_and_stat(path).contents == b"meanwhile\n"
    shot(browser, "edit-conflict")
    browser.get(f"{web.base}/node?path={cell.path('app/private/key')}")
    assert css(browser, "#contents").text == "secret"  # the operator may read it
    browser.get(f"{web.base}/sessions")
    wait(browser, lambda d: all_css(d, "#sessions tbody tr"), "sessions are listed")
    assert "chubbypy web for operator from 127.0.0.1" in css(browser, "#sessions").text
    shot(browser, "sessions")
    css(browser, "header form button").click()  # log out
    wait(browser, lambda d: css(d, "#principal").text == "anonymous", "logged out")


def test_an_anonymous_edit_is_refused(browser: Any, web: WebProcess, cell: LiveCell) -> None:
    """Anonymous may read the guarded file but its edit is refused by the cell, and the
    file is unchanged; the protected file cannot be read."""
    browser.delete_all_cookies()
    path = cell.path("app/guarded.txt")
    before = cell.client().get_contents_and_stat(path).contents
    browser.get(f"{web.base}/node?path={path}")
    editor = css(browser, "#edit-contents")
    editor.clear()
    editor.send_keys("anonymous was here\n")
    css(browser, "#edit button").click()
    wait(browser, lambda d: "PERMISSION_DENIED" in d.page_source, "the cell refuses the edit")
    assert "Not saved: PERMISSION_DENIED" in css(browser, ".notice.error").text
    assert "may not write" in css(browser, ".notice.error").text
    assert css(browser, "#edit-contents").get_attribute("value") == "anonymous was here\n"  # kept
    assert cell.client().get_contents_and_stat(path).contents == before
    shot(browser, "anonymous-refused")
    browser.get(f"{web.base}/node?path={cell.path('app/private/key')}")
    assert "PERMISSION_DENIED" in css(browser, ".notice.error").text


def test_the_cell_page_charts_the_replicas(browser: Any, web: WebProcess, cell: LiveCell) -> None:
    """The cell page lists the three replicas with the master marked, and its charts fill."""
    client = cell.client()
    for number in range(20):
        client.set_contents(cell.path("app/notes.txt"), f"load {number}".encode())
    browser.get(f"{web.base}/cell")
    wait(browser, lambda d: len(all_css(d, "#replicas tbody tr")) == 3, "three replicas")
    master = cell.master()
    wait(
        browser,
        lambda d: "master" in css(d, f'#replicas tr[data-replica="{master}"]').text,
        "the master is marked",
    )
    line = 'figure[data-series="writes_per_second"] polyline'
    wait(browser, lambda d: len(css(d, line).get_attribute("points").split()) >= 6, "charted")
    live(browser)
    shot(browser, "cell")
    no_script_errors(browser)


def test_a_refused_live_view_says_why_and_comes_back(
    browser: Any, web: WebProcess, cell: LiveCell
) -> None:
    """With this address's one live view (web.event_streams_per_login_max 1) taken, the
    page says why its live updates were refused and when it tries again; once the view is
    closed, the page's retry gets its stream and a new child appears live."""
    from tests.integration.web_harness import EventReader

    narrow = WebProcess(cell, name="web-narrow", web={"event_streams_per_login_max": 1})
    holder = EventReader(narrow.port, [cell.path("app")])
    try:
        assert holder.status == 200
        browser.get(f"{narrow.base}/tree?path={cell.path('app/jobs')}")
        wait(
            browser,
            lambda d: "too many live views from your address" in css(d, "#live").text,
            "the page says why its live updates are refused",
        )
        text = css(browser, "#live").text
        assert "close a tab" in text
        assert "trying again in 5 s" in text
        shot(browser, "live-refused")
        holder.close()
        live(browser)
        cell.client().create(cell.path("app/jobs/epsilon"), b"new")
        wait(
            browser,
            lambda d: all_css(d, f'li.node[data-path="{cell.path("app/jobs/epsilon")}"]'),
            "the new child appears once the page's retry got its stream",
        )
        no_script_errors(browser)
    finally:
        holder.close()
        browser.get("about:blank")
        assert narrow.stop() == 0, narrow.logs()


def test_a_failover_shows_as_a_banner(browser: Any, web: WebProcess, cell: LiveCell) -> None:
    """Killing the master shows a banner naming the new one, without a reload."""
    browser.get(f"{web.base}/tree?path={cell.path('app')}")
    live(browser)
    old = cell.wait_master()
    cell.kill_replica(old)
    try:
        new = cell.wait_for(lambda: cell.master() if cell.master() not in (None, old) else None,
                            "a new master", 15)  # fmt: skip
        wait(browser, lambda d: f"Fail-over: {new} is master now" in css(d, "#banner").text,
             "the banner names the new master")  # fmt: skip
        assert f"after {old}" in css(browser, "#banner").text
        shot(browser, "failover")
    finally:
        cell.start_replica(old)
