"""Chromium pages on a JupyterLab for the browser tests (Debian chromium through Playwright)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).parent.parent / "test-artifacts"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
]


def require_browser() -> Any:
    """``playwright.sync_api``, or skip the calling test module saying what is missing (call it
    at module level: ``sync_api = require_browser()``)."""
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="Python playwright is not installed (pip install -e '.[dev]')"
    )
    if not CHROMIUM.exists():
        pytest.skip(
            "Debian chromium is not installed at /usr/bin/chromium (apt-get install chromium)", allow_module_level=True
        )
    return sync_api


@contextlib.contextmanager
def lab_page(url: str, token: str, *, path: str = "lab") -> Iterator[Any]:
    """A chromium page logged in to JupyterLab at ``url`` with ``token``; news toasts closed."""
    from playwright import sync_api

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS, headless=True)
        context = browser.new_context(viewport={"width": 1400, "height": 900}, accept_downloads=True)
        pg = context.new_page()
        pg.goto(f"{url}{path}?token={token}", timeout=60_000)
        pg.wait_for_selector(".jp-LabShell", timeout=60_000)
        try:  # JupyterLab's "get notified about news?" toast would cover the screenshots
            pg.locator(".jp-Notification-Toast-Close, .Toastify__close-button").first.click(timeout=5_000)
        except sync_api.TimeoutError:
            pass
        try:
            yield pg
        finally:
            context.close()
            browser.close()


def shot(pg: Any, name: str) -> Path:
    """Save a screenshot of the page as ``test-artifacts/<name>.png``."""
    path = ARTIFACTS / f"{name}.png"
    pg.screenshot(path=str(path))
    return path
