"""The notebook renderer: throttled, safe, and with traffic linear in the answer."""

import json
import subprocess
import sys

import pytest

from qwen_magics import events as ev, runner
from qwen_magics.display import markdown
from qwen_magics.errors import StreamCut
from qwen_magics.render.notebook import NotebookRenderer
from qwen_magics.render.parts import split_blocks
from qwen_magics.result import Result


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def stream(renderer, clock, pieces, seconds_per_piece=0.001):
    """Drive the pieces into the renderer as a backend's events would come, advancing a fake clock; the result."""
    result = Result(model="m", parameters={}, started=0.0)

    async def events():
        for kind, text in pieces:
            clock.now += seconds_per_piece
            yield ev.ReasoningDelta(text) if kind == "reasoning" else ev.TextDelta(text)
        yield ev.Finished("stop")
        yield ev.Usage(input=10, output=len(pieces))

    return runner.call(runner.drive(events(), renderer, result), 60)


def chunks(text, size=4):
    return [("text", text[i:i + size]) for i in range(0, len(text), size)]


def traffic(shell):
    return sum(len(json.dumps(out["data"])) for out in shell.display_pub.outputs)


def visible(shell):
    """What the cell finally shows: the last bundle of each display, in order of creation."""
    shown, order = {}, []
    for out in shell.display_pub.outputs:
        key = (out.get("transient") or {}).get("display_id") or id(out)
        if key not in shown:
            order.append(key)
        shown[key] = out["data"]
    return [shown[k] for k in order]


def markdown_answer(size):
    paragraphs, n = [], 0
    while sum(map(len, paragraphs)) < size:
        paragraphs.append(f"Paragraph {n} talks about sampling " + "and temperature " * 12 + ".\n\n")
        n += 1
    return "".join(paragraphs)[:size]


def test_split_blocks_freezes_only_blocks_that_a_later_block_has_closed():
    assert split_blocks("para one\n\npara two", 2000) == ("para one\n\n", "para two")
    assert split_blocks("- a\n- b\n", 2000) == ("", "- a\n- b\n")
    assert split_blocks("```py\nx = 1\n", 2000) == ("", "```py\nx = 1\n")


MIXED = ("# Title\n\nA paragraph with *emphasis*\nand a lazy second line.\n\n- one\n- two\n\n  still two\n\n"
         "> quoted\ncontinued lazily\n\n```python\nx = 1\n\ny = 2\n```\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n"
         "1. first\n2. second\n\n---\n\nSetext heading\n==============\n\n    indented code\n\n<b>raw</b> ~~gone~~\n\n"
         "Last paragraph, still open")


def test_leading_blocks_render_from_the_parse_that_split_them_exactly_as_parsed_alone():
    """A refresh renders the blocks it freezes without parsing them a second time, and the HTML is the same."""
    starts = markdown.block_starts(MIXED)
    lines = MIXED.splitlines(keepends=True)
    assert len(starts) >= 10
    for start in starts[1:]:
        frozen = "".join(lines[:start])
        markdown.block_starts(MIXED)  # as a refresh does: split, then render what it froze
        parses = markdown._parse.cache_info().misses
        from_split = markdown.render_markdown(frozen)
        assert markdown._parse.cache_info().misses == parses, f"parsed again for the blocks before line {start}"
        markdown._parse.cache_clear()
        markdown.block_starts("something else\n")  # a split of another text: no parse to share
        assert markdown.render_markdown(frozen) == from_split, f"blocks before line {start}"


def test_a_link_in_a_frozen_block_resolves_a_reference_defined_later_as_the_whole_answer_will():
    text = "See [the docs][d].\n\nMore text.\n\n[d]: https://example.com\n"
    markdown.block_starts(text)
    assert '<a href="https://example.com">the docs</a>' in markdown.render_markdown("See [the docs][d].\n\n")


def test_a_long_code_block_is_cut_at_a_line_and_both_halves_stay_code():
    source = "```python\n" + "".join(f"x{i} = {i}\n" for i in range(300)) + "y ="
    frozen, tail = split_blocks(source, 500)
    assert frozen.startswith("```python\n") and frozen.endswith("x299 = 299\n```\n")
    assert tail == "```python\ny ="


@pytest.mark.parametrize("make", [markdown_answer, lambda n: "```\n" + "code line\n" * (n // 10),
                                  lambda n: "word " * (n // 5)], ids=["paragraphs", "one-code-block", "one-line"])
def test_traffic_grows_linearly_with_the_answer(shell, make):
    ratios = []
    for size in (4_000, 16_000, 64_000):
        shell.display_pub.outputs.clear()
        clock = Clock()
        answer = make(size)
        stream(NotebookRenderer(interval=0.1, clock=clock), clock, chunks(answer))
        ratios.append(traffic(shell) / len(answer))
    # Resending the whole answer at each 0.1 s refresh would cost ~100x at 16 kB and ~400x at 64 kB.
    assert max(ratios) <= 5, ratios
    assert ratios[2] <= ratios[0] * 1.5, f"bytes per answer byte must not grow with the answer: {ratios}"


def test_refreshes_are_throttled_and_the_final_text_is_always_shown(shell):
    clock = Clock()
    answer = markdown_answer(16_000)
    stream(NotebookRenderer(interval=0.1, clock=clock), clock, chunks(answer))  # 4,000 chunks over 4 s
    assert len(shell.display_pub.outputs) / 4.0 <= 25
    shown = visible(shell)
    assert "".join(b["text/plain"] for b in shown[:-1]) == answer
    assert shown[-1]["text/plain"].startswith("m · 10 in / 4000 out tokens")


def test_each_refresh_sends_at_most_one_message_a_new_block_waits_for_the_next(shell):
    clock = Clock()
    sent = []

    class Counting(NotebookRenderer):
        def refresh(self, result):
            before = len(shell.display_pub.outputs)
            left = super().refresh(result)
            sent.append(len(shell.display_pub.outputs) - before)
            return left

    answer = markdown_answer(16_000)
    stream(Counting(interval=0.1, clock=clock), clock, chunks(answer))
    assert max(sent) == 1 and len(sent) >= 35
    assert len(visible(shell)) > 20  # many blocks were frozen, each in a refresh of its own
    assert "".join(b["text/plain"] for b in visible(shell)[:-1]) == answer


def test_reasoning_streams_open_then_collapses_once_when_the_answer_starts(shell):
    clock = Clock()
    reasoning = "I think " * 500
    stream(NotebookRenderer(interval=0.1, clock=clock), clock,
           chunks(reasoning, 8) and [("reasoning", p) for _, p in chunks(reasoning, 8)] + chunks("The answer."), 0.01)
    live = [o for o in shell.display_pub.outputs if "Thinking…" in o["data"]["text/html"]]
    assert live and all("<details open" in o["data"]["text/html"] for o in live)
    assert max(len(o["data"]["text/plain"]) for o in live) < 1600  # only a window of the reasoning while it streams
    thinking = visible(shell)[0]
    assert thinking["text/html"].startswith("<details style") and thinking["text/plain"] == "Thinking: " + reasoning
    assert sum(reasoning in json.dumps(o["data"]) for o in shell.display_pub.outputs) == 1


def test_html_and_scripts_in_an_answer_are_shown_as_text(shell):
    clock = Clock()
    evil = ('Hi <script>alert(1)</script> <img src=x onerror="alert(2)"> [x](javascript:alert(3))\n\n'
            '<iframe src="http://evil"></iframe>')
    stream(NotebookRenderer(interval=0.1, clock=clock), clock, [("reasoning", "<script>bad()</script>")] + chunks(evil))
    html = "".join(o["data"]["text/html"] for o in shell.display_pub.outputs)
    assert "<script" not in html and "<img" not in html and "<iframe" not in html and 'href="javascript' not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "&lt;script&gt;bad()" in html


def test_every_output_carries_plain_text(shell):
    clock = Clock()
    stream(NotebookRenderer(interval=0.1, clock=clock), clock, [("reasoning", "hmm")] + chunks("# Title\n\nBody"))
    assert all(o["data"].get("text/plain") is not None and "text/html" in o["data"] for o in shell.display_pub.outputs)


def test_an_incomplete_answer_is_marked_in_the_footer(shell):
    clock = Clock()
    renderer = NotebookRenderer(interval=0.1, clock=clock)

    async def cut():
        yield ev.TextDelta("partial")
        raise StreamCut("The stream ended without a finish reason")

    runner.call(runner.drive(cut(), renderer, Result(model="m", parameters={}, started=0.0)), 10)
    texts = [b["text/plain"] for b in visible(shell)]
    assert texts[0] == "partial"
    assert texts[-1].endswith("incomplete: The stream ended without a finish reason")


def test_refreshes_come_at_most_every_interval_however_fast_the_stream(shell):
    """A 16 kB answer in 4,000 chunks over 4 s: about 40 refreshes, never two within one interval."""
    clock = Clock()
    refreshes = []

    class Counting(NotebookRenderer):
        def refresh(self, result):
            refreshes.append(clock.now)
            return super().refresh(result)

    stream(Counting(interval=0.1, clock=clock), clock, chunks(markdown_answer(16_000)))
    gaps = [b - a for a, b in zip(refreshes, refreshes[1:])]
    assert min(gaps) >= 0.1 - 1e-9
    assert 30 <= len(refreshes) <= 41, len(refreshes)
    assert "".join(b["text/plain"] for b in visible(shell)[:-1]) == markdown_answer(16_000)


# code blocks: a light box, Pygments colours for a known language, always escaped

CODE_BOX = '<pre style="background:#f6f8fa;'


def test_a_python_block_is_boxed_and_coloured():
    shown = markdown.render_markdown("Try:\n\n```python\ndef f(x):\n    return x + 1\n```\n")
    assert shown.count(CODE_BOX) == 1
    assert '<code class="language-python">' in shown
    assert '<span style="color: #008000; font-weight: bold">def</span>' in shown  # the keyword, coloured
    assert "<script" not in shown


@pytest.mark.parametrize("fence", ["```nosuchlanguage", "```", "~~~"], ids=["unknown", "none", "tildes"])
def test_a_block_in_no_known_language_is_boxed_escaped_code(fence):
    shown = markdown.render_markdown(f"{fence}\nif a < b & c:\n{fence[:3]}\n")
    assert shown.startswith(CODE_BOX)
    assert "if a &lt; b &amp; c:" in shown and "<span" not in shown


def test_an_indented_block_is_boxed_too():
    assert markdown.render_markdown("Code:\n\n    x = 1 < 2\n").count(CODE_BOX + "color") == 1


@pytest.mark.parametrize("fence", ['```python', '```', '```py"><script>alert(1)</script>'])
def test_markup_inside_a_code_block_stays_text(fence):
    hostile = "</code></pre><script>alert(1)</script><img src=x onerror=alert(2)>"
    shown = markdown.render_markdown(f"{fence}\n{hostile}\n```\n\nafter")
    assert "<script" not in shown and "<img" not in shown
    assert shown.count("</pre>") == 1 and shown.endswith("<p>after</p>\n")


def test_streamed_code_keeps_its_plain_text(shell):
    answer = "Here:\n\n```python\n" + "".join(f"print('line {i} <b>')\n" for i in range(40)) + "```\n\nDone."
    clock = Clock()
    result = stream(NotebookRenderer(interval=0.1, clock=clock), clock, chunks(answer))
    shown = visible(shell)
    assert "".join(b["text/plain"] for b in shown[:-1]) == answer
    assert any(CODE_BOX in b["text/html"] and "<span style=" in b["text/html"] for b in shown[:-1])
    assert result._repr_mimebundle_()["text/plain"] == answer


def test_pygments_loads_only_for_a_block_with_a_language():
    probe = ("import sys, qwen_magics.display.markdown as m\n"
             "m.render_markdown('text\\n\\n```\\nno language\\n```\\n')\n"
             "print('pygments' in sys.modules)\n"
             "m.render_markdown('```python\\nx = 1\\n```\\n')\n"
             "print('pygments' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["False", "True"], out.stderr


def test_an_open_code_block_is_coloured_once_when_it_is_final_not_at_every_refresh(shell, monkeypatch):
    """Colouring costs more than the rest of a refresh: the open tail is shown boxed but plain until the end."""
    import pygments

    coloured = []
    highlight = pygments.highlight
    monkeypatch.setattr(pygments, "highlight", lambda *a: coloured.append(1) or highlight(*a))
    clock = Clock()
    code = "```python\n" + "".join(f"x{i} = {i}\n" for i in range(40)) + "```\n"
    stream(NotebookRenderer(interval=0.1, clock=clock, tail_limit=100_000), clock, chunks(code), seconds_per_piece=0.02)
    shown = visible(shell)
    assert len(shell.display_pub.outputs) > 5  # the open block was refreshed many times...
    assert len(coloured) == 1  # ...and coloured once, at the end
    assert '<span style="color:' in shown[0]["text/html"] and shown[0]["text/plain"] == code
