"""The probability widget in a real JupyterLab: it fits the output area and its slider labels are whole.

Needs `bash .ci/install-browser` (Debian chromium, jupyterlab, playwright); skipped without them.
"""

from __future__ import annotations

import shutil
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

CELL = """\
import math
from qwen_magics.events import TokenLogprob
from qwen_magics.result import Result
from qwen_magics.widgets.probs import probs_widget

result = Result(model="qwen-plus", parameters={})
shares = [(" cat", 0.3), (" dog", 0.3), (" bird", 0.25), (" a-much-longer-token", 0.15)]
top = tuple((token, math.log(p)) for token, p in shares)
for token in ("See", " https://example.com/a/long/unbroken/link/that/a/model/may/write/in/its/answer", " cat"):
    result.apply(TokenLogprob(token, math.log(0.3), top))
box = probs_widget(result, position=2)
box.top_p.value = 0.5
box
"""
OUTPUT = ".jp-NotebookPanel .jp-OutputArea-output"
# Every element of the widget whose content is wider than its box: what a scrollbar or an ellipsis hides.
OVERFLOWS_JS = """sel => {
    const out = document.querySelector(sel);
    const box = out.querySelector('.widget-vbox');
    const wider = [out, ...out.querySelectorAll('*')].filter(e => e.scrollWidth > e.clientWidth + 1
        && getComputedStyle(e).overflowX !== 'visible');
    return {fits: box.getBoundingClientRect().right <= out.getBoundingClientRect().right + 1,
            labels: [...box.querySelectorAll('.widget-label')]
                .map(e => [e.textContent, e.scrollWidth <= e.clientWidth]),
            wider: wider.map(e => e.className + ' ' + e.scrollWidth + '>' + e.clientWidth)};
}"""


def test_the_widget_fits_the_output_and_labels_are_whole(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    write_notebook(root / "probs.ipynb", [CELL])
    seen = {}
    with JupyterLab(root, state_dir=tmp_path / "lab-state") as lab, sync_api.sync_playwright() as pw:
        context = chromium_context(pw, tmp_path / "chromium-profile")
        try:
            page = open_notebook(context, lab, "probs.ipynb")
            run_all(page)
            page.wait_for_selector(f"{OUTPUT} .widget-vbox .widget-html-content code", timeout=15_000)
            for width in (1280, 640):  # a wide window, and one with the file browser squeezing the notebook
                page.set_viewport_size({"width": width, "height": 900})
                page.wait_for_function("w => window.innerWidth === w", arg=width)
                seen[width] = page.evaluate(OVERFLOWS_JS, OUTPUT)
                screenshot(page, tmp_path / f"probs-{width}.png")
        finally:
            context.close()
    for width, found in seen.items():
        assert found["fits"] and found["wider"] == [], (width, found)
        assert [name for name, _ in found["labels"] if name] == ["position", "temperature", "top_p"]
        assert all(whole for _, whole in found["labels"]), (width, found["labels"])
