"""HTML pieces of an answer's display: the thinking section, the footer, tool lines, the token view.

Used by the streaming renderers and by a result's own display, which shows a
finished answer the way it was streamed.  Everything is built from escaped
text: model output never reaches the page as markup.
"""

from __future__ import annotations

import html
import math
from typing import Any

from .charts import entropy_strip, probability_strip
from .markdown import render_plain
from .text import footer_text

_THINK_STYLE = "color:#666;border-left:3px solid #ccc;padding-left:8px;font-size:0.92em"
_FOOT_STYLE = "color:#888;font-size:0.85em;margin-top:4px"
_TOOL_STYLE = "font-family:monospace;font-size:0.9em;background:#f4f6fa;padding:2px 6px;margin:2px 0"


def reasoning_html(reasoning: str, open_: bool, title: str = "Thinking") -> str:
    """A ``<details>`` section holding the reasoning as written."""
    return (f'<details{" open" if open_ else ""} style="{_THINK_STYLE}"><summary>{html.escape(title)}</summary>'
            f"{render_plain(reasoning)}</details>")


def footer_html(result: Any) -> str:
    return footer_line_html(footer_text(result))


def footer_line_html(text: str) -> str:
    return f'<div style="{_FOOT_STYLE}">{html.escape(text)}</div>'


def tool_html(text: str) -> str:
    """A tool call line (``🔧 f(a=1) → output``)."""
    return f'<div style="{_TOOL_STYLE}">{html.escape(text)}</div>'


def sources_html(sources) -> str:
    """The pages a web search drew on, as links; a URL that is not http(s) is shown as text, never linked."""
    items = []
    for source in sources:
        label = html.escape(source.title or source.url)
        if source.url.startswith(("https://", "http://")):
            items.append(f'<li><a href="{html.escape(source.url, quote=True)}" target="_blank" '
                         f'rel="noopener noreferrer nofollow">{label}</a></li>')
        else:
            items.append(f"<li>{label} ({html.escape(source.url)})</li>")
    return f'<div style="{_FOOT_STYLE}">Sources<ol style="margin:2px 0">{"".join(items)}</ol></div>'


def notice_bundle(text: str) -> dict[str, str]:
    """A one-line warning or note (``⚠ text``) as every surface shows it above an answer or a map."""
    return {"text/plain": f"⚠ {text}", "text/html": f'<div style="color:#a65e00">⚠ {html.escape(text)}</div>'}


def heading_bundle(text: str) -> dict[str, str]:
    """A line naming what follows (``Answer 2 of 3`` above one of ``-n K`` answers)."""
    return {"text/plain": f"── {text} ──",
            "text/html": f'<div style="{_FOOT_STYLE};font-weight:bold">{html.escape(text)}</div>'}


def token_view_html(logprobs) -> str:
    """A chart of each chosen token's probability, then the answer token by token, tinted by probability (the
    less likely, the stronger); hover a token for its alternatives."""
    spans = []
    for entry in logprobs:
        p = math.exp(entry.logprob)
        alternatives = ", ".join(f"{t!r} {math.exp(lp):.1%}" for t, lp in entry.top)
        title = html.escape(f"model probability {p:.1%}" + (f" | alternatives: {alternatives}" if alternatives else ""),
                            quote=True)
        spans.append(f'<span title="{title}" style="background:rgba(255,120,0,{(1 - p) * 0.85:.2f})">'
                     f"{html.escape(entry.token)}</span>")
    return (f'<details open style="margin-top:4px"><summary>Token probabilities ({len(logprobs)} tokens; '
            f"hover a token for its alternatives; %qwen_probs explores them)</summary>"
            f"{probability_strip([math.exp(e.logprob) for e in logprobs])}{entropy_chart(logprobs)}"
            f'<div style="white-space:pre-wrap;font-family:monospace;line-height:1.6">{"".join(spans)}</div></details>')


def entropy_chart(logprobs) -> str:
    """Entropy along the answer: over the whole vocabulary where the backend measured it (the local model),
    else from the top K alternatives, labelled as an approximation; nothing when there are no alternatives."""
    if logprobs and all(getattr(e, "entropy", None) is not None for e in logprobs):
        return entropy_strip([e.entropy for e in logprobs])
    if logprobs and all(e.top for e in logprobs):
        return entropy_strip([_top_k_entropy(e.top) for e in logprobs], approximate=True)
    return ""


def _top_k_entropy(top) -> float:
    """Entropy in bits of the top K renormalised (a lower bound's shape, not the distribution's value)."""
    weights = [math.exp(lp) for _, lp in top]
    total = sum(weights)
    return max(0.0, -sum(w / total * math.log2(w / total) for w in weights if w > 0))


def token_view_text(logprobs) -> str:
    return " ".join(f"{e.token!r}:{math.exp(e.logprob):.2f}" for e in logprobs)
