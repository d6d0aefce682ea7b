"""A 3-column %%qwen_compare and the sampling panel, in JupyterLab and Notebook 7 in headless Chromium.

The kernel talks to the loopback DashScope server; the answers carry script tags and event handlers
(and the panel's web-search sources a hostile title and a javascript: URL), which must reach the page
as text and never run. The panel's controls are set as a person sets them, and the request the
loopback records says what Run sent.
"""

from __future__ import annotations

import pytest
from loopback import Script

from .lab import FOOTERS_JS, PANEL, WATCH_ANSWERS, open_notebook, page_errors, run_all, set_slider

EVIL = ("Entropy counts **microstates**.\n\n<script>document.title='pwned'</script>\n\n"
        "<img src=x onerror=\"document.title='pwned'\">")
HOSTILE_SOURCES = [
    {"title": "<script>document.title='pwned'</script>Entropy notes", "url": "https://example.org/entropy"},
    {"title": "Not a link", "url": "javascript:document.title='pwned'"},
]
NOTEBOOKS = {"compare.ipynb": [
    "%load_ext qwen_magics",
    "%%qwen_compare -m qwen3.5-plus,qwen-flash,qwen-plus -t 0.7\nExplain entropy in one paragraph.",
    "%qwen_panel",
]}
CELL_OUTPUT = ".jp-OutputArea .widget-html-content"
COMPARE_CELL = f"{PANEL} .jp-CodeCell:nth-child(2)"
PANEL_CELL = f"{PANEL} .jp-CodeCell:nth-child(3)"


@pytest.fixture(scope="module")
def page(jupyter, browser, server):
    """The notebook run once: the comparison streamed its three columns, the panel is shown."""
    server.reset()
    server.enqueue(Script(reasoning="Let me think about microstates. " * 4, text=EVIL, chunk_chars=6,
                          chunk_delay=0.08, repeat=3))
    page = open_notebook(browser, jupyter, "compare.ipynb")
    page.evaluate(WATCH_ANSWERS, [COMPARE_CELL, 'Entrop'])
    run_all(page, timeout=120_000)
    page.wait_for_function(FOOTERS_JS, arg=[COMPARE_CELL, 3], timeout=30_000)
    return page


def test_three_columns_stream_markdown_and_show_model_html_as_text(page):
    texts = page.locator(f"{COMPARE_CELL} {CELL_OUTPUT}").all_text_contents()
    for label in ("-m qwen3.5-plus -t 0.7", "-m qwen-flash -t 0.7", "-m qwen-plus -t 0.7"):
        assert label in texts
    assert sum(t.strip() == "Entropy counts microstates." for t in texts) == 3  # markdown rendered
    assert sum("<script>document.title='pwned'</script>" in t for t in texts) == 3, texts  # shown as text
    assert sum("<img src=x onerror=" in t for t in texts) == 3, texts
    partial = [t for t in page.evaluate("window.__answers") if t.strip() != "Entropy counts microstates."]
    assert len(partial) >= 2, f"the answers arrived whole, not streamed: {partial}"
    footers = [t for t in texts if "tok/s" in t]
    assert len(footers) == 3 and all("first token" in f and "reasoning" in f for f in footers), footers
    assert page.locator(f"{COMPARE_CELL} details summary").filter(has_text="Thinking (").count() == 3
    assert any("distinct" in t.lower() or "similar" in t.lower() for t in texts)  # the summary row
    assert "pwned" not in page.title()  # neither the script nor the onerror handler ran
    assert page.locator(".jp-OutputArea script, .jp-OutputArea img[onerror]").count() == 0
    assert page_errors(page) == []


def test_each_compare_column_shows_its_settings_in_a_model_picker_and_sliders(page):
    sliders = page.locator(f"{COMPARE_CELL} .widget-slider").filter(has_text="temperature")
    assert sliders.count() == 3
    assert [s.locator(".widget-readout").text_content().strip() for s in sliders.all()] == ["0.70"] * 3
    pickers = page.locator(f"{COMPARE_CELL} input[list]")
    assert [p.input_value() for p in pickers.all()] == ["qwen3.5-plus", "qwen-flash", "qwen-plus"]
    assert page.locator(f"{COMPARE_CELL} .widget-button").filter(has_text="Stop").first.is_disabled()  # all done


def test_the_panel_sends_its_penalties_and_web_search_and_lists_the_sources(page, server):
    prompt = page.locator(f"{PANEL_CELL} textarea[placeholder='prompt']")
    run = page.locator(f"{PANEL_CELL} .widget-button").filter(has_text="Run all")
    server.reset()
    prompt.fill("What does top_p do?")
    run.click()
    page.wait_for_function(FOOTERS_JS, arg=[PANEL_CELL, 1], timeout=30_000)
    assert "Echo: What does top_p do?" in " ".join(page.locator(f"{PANEL_CELL} {CELL_OUTPUT}").all_text_contents())
    plain = server.requests[-1].body
    assert not {"presence_penalty", "repetition_penalty", "enable_search"} & plain.keys(), plain

    page.locator(PANEL_CELL).get_by_text("more settings").click()  # the less used settings, folded
    for name, value in (("presence pen.", "1.5"), ("repetition pen.", "1.2")):
        slider = page.locator(f"{PANEL_CELL} .widget-slider").filter(has_text=name)
        row = page.locator(f"{PANEL_CELL} .widget-hbox").filter(has=page.locator(".widget-slider").filter(has_text=name))
        row.locator(".widget-checkbox").filter(has_text="default").locator("input").uncheck()  # unset: not sent
        set_slider(page, slider, value)
    page.locator(f"{PANEL_CELL} .widget-checkbox").filter(has_text="web search").locator("input").check()
    server.reset()
    server.enqueue(Script(sources=HOSTILE_SOURCES))
    prompt.fill("What does a presence penalty do?")
    run.click()
    page.wait_for_function(
        "sel => [...document.querySelectorAll(sel + ' .widget-html-content')]"
        ".some(e => e.textContent.includes('Echo: What does a presence penalty do?'))", arg=PANEL_CELL,
        timeout=30_000)
    link = page.locator(f"{PANEL_CELL} a[href='https://example.org/entropy']")
    link.wait_for(state="visible", timeout=30_000)
    body = server.requests[-1].body
    assert (body.get("presence_penalty"), body.get("repetition_penalty"), body.get("enable_search")) == (1.5, 1.2, True)
    assert link.text_content() == HOSTILE_SOURCES[0]["title"]  # the tag shown as text
    sources = page.locator(f"{PANEL_CELL} {CELL_OUTPUT}").filter(has_text="Sources")
    assert "Not a link (javascript:document.title='pwned')" in sources.text_content()
    assert page.locator(f"{PANEL_CELL} a[href^='javascript']").count() == 0
    assert page.locator(".jp-OutputArea script").count() == 0
    assert "pwned" not in page.title()
    assert page_errors(page) == []
