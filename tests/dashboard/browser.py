"""Driving Debian's Chromium with Playwright for the dashboard tests (`scripts/test-prereqs` installs it).

Playwright only drives the browser: `playwright install` would download a browser build, which neither a
developer's machine nor CI may do.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.support.servers import unavailable

CHROMIUM = os.environ.get("QUOTAGATE_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "artifacts" / "dashboard"
DOCS_IMG = REPO / "docs" / "img"
# The views whose screenshots the docs show; QUOTAGATE_TEST_UPDATE_SCREENSHOTS=1 refreshes them from a run.
DOC_VIEWS = ("overview-admin", "overview-key", "keys", "sub-accounts", "sub-account")


def prerequisites() -> None:
    """Skip loudly without Playwright or Chromium (fail under CI=true), like the suite's other servers."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as exc:
        unavailable("Playwright (pip package `playwright`)", "the virtualenv", exc)
    if not Path(CHROMIUM).exists():
        unavailable("Chromium", CHROMIUM, FileNotFoundError("run scripts/test-prereqs"))


@contextmanager
def launched() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@contextmanager
def new_page(
    browser: Any, width: int = 1440, height: int = 900, *, expected_errors: tuple[str, ...] = ()
) -> Iterator[Any]:
    """A page in a fresh context (its own sessionStorage), failing the test on any script error but those
    containing one of `expected_errors` (e.g. the failed fetches of a test that stops the server)."""
    context = browser.new_context(viewport={"width": width, "height": height}, locale="en-US", timezone_id="UTC")
    context.grant_permissions(["clipboard-read", "clipboard-write"])
    page = context.new_page()
    page.set_default_timeout(10_000)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    try:
        yield page
    finally:
        context.close()
    # A refused credential is logged by Chromium as a failed fetch (401/403); anything else is a bug of the page.
    expected = ("401", "403", *expected_errors)
    assert [e for e in errors if not any(x in e for x in expected)] == []


def fits_sideways(page: Any) -> None:
    """Nothing overflows sideways: not the page, and no table needs its own horizontal scroll."""
    page.wait_for_timeout(200)  # let the layout settle after a resize
    assert page.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth")
    overflowing = page.evaluate(
        "[...document.querySelectorAll('.table-wrap')].filter(w => w.scrollWidth > w.clientWidth + 1)"
        ".map(w => w.closest('section')?.querySelector('h2')?.textContent)"
    )
    assert overflowing == []


def shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.wait_for_timeout(300)  # let a redraw after the last poll settle
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
    if os.environ.get("QUOTAGATE_TEST_UPDATE_SCREENSHOTS") == "1" and name in DOC_VIEWS:
        shutil.copy(ARTIFACTS / f"{name}.png", DOCS_IMG / f"dashboard-{name}.png")


def sign_in(page: Any, url: str, credential: str) -> None:
    page.goto(url + "/dashboard")
    page.fill("#token", credential)
    page.click("button[type=submit]")
