"""Running ``pulsetrace ui`` for real (a subprocess on a free loopback port) and a headless Chromium.

Chromium and its driver are Debian's ``chromium`` and ``chromium-driver`` (scripts/setup.sh),
driven through Selenium with a fresh profile per browser, every background service off.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
_URL = re.compile(r"ui on (http://\S+/)")


def _env(extra: dict[str, str] | None) -> dict[str, str]:
    """The test process's environment without AWS region settings an earlier test may have left in it:
    a page's X-Ray console link depends on the region, which each test states itself."""
    base = {k: v for k, v in os.environ.items() if k not in ("AWS_REGION", "AWS_DEFAULT_REGION")}
    return {**base, **(extra or {})}


@contextmanager
def ui_server(*args: str, env: dict[str, str] | None = None, timeout: float = 60.0) -> Iterator[str]:
    """``pulsetrace ui --listen 127.0.0.1:0 ARGS...``; yields its base URL; SIGTERM on exit (exit 0)."""
    proc = subprocess.Popen([sys.executable, "-m", "pulsetrace.cli.main", "ui", "--listen", "127.0.0.1:0", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            env=_env(env))
    try:
        assert proc.stderr is not None
        deadline = time.monotonic() + timeout
        url = None
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            m = _URL.search(line)
            if m:
                url = m.group(1)
                break
        if url is None:
            proc.kill()
            out, err = proc.communicate(timeout=10)
            pytest.fail(f"pulsetrace ui did not start: {out}{err}")
        wait_http(url + "static/ui.css", deadline)
        yield url.rstrip("/")
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
            pytest.fail("pulsetrace ui did not stop on SIGTERM within 20 s")
        assert code == 0, f"pulsetrace ui exited {code} on SIGTERM"


def wait_http(url: str, deadline: float) -> None:
    while True:
        try:
            if httpx.get(url, timeout=5).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"{url} never answered")
        time.sleep(0.2)


@contextmanager
def chromium(width: int = 1400, height: int = 1000) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary = shutil.which("chromium") or "/usr/bin/chromium"
    driver_path = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    if not (os.path.exists(binary) and os.path.exists(driver_path)):
        pytest.fail("chromium / chromedriver are not installed: run scripts/setup.sh "
                    "(Debian packages chromium, chromium-driver)")
    profile = tempfile.mkdtemp(prefix="pulsetrace-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                f"--user-data-dir={profile}", f"--window-size={width},{height}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(driver_path))
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def wait_for(condition: Any, timeout: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.2)
