"""ipywidgets render in a real front end and live updates from the kernel reach the browser one by one."""

from __future__ import annotations

import time

from .lab import open_notebook, page_errors, run_all, screenshot

CELL_DISPLAY = (
    "import ipywidgets as w; from IPython.display import display; "
    'b = w.HBox([w.HTML(value=f"<b>col {i}</b> streamed text {i}") for i in range(3)]); display(b)'
)
CELL_UPDATE = (
    "import time\n"
    "for i in range(5):\n"
    '    b.children[0].value = f"<b>col 0</b> update {i}"; time.sleep(0.2)'
)
NOTEBOOKS = {"widgets.ipynb": [CELL_DISPLAY, CELL_UPDATE]}
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


def test_hbox_of_html_widgets_renders_and_updates_live(jupyter, browser, tmp_path):
    started = time.monotonic()
    page = open_notebook(browser, jupyter, "widgets.ipynb")
    page.evaluate(WATCH_COL0)
    run_all(page)
    page.wait_for_function(
        "sel => { const c = document.querySelector(sel + ' .widget-html-content');"
        " return c !== null && c.textContent.endsWith('update 4'); }",
        arg=HTML_COLS, timeout=15_000)

    texts = page.locator(f"{HTML_COLS} .widget-html-content").all_text_contents()
    assert len(texts) == 3, (texts, jupyter.log())
    assert texts[0] == "col 0 update 4"
    assert texts[1:] == ["col 1 streamed text 1", "col 2 streamed text 2"]
    # Bold markup survived the trip: each column has a <b>.
    assert page.locator(f"{HTML_COLS} .widget-html-content b").count() == 3
    seen = page.evaluate("window.__col0")
    # Seen here: all five updates, in order. Allow coalescing under load, but not batching.
    steps = [int(t.rsplit(" ", 1)[1]) for t in seen if "update" in t]
    assert steps == sorted(set(steps)) and steps[-1] == 4, seen
    assert len(steps) >= 3, f"updates did not reach the browser one by one: {seen}"
    assert page_errors(page) == [], page_errors(page)

    png = screenshot(page, tmp_path / f"{jupyter.front_end.name}-widgets.png")
    assert png.stat().st_size > 10_000, png.stat().st_size
    assert time.monotonic() - started < 60
