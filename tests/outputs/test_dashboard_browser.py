"""The built-in dashboard page in headless Chromium (Debian's chromium + chromium-driver, via selenium):
renders best offers, the allocation with reasons and the savings chart from the vendored Chart.js,
updates live over server-sent events, and is saved as a screenshot
(tests/outputs/artifacts/dashboard.png)."""

from __future__ import annotations

import shutil
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from outputs.api import ApiConfig
from outputs.server import serve_in_thread
from outputs.sink import ClickHouseWriter
from schemas.events import AllocationDecided, Event

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
ADMIN = "admin-browser-key-0123456789"

pytestmark = pytest.mark.skipif(
    not (CHROMIUM and DRIVER), reason="needs Debian's chromium and chromium-driver: "
                                      "apt-get install -y chromium chromium-driver")


def _driver(profile: str) -> Any:
    selenium = pytest.importorskip("selenium", reason="needs selenium (pip install selenium)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    assert selenium
    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
              "--disable-background-networking", "--disable-component-update", "--disable-sync",
              "--disable-dev-shm-usage", "--window-size=1400,1000", f"--user-data-dir={profile}"):
        opts.add_argument(a)
    return webdriver.Chrome(service=Service(str(DRIVER)), options=opts)


def _wait(fn: Any, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = fn()
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError("timed out waiting for the page")


def test_dashboard_renders_and_updates_live(loaded_db: tuple[Any, str, list[Event]]) -> None:
    client, db, events = loaded_db
    server = serve_in_thread(client, db, port=0, config=ApiConfig(db=db, admin_key=ADMIN, refresh_s=0.3))
    profile = tempfile.mkdtemp(prefix="cloudarb-chromium-")
    driver = None
    try:
        driver = _driver(profile)
        driver.get(f"{server.url}/dashboard#key={ADMIN}")
        _wait(lambda: driver.execute_script("return document.body.dataset.version"))
        v1 = int(driver.execute_script("return document.body.dataset.version"))
        rows = driver.execute_script("return document.querySelectorAll('#alloc tbody tr').length")
        offers = driver.execute_script("return document.querySelectorAll('#offers tbody tr').length")
        assert rows >= 4 and offers >= 10
        assert "$" in driver.find_element("id", "saving").text
        assert driver.execute_script("return typeof Chart !== 'undefined' && Chart.version.startsWith('4')")
        # the chart drew something: some canvas pixels are not transparent
        painted = driver.execute_script(
            "const c=document.getElementById('savingsChart');const d=c.getContext('2d')"
            ".getImageData(0,0,c.width,c.height).data;let n=0;for(let i=3;i<d.length;i+=4){if(d[i])n++}return n")
        assert painted > 1000
        assert ADMIN not in driver.current_url  # the key left the URL
        # live update: a new decision lands in ClickHouse -> snapshot -> SSE -> page
        last = [e for e in events if isinstance(e, AllocationDecided)][-1]
        # (the why column shows each workload's one-sentence summary)
        newer = last.model_copy(update={"event_id": "live-test", "decided_at": last.decided_at + timedelta(hours=1),
                                        "reason": "live update", "explanations": [
                                            e.model_copy(update={"summary": "live update test"})
                                            for e in last.explanations]})
        assert newer.explanations
        ClickHouseWriter(client, db).write([newer])
        _wait(lambda: int(driver.execute_script("return document.body.dataset.version")) > v1)
        _wait(lambda: "live update test" in driver.find_element("id", "alloc").text)
        ARTIFACTS.mkdir(exist_ok=True)
        driver.save_screenshot(str(ARTIFACTS / "dashboard.png"))
        assert (ARTIFACTS / "dashboard.png").stat().st_size > 10_000
        # no key -> the page asks for one
        driver.execute_script("sessionStorage.clear()")
        driver.get(f"{server.url}/dashboard")
        _wait(lambda: "enter an API key" in driver.find_element("id", "status").text)
    finally:
        if driver is not None:
            driver.quit()
        server.stop()
        shutil.rmtree(profile, ignore_errors=True)
