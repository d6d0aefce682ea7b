"""Markdown to safe HTML.

Model output is untrusted: raw HTML in an answer is escaped (``html=False``) and
markdown-it refuses ``javascript:``/``vbscript:``/``data:`` links, so nothing the
model writes can run in the page.  Tables and strikethrough are on, as in chat
interfaces.
"""

from __future__ import annotations

import html
from functools import lru_cache


@lru_cache(maxsize=1)
def _parser():
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark", {"html": False, "linkify": False}).enable(["table", "strikethrough"])


@lru_cache(maxsize=4)
def _tokens(text: str) -> list:
    """The parse of ``text``, kept for a moment: a refresh splits the tail into blocks, then renders it."""
    return _parser().parse(text)


def render_markdown(text: str) -> str:
    """HTML for markdown text, with any HTML in the text shown as text."""
    if not text:
        return ""
    parser = _parser()
    return parser.renderer.render(_tokens(text), parser.options, {})


def render_plain(text: str) -> str:
    """HTML showing text exactly as written (for ``-f text`` and reasoning)."""
    return f'<pre style="white-space:pre-wrap;margin:0">{html.escape(text)}</pre>' if text else ""


def block_starts(text: str) -> list[int]:
    """Line numbers where each top-level markdown block of ``text`` starts."""
    return [tok.map[0] for tok in _tokens(text) if tok.level == 0 and tok.map and tok.nesting >= 0]
