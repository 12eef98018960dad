"""Open the rendered book in headless Chromium: figures render, widgets load offline, sliders switch frames.

Which HTML is tested (the rule):
* ``_build/html`` (the output of ``python scripts/build_book.py``) is reused when its ``index.html`` is
  newer than every source of the book: ``_config.yml``, ``_toc.yml``, everything under ``book/``,
  ``aurora/**/*.py`` and ``scripts/build_book.py``. Then every chapter page in it is opened.
* Otherwise the chapters this test needs (``FRESH_BUILD_CHAPTERS``) are built in quick mode into
  ``artifacts/browser-book/`` (git-ignored; ``_build`` is left alone) and those pages are opened.

Chromium is Debian's ``/usr/bin/chromium`` driven by ``tests/browser/check_book.js`` (playwright-core).
The test is skipped, with the reason, only when chromium, node or the npm packages are missing and
``CI`` is not ``true``; in CI it fails instead. Screenshots go to ``artifacts/screenshots/``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path(os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"))
CHECK_SCRIPT = REPO / "tests" / "browser" / "check_book.js"
SCREENSHOTS = REPO / "artifacts" / "screenshots"
FRESH_BUILD_DIR = REPO / "artifacts" / "browser-book"
FRESH_BUILD_CHAPTERS = ["intro", "anl_explorer"]
ANL_EXPLORER_MIN_SLIDERS = 6

# Console errors that the Jupyter Book 1.0.4 theme stack itself produces on every page, unrelated
# to this book's content: sphinx-thebe registers its inline config script once per
# `env-before-read-docs` event, which Jupyter Book fires twice, so `const THEBE_JS_URL` is declared
# twice; pydata-sphinx-theme logs an error when no light/dark mode is stored yet (a fresh profile).
KNOWN_THEME_CONSOLE_ERRORS = (
    "SyntaxError: Identifier 'THEBE_JS_URL' has already been declared",
    "Got invalid theme mode: . Resetting to auto.",
)


def missing_tools() -> list[str]:
    missing = []
    if not CHROMIUM.exists():
        missing.append(f"chromium ({CHROMIUM}; `make setup-browser` installs it)")
    if shutil.which("node") is None:
        missing.append("node")
    for package in ("playwright-core", "@jupyter-widgets/html-manager", "requirejs", "mathjax"):
        if not (REPO / "node_modules" / package).is_dir():
            missing.append(f"node_modules/{package} (`npm ci`)")
    return missing


def book_sources() -> list[Path]:
    sources = [REPO / "_config.yml", REPO / "_toc.yml", REPO / "scripts" / "build_book.py"]
    sources += [path for path in (REPO / "book").rglob("*") if path.is_file()]
    sources += list((REPO / "aurora").rglob("*.py"))
    return sources


def reusable_build() -> Path | None:
    """``_build/html`` if it is newer than every book source (the rule in the module docstring)."""
    index = REPO / "_build" / "html" / "index.html"
    if not index.exists():
        return None
    newest_source = max(path.stat().st_mtime for path in book_sources())
    return index.parent if index.stat().st_mtime > newest_source else None


def chapter_pages(html_dir: Path) -> list[str]:
    toc = yaml.safe_load((REPO / "_toc.yml").read_text())
    entries = [toc["root"]] + [item["file"] for item in toc.get("chapters", []) if "file" in item]
    return [f"{entry}.html" for entry in entries if (html_dir / f"{entry}.html").exists()]


@pytest.fixture(scope="module")
def report() -> dict:
    missing = missing_tools()
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but the browser test cannot run: missing {', '.join(missing)}")
        pytest.skip(f"missing {', '.join(missing)} (set up with `make setup-browser`)")
    html_dir = reusable_build()
    if html_dir is None:
        completed = subprocess.run(
            [sys.executable, str(REPO / "scripts" / "build_book.py"), "--quick",
             "--chapters", *FRESH_BUILD_CHAPTERS,
             "--executed-dir", str(FRESH_BUILD_DIR / "executed"), "--output", str(FRESH_BUILD_DIR)],
            capture_output=True, text=True, timeout=900,
        )
        assert completed.returncode == 0, completed.stdout[-4000:] + completed.stderr[-4000:]
        html_dir = FRESH_BUILD_DIR / "html"
    pages = chapter_pages(html_dir)
    assert {f"book/{name}.html" for name in FRESH_BUILD_CHAPTERS} <= set(pages)
    if SCREENSHOTS.exists():
        shutil.rmtree(SCREENSHOTS)
    completed = subprocess.run(
        ["node", str(CHECK_SCRIPT), str(html_dir), str(SCREENSHOTS), *pages],
        capture_output=True, text=True, timeout=600, cwd=REPO,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    return json.loads(completed.stdout)


def page(report: dict, path: str) -> dict:
    return next(result for result in report["pages"] if result["page"] == path)


def test_no_request_leaves_the_machine(report):
    assert report["externalRequests"] == []
    for result in report["pages"]:
        assert result["failedRequests"] == [], result["page"]


def test_pages_log_no_errors_of_their_own(report):
    for result in report["pages"]:
        own = [error for error in result["consoleErrors"] if error not in KNOWN_THEME_CONSOLE_ERRORS]
        assert own == [], result["page"]


def test_every_figure_renders(report):
    for result in report["pages"]:
        broken = [image["src"] for image in result["images"] if image["naturalWidth"] == 0]
        assert broken == [], result["page"]
    assert any(result["images"] for result in report["pages"])


def test_math_is_typeset_offline(report):
    assert page(report, "book/intro.html")["mathElements"] > 0


def test_widget_manager_loads_and_renders_every_widget(report):
    with_widgets = [result for result in report["pages"] if result["widgetViews"] > 0]
    assert "book/anl_explorer.html" in [result["page"] for result in with_widgets]
    for result in with_widgets:
        assert result["widgetManager"], result["page"]
        assert result["widgetsRendered"] == result["widgetViews"], result["page"]


def test_moving_a_slider_changes_the_shown_figure(report):
    explorer = page(report, "book/anl_explorer.html")
    assert len(explorer["sliders"]) >= ANL_EXPLORER_MIN_SLIDERS
    for result in report["pages"]:
        for slider in result["sliders"]:
            assert slider["handles"] >= 1
            for move in slider["moves"]:
                where = f"{result['page']} slider {slider['box']} handle {move['handle']}"
                assert move["before"] and move["after"], where
                assert move["after"] != move["before"], where
                assert move["labelAfter"] != move["labelBefore"], where
                assert all(width > 0 for width in move["naturalWidths"]), where
