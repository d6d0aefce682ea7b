"""A Chinese answer in a comparison renders as Chinese, not as boxes, in JupyterLab and Notebook 7.

The loopback server answers in Chinese; the page must hold the text, and Chromium must draw it with a
real CJK font (.ci/install-browser installs Debian's fonts-noto-cjk): in the answer's own font, different
characters draw differently and none draws as the missing-glyph box.
"""

from __future__ import annotations

import pytest
from loopback import Script

from parts import cjk_font_missing, require

from .lab import PANEL, open_notebook, page_errors, run_all, screenshot

ANSWER = "熵是衡量系统无序程度的物理量。"
NOTEBOOKS = {"chinese.ipynb": [
    "%load_ext qwen_magics",
    "%%qwen_compare -m qwen-plus,qwen-flash\n用一句话解释熵。",
]}
COMPARE_CELL = f"{PANEL} .jp-CodeCell:nth-child(2)"
# In the font the answer is shown in: each character drawn alone on a canvas (its pixels), the
# missing-glyph box's pixels (a private-use character no font draws), and the text's width on the page.
GLYPHS_JS = """([sel, text]) => {
    const leaf = [...document.querySelectorAll(sel + ' .widget-html-content *')]
        .find(e => e.childElementCount === 0 && e.textContent.includes(text));
    if (!leaf) return null;
    const style = getComputedStyle(leaf);
    const canvas = document.createElement('canvas');
    canvas.width = canvas.height = 64;
    const ctx = canvas.getContext('2d', {willReadFrequently: true});
    const draw = ch => {
        ctx.clearRect(0, 0, 64, 64);
        ctx.font = `${style.fontSize} ${style.fontFamily}`;
        ctx.fillStyle = '#000';
        ctx.textBaseline = 'top';
        ctx.fillText(ch, 4, 4);
        return Array.from(ctx.getImageData(0, 0, 64, 64).data).join(',');
    };
    const range = document.createRange();
    range.selectNodeContents(leaf);
    return {font: style.fontFamily, width: range.getBoundingClientRect().width,
            glyphs: [...text].map(draw), missing: draw('\\uE000'), blank: draw(' ')};
}"""


@pytest.fixture(scope="module")
def page(jupyter, browser, server):
    require("this browser test", cjk_font_missing())
    server.reset()
    server.enqueue(Script(reasoning="", text=ANSWER, chunk_chars=3, repeat=2))
    page = open_notebook(browser, jupyter, "chinese.ipynb")
    run_all(page, timeout=120_000)
    page.wait_for_function(
        "([sel, n]) => [...document.querySelectorAll(sel + ' .widget-html-content')]"
        ".filter(e => e.textContent.includes('tok/s')).length >= n", arg=[COMPARE_CELL, 2], timeout=30_000)
    return page


def test_a_chinese_answer_in_a_comparison_renders_in_a_cjk_font(page, tmp_path):
    texts = page.locator(f"{COMPARE_CELL} .widget-html-content").all_text_contents()
    assert sum(t.strip() == ANSWER for t in texts) == 2, texts  # both columns, whole
    drawn = page.evaluate(GLYPHS_JS, [COMPARE_CELL, ANSWER[:6]])
    assert drawn is not None, texts
    assert drawn["width"] > 0, drawn["font"]
    glyphs = drawn["glyphs"]
    assert all(g not in (drawn["missing"], drawn["blank"]) for g in glyphs), \
        f"Chinese drawn as missing-glyph boxes in {drawn['font']}: install a CJK font (.ci/install-browser)"
    assert len(set(glyphs)) == len(glyphs), f"different characters drew alike (boxes) in {drawn['font']}"
    png = screenshot(page, tmp_path / "chinese.png")  # for a person to look at when this fails
    assert png.stat().st_size > 10_000
    assert page_errors(page) == []
