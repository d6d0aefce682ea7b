"""ipywidgets render in a real JupyterLab and live updates from the kernel reach the browser.

Needs `bash .ci/install-browser` (Debian chromium, jupyterlab, playwright); skipped without them.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.browser]

sync_api = pytest.importorskip("playwright.sync_api", reason="run .ci/install-browser")
pytest.importorskip("jupyterlab", reason="run .ci/install-browser")

from .lab import (  # noqa: E402
    CHROMIUM, JupyterLab, chromium_context, open_notebook, run_all, screenshot, write_notebook,
)

if shutil.which(CHROMIUM) is None:
    pytest.skip(f"{CHROMIUM} missing: run .ci/install-browser", allow_module_level=True)

CELL_DISPLAY = (
    "import ipywidgets as w; from IPython.display import display; "
    'b = w.HBox([w.HTML(value=f"<b>col {i}</b> streamed text {i}") for i in range(3)]); display(b)'
)
CELL_UPDATE = (
    "import time\n"
    "for i in range(5):\n"
    '    b.children[0].value = f"<b>col 0</b> update {i}"; time.sleep(0.2)'
)
HTML_COLS = ".jp-NotebookPanel .jp-OutputArea .widget-hbox .widget-html"

# Records every text the first widget column shows, so the test sees the updates arrive one by one.
WATCH_COL0 = """() => {
    window.__col0 = [];
    new MutationObserver(() => {
        const el = document.querySelector('%s .widget-html-content');
        const text = el ? el.textContent : null;
        if (text !== null && window.__col0[window.__col0.length - 1] !== text) window.__col0.push(text);
    }).observe(document.body, {subtree: true, childList: true, characterData: true});
}""" % HTML_COLS


def test_hbox_of_html_widgets_renders_and_updates_live(tmp_path: Path) -> None:
    started = time.monotonic()
    root = tmp_path / "root"
    root.mkdir()
    write_notebook(root / "widgets.ipynb", [CELL_DISPLAY, CELL_UPDATE])

    with JupyterLab(root, state_dir=tmp_path / "lab-state") as lab, sync_api.sync_playwright() as pw:
        context = chromium_context(pw, tmp_path / "chromium-profile")
        try:
            page = open_notebook(context, lab, "widgets.ipynb")
            page.evaluate(WATCH_COL0)
            run_all(page)
            page.wait_for_function(
                "sel => { const c = document.querySelector(sel + ' .widget-html-content');"
                " return c !== null && c.textContent.endsWith('update 4'); }",
                arg=HTML_COLS, timeout=15_000)

            texts = page.locator(f"{HTML_COLS} .widget-html-content").all_text_contents()
            assert len(texts) == 3, (texts, lab.log())
            assert texts[0] == "col 0 update 4"
            assert texts[1:] == ["col 1 streamed text 1", "col 2 streamed text 2"]
            # Bold markup survived the trip: each column has a <b>.
            assert page.locator(f"{HTML_COLS} .widget-html-content b").count() == 3
            seen = page.evaluate("window.__col0")
            # Seen here: all five updates, in order. Allow coalescing under load, but not batching.
            steps = [int(t.rsplit(" ", 1)[1]) for t in seen if "update" in t]
            assert steps == sorted(set(steps)) and steps[-1] == 4, seen
            assert len(steps) >= 3, f"updates did not reach the browser one by one: {seen}"

            png = screenshot(page, tmp_path / "lab-widgets.png")
            assert png.stat().st_size > 10_000, png.stat().st_size
        finally:
            context.close()

    assert lab.leftover_kernels == [], lab.log()
    assert time.monotonic() - started < 90
