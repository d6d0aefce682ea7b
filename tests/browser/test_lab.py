"""The sampling lab in JupyterLab and Notebook 7 on the real local 0.5B: clicking a bar appends that token,
Back removes it, moving temperature changes the bars with no model call (the widget counts its model
calls), and Sample 100 draws its chart.  The prompt is a script tag's neighbour: no piece may run."""

from __future__ import annotations

from .lab import PANEL, open_notebook, page_errors, run_all, set_slider

PROMPT = "<i>x</i> I went to the"
NOTEBOOKS = {"lab.ipynb": ["%load_ext qwen_magics", f"%qwen_lab -m local:0.5b --seed 1 {PROMPT}"]}
LAB = f"{PANEL} .jp-CodeCell:nth-child(2) .qwen-lab"
TEXT_JS = "sel => document.querySelector(sel + ' .qwen-lab-text').textContent"
WIDTHS_JS = "sel => [...document.querySelectorAll(sel + ' .qwen-lab-bar')].map(b => b.style.width).join(',')"
CALLS_JS = "sel => document.querySelector(sel + ' .qwen-lab-calls').textContent"


def test_bars_buttons_and_sliders(jupyter, browser, server):
    page = open_notebook(browser, jupyter, "lab.ipynb")
    run_all(page, timeout=180_000)
    page.wait_for_selector(f"{LAB} .qwen-lab-bar", timeout=60_000)
    assert page.evaluate(TEXT_JS, LAB) == PROMPT  # the prompt's markup as text
    assert page.locator(f"{PANEL} .jp-OutputArea i").count() == 0

    opened = page.evaluate(WIDTHS_JS, LAB)

    # A bar's button takes its token; Back removes it, and the bars are those of the prompt again.
    third = page.locator(f"{LAB} .qwen-lab-take").nth(2)
    piece = third.text_content().replace("␣", " ")
    third.click()
    page.wait_for_function(f"sel => ({TEXT_JS})(sel) === {PROMPT + piece!r}", arg=LAB, timeout=30_000)
    page.locator(f"{LAB} .widget-button", has_text="Back").click()
    page.wait_for_function(f"sel => ({TEXT_JS})(sel) === {PROMPT!r}", arg=LAB, timeout=30_000)
    page.wait_for_function(f"sel => ({WIDTHS_JS})(sel) === {opened!r}", arg=LAB, timeout=30_000)

    # Temperature re-shapes the bars from the cached logits: the model-call count stays.
    calls, widths = page.evaluate(CALLS_JS, LAB), page.evaluate(WIDTHS_JS, LAB)
    set_slider(page, page.locator(f"{LAB} .widget-slider").filter(has_text="temperature"), "0.5")
    page.wait_for_function(f"sel => ({WIDTHS_JS})(sel) !== {widths!r}", arg=LAB, timeout=15_000)
    top_before = float(widths.split(",")[0].rstrip("%"))
    assert float(page.evaluate(WIDTHS_JS, LAB).split(",")[0].rstrip("%")) > top_before  # sharper
    assert page.evaluate(CALLS_JS, LAB) == calls

    # Sample 100 draws observed shares beside the computed ones.
    page.locator(f"{LAB} .widget-button", has_text="Sample 100").click()
    page.wait_for_selector(f"{LAB} svg[aria-label^='Sample 100']", timeout=15_000)
    assert page.evaluate(CALLS_JS, LAB) == calls
    assert page_errors(page) == []
