"""The HTML report in a real browser (headless Chromium): `nox -s report_browser` builds a fresh smoke report
and points CTBENCH_REPORT_DIR at it. Not in the default run (it needs Chromium and playwright)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def test_the_report_page_loads_with_every_table_and_figure():
    sync_api = pytest.importorskip("playwright.sync_api")
    folder = Path(os.environ.get("CTBENCH_REPORT_DIR", ""))
    page_path = folder / "index.html"
    if not page_path.exists():
        pytest.skip("no report: run `nox -s report_browser` (it builds one) or set CTBENCH_REPORT_DIR")
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    tasks = [p.stem for p in folder.glob("*.md") if p.name != "index.md"]
    figures = [p.stem for p in folder.glob("*.png") if p.name != "screenshot.png"]
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        errors: list[str] = []
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(page_path.resolve().as_uri(), wait_until="load")
        sections = page.eval_on_selector_all("section", "nodes => nodes.map(n => n.id)")
        tables = page.eval_on_selector_all("section table.cells", "nodes => nodes.length")
        images = page.eval_on_selector_all("img", "nodes => nodes.map(n => [n.alt, n.complete, n.naturalWidth])")
        page.screenshot(path=str(folder / "screenshot.png"), full_page=True)
        browser.close()
    assert errors == []
    assert sorted(sections) == sorted(tasks) and tables == len(tasks)
    assert sorted(alt for alt, _, _ in images) == sorted(figures)
    assert all(done and width > 0 for _, done, width in images), images  # no broken image
