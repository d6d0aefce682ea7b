"""The probability view in JupyterLab and Notebook 7: a ``%%qwen --logprobs`` answer streams with its metrics
and tinted tokens, ``%qwen_probs`` opens on it, its sliders (set as a person sets them) reshape the bars,
and the widget fits the output area with whole slider labels.

The loopback server gives every token K = 4 alternatives with logprobs c, c-2, c-3, c-4 (c = -0.05 (i mod 7) - 0.01
for the i-th token), so renormalised over K the shares are the softmax of (0, -2, -3, -4) / T whatever the token,
and the model's own probabilities are exp(c), exp(c-2), ...: the test computes both here.
One token of the answer is a script tag, which must show as text and never run.
"""

from __future__ import annotations

import math

import pytest
from loopback import Script

from .lab import PANEL, open_notebook, page_errors, run_all, set_slider

URL = " https://example.com/a/long/unbroken/link/that/a/model/may/write/in/its/answer"
SCRIPT = " <script>document.title='pwned'</script>"
TOKENS = ["See", URL, " for", " a", SCRIPT, " cat", " or", " a", " dog", "."]
NOTEBOOKS = {"probs.ipynb": [
    "%load_ext qwen_magics",
    "%%qwen -m qwen-plus --logprobs 4 -t 0.7\nName a pet.",
    "%qwen_probs --position 3",
]}
ANSWER_CELL = f"{PANEL} .jp-CodeCell:nth-child(2)"
PROBS_CELL = f"{PANEL} .jp-CodeCell:nth-child(3)"
PROBS_OUTPUT = f"{PROBS_CELL} .jp-OutputArea-output"
# Every distinct text the answer cell shows while it runs.
WATCH_ANSWER = """sel => {
    window.__answer = [];
    new MutationObserver(() => {
        const text = document.querySelector(sel + ' .jp-OutputArea')?.textContent || '';
        if (text && !window.__answer.includes(text)) window.__answer.push(text);
    }).observe(document.body, {subtree: true, childList: true, characterData: true});
}"""
# The bars as a person reads them: each row's token, its label, and the width of its filled bar.
BARS_JS = """sel => [...document.querySelectorAll(sel + ' .widget-vbox .widget-html-content > div')]
    .filter(row => row.querySelector('code'))
    .map(row => [row.querySelector('code').textContent, row.querySelector('span').textContent,
                 row.querySelector(':scope > div > div').style.width])"""
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


def share_values(temperature: float, top_p: float) -> list[float]:
    """The shares of the loopback's four alternatives, renormalised over them (0 where top_p cuts one)."""
    weights = [math.exp(lp / temperature) for lp in (0, -2, -3, -4)]
    before = [x / sum(weights) for x in weights]
    keep, total = 0, 0.0
    while total < top_p - 1e-12:
        total += before[keep]
        keep += 1
    return [p / total if i < keep else 0.0 for i, p in enumerate(before)]


def shares(temperature: float, top_p: float, index: int = 2) -> list[str]:
    """The labels the chart should show for the four alternatives of the token at ``index`` (counted from 0):
    the share at these settings, and the model's own probability (see the module docstring)."""
    weights = [math.exp(lp / temperature) for lp in (0, -2, -3, -4)]
    before = [x / sum(weights) for x in weights]
    chosen = -0.05 * (index % 7) - 0.01
    return [(f"share {share:.1%}" if share else f"cut by top_p (was {p:.1%})")
            + f" · model {math.exp(chosen + lp):.1%}" for share, p, lp in zip(share_values(temperature, top_p), before, (0, -2, -3, -4))]


@pytest.fixture(scope="module")
def page(jupyter, browser, server):
    """The notebook run once: the answer streamed with token probabilities, the widget opened at its third token."""
    server.reset()
    server.enqueue(Script(chunks=[("text", t) for t in TOKENS], chunk_delay=0.1))
    page = open_notebook(browser, jupyter, "probs.ipynb")
    page.evaluate(WATCH_ANSWER, ANSWER_CELL)
    run_all(page)
    page.wait_for_selector(f"{PROBS_OUTPUT} .widget-vbox .widget-html-content code", timeout=15_000)
    return page


def test_the_answer_streams_with_metrics_and_tinted_tokens_and_no_script_runs(page, server):
    assert server.requests[-1].body.get("logprobs") is True and server.requests[-1].body.get("top_logprobs") == 4
    shown = page.locator(f"{ANSWER_CELL} .jp-OutputArea").text_content()
    assert "".join(TOKENS).strip() in shown  # the script tag as text
    assert "tok/s" in shown and "first token" in shown
    assert f"Token probabilities ({len(TOKENS)} tokens" in shown
    tinted = page.locator(f"{ANSWER_CELL} span[title^='model probability ']")
    assert tinted.count() == len(TOKENS) and tinted.nth(4).text_content() == SCRIPT
    partial = [t for t in page.evaluate("window.__answer") if "See" in t and "dog" not in t]
    assert partial, "the answer arrived whole, not streamed"
    assert page.locator(".jp-OutputArea script").count() == 0
    assert "pwned" not in page.title()


def test_the_widget_fits_the_output_and_labels_are_whole(page):
    """At the token it opened on (before the slider test moves it), whatever the window's width."""
    seen = {}
    for width in (1280, 640):  # a wide window, and one with the side panel squeezing the notebook
        page.set_viewport_size({"width": width, "height": 900})
        page.wait_for_function("w => window.innerWidth === w", arg=width)
        seen[width] = page.evaluate(OVERFLOWS_JS, PROBS_OUTPUT)
    page.set_viewport_size({"width": 1280, "height": 900})
    for width, found in seen.items():
        assert found["fits"] and found["wider"] == [], (width, found)
        assert [name for name, _ in found["labels"] if name] == ["position", "temperature", "top_p"]
        assert all(whole for _, whole in found["labels"]), (width, found["labels"])


def test_the_sliders_reshape_the_bars(page):
    temperature, top_p, position = (page.locator(f"{PROBS_OUTPUT} .widget-slider").filter(has_text=name)
                                    for name in ("temperature", "top_p", "position"))

    def bars(expected: list[str], token: str = "␣for") -> list[list[str]]:
        """The bars once they read ``expected`` with ``token`` the generated one (or fail after 10 s)."""
        shown = f"({BARS_JS})(sel).map(b => b[0] + ' ' + b[1]).join('|')"
        want = "|".join(f"{token}{'~' + str(i) if i else ''} {label}{' ◀ generated' if i == 0 else ''}"
                        for i, label in enumerate(expected))
        page.wait_for_function(f"sel => {shown} === {want!r}", arg=PROBS_OUTPUT, timeout=10_000)
        return page.evaluate(BARS_JS, PROBS_OUTPUT)

    opened = bars(shares(1.0, 1.0))
    set_slider(page, temperature, "0.5")
    sharper = bars(shares(0.5, 1.0))
    assert float(sharper[0][2].rstrip("%")) > float(opened[0][2].rstrip("%"))  # the bar grew
    set_slider(page, temperature, "1")
    set_slider(page, top_p, "0.9")
    cut = bars(shares(1.0, 0.9))
    widths = [float(b[2].rstrip("%")) for b in cut]
    assert widths[2:] == [0, 0] and [f"{w / 100:.1%}" for w in widths[:2]] == [
        f"{s:.1%}" for s in share_values(1.0, 0.9)[:2]]  # cut: empty
    set_slider(page, position, "5")  # the fifth token, as the chart's axis counts
    bars(shares(1.0, 0.9, index=4), token=SCRIPT.replace(" ", "␣"))  # the script token, as text
    assert page.locator(f"{PROBS_OUTPUT} mark").text_content() == SCRIPT.replace(" ", "␣")
    assert page.locator(".jp-OutputArea script").count() == 0
    assert "pwned" not in page.title()
    assert page_errors(page) == []
