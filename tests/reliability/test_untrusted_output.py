"""Untrusted output: what a model writes is shown as text, never run or injected into the page.

Answers and reasoning full of ``<script>``, event handlers, ``javascript:`` links, iframes and friends
stream in small pieces (so tags arrive cut in half) into cells, comparison columns and the panel; every
HTML bundle sent is parsed, and none may hold an element, attribute or link that could run or inject.
"""

from __future__ import annotations

import pytest
from loopback import Script

from .support import APIS, ask, audit_html, audited, generation_requests, run_panel, widget_html

PAYLOADS = {
    "script element": "<script>alert('xss-1')</script>",
    "image with onerror": "<img src=x onerror=alert('xss-2')>",
    "svg with onload": "<svg onload=alert('xss-3')></svg>",
    "iframe with a javascript: src": "<iframe src=\"javascript:alert('xss-4')\"></iframe>",
    "iframe with srcdoc": "<iframe srcdoc=\"<script>alert(5)</script>\"></iframe>",
    "markdown javascript: link": "[click me](javascript:alert('xss-6'))",
    "mixed-case javascript: link": "[click me](JaVaScRiPt:alert('xss-7'))",
    "entity-hidden javascript: link": "[click me](java&#x09;script:alert(8))",
    "raw anchor": "<a href=\"javascript:alert('xss-9')\">click me</a>",
    "markdown image with javascript:": "![a cat](javascript:alert('xss-10'))",
    "autolink": "<javascript:alert('xss-11')>",
    "data: html link": "[open](data:text/html;base64,PHNjcmlwdD5hbGVydCgxMik8L3NjcmlwdD4=)",
    "div with onmouseover": "<div onmouseover=\"alert('xss-13')\">hover me</div>",
    "object": "<object data=\"javascript:alert(14)\"></object>",
    "style element": "<style>body { display: none }</style>",
    "form with a javascript: action": "<form action=\"javascript:alert(17)\"><button>go</button></form>",
    "base element": "<base href=\"javascript:alert(18)//\">",
    "meta refresh": "<meta http-equiv=\"refresh\" content=\"0;url=javascript:alert(19)\">",
    "details with ontoggle": "<details open ontoggle=alert(20)>x</details>",
    "quotes in a link title": "[a](https://example.com \"x\\\" onmouseover=\\\"alert(21)\")",
    "script in a code fence": "```html\n<script>alert(22)</script>\n```",
    "script in a table cell": "| a | b |\n|---|---|\n| <script>alert(23)</script> | <img src=x onerror=alert(24)> |",
}
ANSWER = "Here you go:\n\n" + "\n\n".join(PAYLOADS.values()) + "\n\nDone."
REASONING = "I could write " + " or ".join(PAYLOADS.values())
SHOWN = ["<script>alert('xss-1')</script>", "<img src=x onerror=alert('xss-2')>", "onmouseover"]  # as text


def hostile(text: str = ANSWER) -> Script:
    return Script(reasoning=REASONING, text=text, chunk_chars=7)  # 7 characters: tags arrive cut in pieces


def html_of(bundles) -> list[str]:
    return [b["text/html"] for b in bundles if "text/html" in b]


def test_the_audit_flags_each_payload_as_a_careless_renderer_would_emit_it():
    from markdown_it import MarkdownIt

    careless = MarkdownIt("commonmark", {"html": True}).enable("table")
    careless.validateLink = lambda url: True  # what markdown-it refuses, and qwen_magics relies on
    harmless = {"entity-hidden javascript: link", "quotes in a link title"}  # even a careless renderer
    for name, payload in PAYLOADS.items():  # as written (raw HTML), or rendered by markdown without care
        problems = audit_html(payload)[0] + audit_html(careless.render(payload))[0]
        assert bool(problems) is (name not in harmless), (name, careless.render(payload), problems)


@pytest.mark.parametrize("fmt", ["markdown", "text"])
@pytest.mark.parametrize("api", APIS)
def test_a_hostile_answer_and_reasoning_stream_into_a_cell_as_text(ip, dashscope, api, fmt):
    dashscope.enqueue(hostile())
    asked = ask(ip, f"--api {api} -m qwen3.5-plus -f {fmt} hi")
    assert asked.value.complete and asked.value.text == ANSWER and asked.value.reasoning == REASONING
    shown = audited(html_of(o["data"] for o in ip.display_pub.outputs), PAYLOADS)  # every update, as it went
    assert all(text in shown for text in SHOWN)
    again = asked.value._repr_mimebundle_()  # displayed later (`_qwen` in a cell)
    assert all(text in audited([again["text/html"]]) for text in SHOWN)


def test_a_hostile_error_message_is_shown_as_text_in_its_one_line(ip, dashscope):
    dashscope.enqueue(Script(status=400, error_message=PAYLOADS["script element"] + PAYLOADS["image with onerror"]))
    asked = ask(ip, "-m qwen-plus hi")
    assert "<script>" in asked.error  # the cell's one line: plain text, in the terminal sense
    shown = audited(html_of(o["data"] for o in ip.display_pub.outputs))  # a refused run shows no footer
    assert "xss-1" not in shown


def test_hostile_tokens_and_a_hostile_conversation_are_shown_as_text(ip, dashscope):
    dashscope.enqueue(hostile(), hostile())
    ask(ip, "--logprobs 3 -m qwen-plus hi")  # the token view: one span per token, alternatives in titles
    ask(ip, "-c hostile -m qwen-plus", "hi")
    ask(ip, "show hostile", magic="qwen_chat")
    shown = audited(html_of(o["data"] for o in ip.display_pub.outputs), PAYLOADS)
    assert "Token probabilities" in shown and all(text in shown for text in SHOWN)


@pytest.mark.parametrize("api", APIS)
def test_hostile_columns_their_diff_summary_and_static_export_are_text(ip, dashscope, allowance, api):
    allowance.connections = 3
    dashscope.enqueue(hostile(), hostile(text=ANSWER.replace("Done.", "<b>Changed</b> <script>x()</script>")))
    asked = ask(ip, f"--api {api} -m qwen3.5-plus,qwen3.5-flash --concurrency 1", "<script>alert('prompt')</script>",
                magic="qwen_compare")
    comparison = asked.value
    comparison.diff_toggle.value = True  # the word diff against the first column
    htmls = widget_html(comparison.widget) + html_of([comparison.bundle()])
    htmls += html_of(o["data"] for o in ip.display_pub.outputs)
    shown = audited(htmls, PAYLOADS)
    assert all(text in shown for text in SHOWN) and "<script>alert('prompt')</script>" in shown
    assert len(generation_requests(dashscope)) == 2


@pytest.mark.parametrize("api", APIS)
def test_a_hostile_answer_in_the_panel_is_text(ip, dashscope, api):
    dashscope.enqueue(hostile())
    ip.run_line_magic("config", f"QwenMagics.api = '{api}'")
    panel = ip.magics_manager.registry["QwenWidgetMagics"].make_panel()
    panel.model.value, panel.prompt.value = "qwen3.5-plus", "hi"
    updates = []
    panel.output.observe(lambda change: updates.extend(widget_html(panel.output)), "children")
    assert run_panel(panel).results[0].complete
    shown = audited(updates + widget_html(panel.widget), PAYLOADS)
    assert all(text in shown for text in SHOWN)


def test_in_a_real_kernel_no_bundle_or_widget_state_sent_holds_executable_html(kernel, dashscope):
    dashscope.enqueue(hostile(), hostile(), hostile())
    cells = [kernel.ok("%%qwen -m qwen3.5-plus\nhi"),
             kernel.ok("_qwen"),  # the result displayed again, in full
             kernel.ok("%%qwen_compare -m qwen3.5-plus,qwen3.5-flash --concurrency 1\nhi")]
    htmls = [html for cell in cells for html in html_of(cell.bundles) + cell.widget_html]
    shown = audited(htmls, PAYLOADS)
    assert all(text in shown for text in SHOWN)
    assert len(htmls) > 10
