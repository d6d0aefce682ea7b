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
def _parse(text: str) -> list:
    """The parse of ``text``, kept for a moment: a refresh splits the tail into blocks, then renders it."""
    return _parser().parse(text)


_split: tuple[str, list] | None = None
"""The text :func:`block_starts` last split, with its parse."""


def _tokens(text: str) -> list:
    """The parse of ``text``; for the leading blocks of the text last split, the part of that parse.

    A refresh freezes the blocks before the last one and renders them: parsing
    them again would double the markdown work of a fast stream, the largest
    part of its refreshes.  Blocks that end before a later block starts parse
    the same with or without what follows, except that a link whose reference
    is defined later resolves, as it will in the whole answer.
    """
    split = _split  # one read: another thread (a widget column) may split meanwhile
    if split is not None and text.endswith("\n"):
        whole, tokens = split
        if len(text) < len(whole) and whole.startswith(text):
            line = text.count("\n")
            for i, tok in enumerate(tokens):
                if _opens_block(tok) and tok.map[0] >= line:
                    if tok.map[0] == line:
                        return tokens[:i]
                    break
    return _parse(text)


def _opens_block(tok) -> bool:
    """Whether a token starts a top-level block (its ``map`` then holds the block's first line)."""
    return tok.level == 0 and bool(tok.map) and tok.nesting >= 0


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
    global _split
    tokens = _parse(text)
    _split = (text, tokens)
    return [tok.map[0] for tok in tokens if _opens_block(tok)]
