"""Markdown to safe HTML.

Model output is untrusted: raw HTML in an answer is escaped (``html=False``) and
markdown-it refuses ``javascript:``/``vbscript:``/``data:`` links, so nothing the
model writes can run in the page.  Tables and strikethrough are on, and code
blocks sit on a light background with fenced code coloured by Pygments (inline
styles, no scripts), as in chat interfaces.
"""

from __future__ import annotations

import html
from functools import lru_cache, partial


_CODE_BOX = ('<pre style="background:#f6f8fa;color:#1f2328;padding:8px 12px;border-radius:6px;'
             'overflow-x:auto;line-height:1.45"><code{attrs}>{code}</code></pre>')


@lru_cache(maxsize=1)
def _parser():
    from markdown_it import MarkdownIt

    parser = MarkdownIt("commonmark", {"html": False, "linkify": False, "highlight": _highlight})
    parser.add_render_rule("code_block", _indented_code)
    return parser.enable(["table", "strikethrough"])


def _highlight(code: str, lang: str, _attrs: str, colour: bool = True) -> str:
    """A fenced block in its box: Pygments spans when ``lang`` names a lexer (and ``colour``), else the code escaped."""
    lexer = _lexer(lang) if lang and colour else None
    if lexer is None:
        body = html.escape(code, quote=False)
    else:
        from pygments import highlight

        body = highlight(code, lexer, _formatter())
    attrs = f' class="language-{html.escape(lang)}"' if lang else ""
    return _CODE_BOX.format(attrs=attrs, code=body)


def _indented_code(renderer, tokens, idx, options, env) -> str:
    """An indented code block, in the same box as fenced code (no language, so no colours)."""
    return _CODE_BOX.format(attrs="", code=html.escape(tokens[idx].content, quote=False)) + "\n"


@lru_cache(maxsize=64)
def _lexer(lang: str):
    """The Pygments lexer named ``lang`` (``python``, ``js``, ...), or None; Pygments loads on first use."""
    from pygments.lexers import get_lexer_by_name
    from pygments.util import ClassNotFound

    try:
        return get_lexer_by_name(lang)
    except ClassNotFound:
        return None


@lru_cache(maxsize=1)
def _formatter():
    """Spans with inline colours (an output carries no stylesheet), without Pygments' own wrapper."""
    from pygments.formatters import HtmlFormatter

    return HtmlFormatter(noclasses=True, nowrap=True, style="default")


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


def render_markdown(text: str, colour: bool = True) -> str:
    """HTML for markdown text, with any HTML in the text shown as text.

    ``colour=False`` leaves code uncoloured (in the same box): the open tail of
    a streaming answer is rendered at every refresh, and colouring it each time
    would cost more than the rest of the refresh; it is coloured once, when it
    is frozen or the answer ends.
    """
    if not text:
        return ""
    parser = _parser()
    options = parser.options if colour else _uncoloured(parser)
    return parser.renderer.render(_tokens(text), options, {})


@lru_cache(maxsize=1)
def _uncoloured(parser):
    """The parser's options with code boxed but not coloured."""
    from markdown_it.utils import OptionsDict

    return OptionsDict({**parser.options, "highlight": partial(_highlight, colour=False)})


def render_plain(text: str) -> str:
    """HTML showing text exactly as written (for ``-f text`` and reasoning)."""
    return f'<pre style="white-space:pre-wrap;margin:0">{html.escape(text)}</pre>' if text else ""


def block_starts(text: str) -> list[int]:
    """Line numbers where each top-level markdown block of ``text`` starts."""
    global _split
    tokens = _parse(text)
    _split = (text, tokens)
    return [tok.map[0] for tok in tokens if _opens_block(tok)]
