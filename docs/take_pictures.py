"""Retake the README's pictures from a real run: ``python docs/take_pictures.py``.

It serves a notebook in JupyterLab and drives it in headless Chromium with the browser tests' harness
(``tests/browser/lab.py``). The kernel has no API key, so the local Qwen answers (the 1.5B when it is
installed, else the 0.5B: ``qwen-magics install-local``), and its run log is in a temporary folder. The
notebook compares three temperatures, shows the sampling panel's two columns (the script links their
token budget, types a prompt and presses Run all, as a person does) and opens the probability view on a ``--logprobs`` answer, moved
to the answer's last word with its temperature raised. Each picture is cropped to the cells it shows,
without the prompt column, and refused if it would show a local path.

Not part of the test run: on two cores the local model takes minutes. The seeds and temperature 0 give the
same answers on every retake with the same model; the footers show the machine's speed at the time.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from browser.lab import (CHROMIUM, LAB, PANEL, JupyterServer, chromium_context,  # noqa: E402
                         open_notebook, page_errors, run_all, set_slider, write_notebook)

from qwen_magics.local import model as local_model  # noqa: E402

DOCS = ROOT / "docs"
COMPARE, PANEL_CELL, ANSWER, PROBS = 2, 3, 4, 5  # the cells' places in the notebook (nth-child)
CELLS = [
    "%load_ext qwen_magics",
    "%%qwen_compare -m local -t 0,0.8,1.3 --seed 7 --max-tokens 80\n"
    "In two sentences, explain to a student what a language model's temperature does.",
    "%qwen_panel -m local -t 0.3,1.2 --seed 7",
    "%%qwen -m local --logprobs 5 -t 0 --max-tokens 30\nComplete the sentence: The best pet for a small flat is",
    "%qwen_probs",
]
PANEL_PROMPT = "Explain top_p sampling to a student in three short sentences."
PICTURE_WIDTH = 1200  # CSS pixels from the input editor's left edge to the output's right edge
MAX_BYTES = 250_000
MINUTES = 60_000  # Playwright timeouts are in milliseconds
# The text of a cell's outputs, and whether one of them shows the run footer (or, in a comparison, n footers).
OUTPUT_TEXT_JS = "sel => document.querySelector(sel + ' .jp-OutputArea')?.innerText || ''"
FOOTERS_JS = "([sel, n]) => [...document.querySelectorAll(sel + ' .widget-html-content')]" \
             ".filter(e => e.textContent.includes('tok/s')).length >= n"
# The rectangle from the first cell's input editor to the last cell's outputs, after scrolling the first cell
# to the top of the notebook with a margin (clear of the toolbar's edge), and where the notebook's view ends.
CLIP_JS = """([first, last]) => {
    const cells = [...document.querySelectorAll('%s .jp-Notebook .jp-Cell')].slice(first - 1, last);
    let scroller = cells[0].parentElement;
    while (scroller.parentElement && !['auto', 'scroll'].includes(getComputedStyle(scroller).overflowY))
        scroller = scroller.parentElement;
    cells[0].scrollIntoView({block: 'start'});
    scroller.scrollTop -= 20;
    const editor = cells[0].querySelector('.jp-InputArea-editor').getBoundingClientRect();
    const output = cells[cells.length - 1].querySelector('.jp-OutputArea').getBoundingClientRect();
    const pad = 6;
    return {x: editor.left - pad, y: editor.top - pad, width: output.right - editor.left + 2 * pad,
            height: output.bottom - editor.top + 2 * pad, shown: scroller.getBoundingClientRect().bottom};
}""" % PANEL


def cell(n: int) -> str:
    """The selector of the notebook's n-th cell (from 1)."""
    return f"{PANEL} .jp-CodeCell:nth-child({n})"


def fail(line: str) -> None:
    sys.exit(f"take_pictures: {line}")


def check_setup() -> str:
    """The local model's title; exits with the command to run when the model or the browser is missing."""
    model = local_model.default_model()
    if not local_model.is_assembled(model):
        fail("no local model: run qwen-magics install-local (the 1.5B), then run this again")
    if shutil.which(CHROMIUM) is None:
        fail(f"{CHROMIUM} missing: run .ci/install-browser")
    if importlib.util.find_spec("playwright") is None:
        fail("playwright missing: run .ci/install-browser")
    return model.title


def run_panel(page: Any) -> None:
    """Set the two columns as a person would (a token budget linked across both), type a prompt, press Run all."""
    panel = cell(PANEL_CELL)
    first = page.locator(f"{panel} .widget-gridbox > .widget-vbox").first
    first.get_by_text("more settings").click()
    row = first.locator(".widget-hbox").filter(has=page.locator(".widget-text").filter(has_text="max tokens"))
    row.locator(".widget-toggle-button").click()  # linked: the budget moves in both columns
    box = row.locator("input[type=number]")
    box.fill("90")
    box.press("Enter")
    first.get_by_text("more settings").click()  # folded again
    page.locator(f"{panel} textarea[placeholder='prompt']").fill(PANEL_PROMPT)
    page.locator(f"{panel} .widget-button").filter(has_text="Run all").click()
    page.wait_for_function(FOOTERS_JS, arg=[panel, 2], timeout=20 * MINUTES)


def move_probs_sliders(page: Any) -> None:
    """Move the probability view to the answer's last word (the token before its final one) and raise the
    temperature, waiting until the bars are redrawn after each."""
    probs = cell(PROBS)
    position = page.locator(f"{probs} .widget-slider").filter(has_text="position")
    last = round(float(position.locator(".noUi-handle").get_attribute("aria-valuemax")))
    for slider, value in ((position, str(last - 1)),
                          (page.locator(f"{probs} .widget-slider").filter(has_text="temperature"), "1.4")):
        before = page.evaluate(OUTPUT_TEXT_JS, probs)
        set_slider(page, slider, value)
        page.wait_for_function(f"sel => ({OUTPUT_TEXT_JS})(sel) !== {before!r}", arg=probs, timeout=MINUTES)


def fit_width(page: Any) -> None:
    """Resize the window so the pictures are ``PICTURE_WIDTH`` wide (the side panel keeps its width)."""
    viewport = page.viewport_size
    clip = page.evaluate(CLIP_JS, [COMPARE, COMPARE])
    width = viewport["width"] + PICTURE_WIDTH - round(clip["width"])
    page.set_viewport_size({"width": width, "height": viewport["height"]})
    page.wait_for_function("w => window.innerWidth === w", arg=width)


def shoot(page: Any, first: int, last: int, name: str, private: list[str]) -> None:
    """Save cells ``first``..``last`` (inputs and outputs) as docs/<name>; refuse a picture showing a
    private path."""
    text = "\n".join(page.evaluate(OUTPUT_TEXT_JS, cell(n)) for n in range(first, last + 1))
    for secret in private:
        if secret in text:
            fail(f"{name} would show a private path ({secret}); see the cell's output")
    # Make a cell that is neither shown nor next to the picture the active one: the active cell has a
    # toolbar and a highlighted edge.
    page.click(f"{cell(1 if first > 2 else len(CELLS))} .jp-InputPrompt")
    page.mouse.move(0, 0)  # and no hover highlight
    clip = page.evaluate(CLIP_JS, [first, last])
    hidden = clip["y"] + clip["height"] - clip["shown"]
    if hidden > 0:  # the notebook scrolls inside the window, under the status bar: make the window taller
        viewport = page.viewport_size
        page.set_viewport_size({"width": viewport["width"], "height": viewport["height"] + round(hidden) + 40})
        clip = page.evaluate(CLIP_JS, [first, last])
    del clip["shown"]
    path = DOCS / name
    page.screenshot(path=str(path), clip=clip)
    size = path.stat().st_size
    print(f"{path.relative_to(ROOT)}: {round(clip['width'])}x{round(clip['height'])} px, {size // 1000} kB")
    if size > MAX_BYTES:
        print(f"  larger than {MAX_BYTES // 1000} kB: shorten the answers (--max-tokens)")


def main() -> None:
    title = check_setup()
    print(f"answering with {title}; this takes a few minutes")
    # The kernels inherit the server's environment: without a key or a server override the local model answers.
    for name in ("DASHSCOPE_API_KEY", "QWEN_MAGICS_DASHSCOPE_URL"):
        os.environ.pop(name, None)
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="qwen-pictures-") as tmp:
        root = Path(tmp) / "root"
        root.mkdir()
        write_notebook(root / "pictures.ipynb", CELLS)
        env = {"QWEN_MAGICS_LOG": str(Path(tmp) / "runlog.db")}
        private = [tmp, str(Path.home()), str(ROOT)]
        with sync_playwright() as pw, JupyterServer(root, LAB, env=env, state_dir=Path(tmp) / "state") as server:
            context = chromium_context(pw, Path(tmp) / "chromium")
            try:
                page = open_notebook(context, server, "pictures.ipynb")
                run_all(page, timeout=30 * MINUTES)
                run_panel(page)
                move_probs_sliders(page)
                if errors := page_errors(page):
                    fail("the page reported errors:\n" + "\n".join(errors))
                fit_width(page)
                shoot(page, COMPARE, COMPARE, "compare.png", private)
                shoot(page, PANEL_CELL, PANEL_CELL, "panel.png", private)
                shoot(page, ANSWER, PROBS, "probs.png", private)
            finally:
                context.close()


if __name__ == "__main__":
    main()
