"""The panel of columns in JupyterLab and Notebook 7, in headless Chromium, set as a person sets it.

A two-column panel (qwen-plus at temperature 0, qwen-flash at 1.2): the right column's temperature is
typed into its slider, Run all streams both columns at once (the loopback server records both requests
open together) and the summary appears under them; + column copies the last column's settings; a linked
slider moves in every column; "Copy as cell", clicked while the cursor is in another cell, puts the
%%qwen_compare cell (``p.as_compare_cell()``, read back from the kernel) into a new cell right under the
panel's, through ipylab's front end commands, and that cell, run, sends a request per column with the
column's model and temperature; a cell that calls ``copy_as_cell()`` gets it as the next cell.
"""

from __future__ import annotations

import pytest
from loopback import Script
from parts import ipylab_missing, require

from .lab import FOOTERS_JS, PANEL, WATCH_ANSWERS, open_notebook, page_errors, run_all, set_slider

NOTEBOOKS = {"columns.ipynb": [
    "%load_ext qwen_magics",
    "import qwen_magics\np = qwen_magics.panel(model=['qwen-plus', 'qwen-flash'], temperature=[0, 1.2])\np",
    "# the cell where the cursor is when Copy as cell is clicked",
]}
PANEL_CELL = f"{PANEL} .jp-CodeCell:nth-child(2)"
COPY_CELL = f"{PANEL} .jp-CodeCell:nth-child(3)"
COLUMNS = f"{PANEL_CELL} .widget-gridbox > .widget-vbox"
CELLS = f"{PANEL} .jp-CodeCell"


@pytest.fixture(scope="module")
def page(jupyter, browser, server):
    server.reset()
    page = open_notebook(browser, jupyter, "columns.ipynb")
    page.evaluate(WATCH_ANSWERS, [PANEL_CELL, 'Colours'])
    run_all(page, timeout=120_000)
    page.locator(COLUMNS).nth(1).wait_for(state="visible", timeout=30_000)
    return page


def column(page, i: int):
    return page.locator(COLUMNS).nth(i)


def slider(col, name: str):
    return col.locator(".widget-slider").filter(has_text=name)


def readout(col, name: str) -> str:
    return slider(col, name).locator(".widget-readout").text_content().strip()


def button(page, text: str):
    return page.locator(f"{PANEL_CELL} .widget-button").filter(has_text=text).first


def test_two_columns_stream_at_once_after_the_right_temperature_moves_and_the_summary_follows(page, server):
    assert page.locator(COLUMNS).count() == 2
    for i in (0, 1):  # each column its own sliders
        assert slider(column(page, i), "temperature").count() == 1 and slider(column(page, i), "top_p").count() == 1
    set_slider(page, slider(column(page, 1), "temperature"), "1.3")
    page.locator(f"{PANEL_CELL} textarea[placeholder='prompt']").fill("Name three colours.")
    server.reset()
    server.enqueue(Script(reasoning="", text="Colours: red, green and blue. " * 4, chunk_chars=5, chunk_delay=0.08,
                          repeat=2))
    button(page, "Run all").click()
    page.wait_for_function(FOOTERS_JS, arg=[PANEL_CELL, 2], timeout=60_000)
    chats = [r for r in server.requests if r.body is not None]
    assert sorted((r.body["model"], r.body["temperature"]) for r in chats) == [("qwen-flash", 1.3), ("qwen-plus", 0)]
    assert max(r.started for r in chats) < min(r.finished for r in chats)  # both streams open at once
    assert not any("top_p" in r.body for r in chats)  # unset, as rendered: the model's default
    assert len(page.evaluate("window.__answers")) >= 4, "the answers arrived whole, not streamed"
    summary = page.locator(f"{PANEL_CELL} .widget-html-content").filter(has_text="similar")
    summary.first.wait_for(state="visible", timeout=30_000)
    assert page_errors(page) == []


def test_plus_column_copies_the_last_columns_settings(page):
    button(page, "+ column").click()
    third = column(page, 2)
    third.wait_for(state="visible", timeout=15_000)
    assert readout(third, "temperature") == "1.30"
    assert third.locator("input[list]").first.input_value() == "qwen-flash"  # the model picker
    assert page_errors(page) == []


def test_a_linked_slider_moves_in_every_column(page):
    first = column(page, 0)
    row = first.locator(".widget-hbox").filter(has=page.locator(".widget-slider").filter(has_text="top_p"))
    row.locator(".widget-checkbox input").uncheck()  # top_p was the model's default: give it a value
    row.locator(".widget-toggle-button").click()  # link it
    set_slider(page, slider(first, "top_p"), "0.3")
    page.wait_for_function(
        "sel => [...document.querySelectorAll(sel)].every(c => [...c.querySelectorAll('.widget-slider')]"
        ".some(s => s.textContent.includes('top_p') && s.querySelector('.widget-readout')?.textContent.trim()"
        " === '0.30'))", arg=COLUMNS, timeout=15_000)
    assert [readout(column(page, i), "temperature") for i in range(3)] == ["0.00", "1.30", "1.30"]  # not linked
    assert page_errors(page) == []


def source(cell) -> str:
    """A cell's text as its editor shows it: CodeMirror draws each line as a ``.cm-line``."""
    return "\n".join(cell.locator(".cm-line").all_text_contents())


def run_in(page, cell, code: str) -> None:
    """Type ``code`` over a cell's text and run it with Shift+Enter, as a person does."""
    cell.locator(".jp-InputArea-editor").click()
    page.keyboard.press("Control+A")
    page.keyboard.type(code)
    page.keyboard.press("Shift+Enter")


def test_copy_as_cell_inserts_the_compare_cell_under_the_panels_cell_and_it_runs(page, server):
    require("this browser test", ipylab_missing())
    page.locator(f"{PANEL_CELL} textarea[placeholder='prompt']").fill("Name three colours.")
    cells = page.locator(CELLS)
    assert cells.count() == 3
    page.locator(f"{COPY_CELL} .jp-InputArea-editor").click()  # the cursor in the cell under the panel's
    button(page, "Copy as cell").click()
    page.wait_for_function("([sel, n]) => document.querySelectorAll(sel).length === n", arg=[CELLS, 4],
                           timeout=30_000)
    inserted = cells.nth(2)  # right under the panel's cell; the cell that had the cursor moved down
    page.wait_for_function("sel => document.querySelector(sel)?.textContent.startsWith('%%qwen_compare')",
                           arg=f"{CELLS}:nth-child(3) .cm-content", timeout=30_000)
    assert source(cells.nth(3)) == "# the cell where the cursor is when Copy as cell is clicked"
    assert page.locator(f"{PANEL_CELL} pre").count() == 0  # inserted, so not shown to copy by hand
    assert "in a new cell under this one" in page.locator(f"{PANEL_CELL} .widget-html").first.text_content()

    run_in(page, cells.nth(3), "print(p.as_compare_cell(), end='')")  # what the kernel says the cell is
    kernel_says = page.locator(f"{CELLS}:nth-child(4) .jp-OutputArea-output")
    kernel_says.wait_for(state="visible", timeout=30_000)
    expected = kernel_says.text_content()
    assert expected.startswith("%%qwen_compare -m qwen-plus,qwen-flash") and "\nName three colours." in expected
    assert source(inserted) == expected

    n = page.locator(COLUMNS).count()
    settings = sorted((column(page, i).locator("input[list]").first.input_value(),
                       float(readout(column(page, i), "temperature"))) for i in range(n))
    server.reset()
    inserted.locator(".jp-InputArea-editor").click()
    page.keyboard.press("Shift+Enter")
    page.wait_for_function(FOOTERS_JS, arg=[f"{CELLS}:nth-child(3)", n], timeout=60_000)
    chats = [r.body for r in server.requests if r.body is not None]
    assert sorted((b["model"], b["temperature"]) for b in chats) == settings  # a request per column, as set
    assert all(b["messages"][-1]["content"] == "Name three colours." for b in chats)
    assert page_errors(page) == []


def test_a_cell_that_calls_copy_as_cell_gets_the_compare_cell_as_its_next_cell(page):
    cells = page.locator(CELLS)
    before = cells.count()
    run_in(page, cells.nth(before - 1), "p.copy_as_cell()")
    page.wait_for_function("([sel, n]) => document.querySelectorAll(sel).length > n", arg=[CELLS, before],
                           timeout=30_000)
    page.wait_for_function("sel => document.querySelector(sel)?.textContent.startsWith('%%qwen_compare')",
                           arg=f"{CELLS}:nth-child({before + 1}) .cm-content", timeout=30_000)
    assert source(cells.nth(before)) == source(cells.nth(2))  # the same cell as the button's
    assert page_errors(page) == []
