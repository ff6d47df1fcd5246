"""A real headless Chromium for the browser tests: Debian's ``chromium``, driven by Playwright.

``make test`` installs the browser when it is missing (scripts/install-browser.sh: Debian's
``chromium`` and ``chromium-driver``); Playwright is a dev dependency and drives that
executable, so no browser is downloaded. A test that needs the browser skips, saying why, only
when it is not there (the package registry could not be reached).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.sync_api import Page, sync_playwright

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--no-sandbox",  # the tests may run as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    # The machine's network is closed: background fetches would fail, many at a time.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ROOT = Path(__file__).resolve().parents[2]

needs_browser = pytest.mark.skipif(
    not Path(CHROMIUM).exists(),
    reason="Chromium is not installed: make test installs Debian's chromium"
    " (scripts/install-browser.sh), which failed (no package registry?)",
)


@dataclass
class Console:
    """What the page said on its console that a person would call a problem."""

    problems: list[str] = field(default_factory=list)


@contextmanager
def browser_page(width: int = 1400, height: int = 900) -> Iterator[tuple[Page, Console]]:
    """A fresh page in a fresh headless Chromium, and its console's errors and warnings."""
    console = Console()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS
        )
        try:
            page = browser.new_context(viewport={"width": width, "height": height}).new_page()
            page.on(
                "console",
                lambda message: (
                    console.problems.append(f"console.{message.type}: {message.text}")
                    if message.type in ("error", "warning")
                    else None
                ),
            )
            page.on("pageerror", lambda error: console.problems.append(f"pageerror: {error}"))
            yield page, console
        finally:
            browser.close()
