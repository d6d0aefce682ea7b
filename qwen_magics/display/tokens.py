"""What ``%qwen_tokens`` shows: the count, characters per token, and the pieces as chips (ids on hover)."""

from __future__ import annotations

import html
from typing import Any, Sequence

_CHIP = ("display:inline-block;white-space:pre;font-family:monospace;margin:1px;padding:0 2px;"
         "border-radius:3px;background:{}")
_COLOURS = ("#dbeafe", "#fde68a", "#bbf7d0", "#fecaca", "#e9d5ff")
_VISIBLE = {"\n": "↵\n", "\t": "→", "\r": "␍"}


class TokenView:
    """Text as Qwen's tokens.  ``pieces`` are :class:`~qwen_magics.tokens.qwen.Piece` values (text and ids)."""

    def __init__(self, text: str, pieces: Sequence[Any]) -> None:
        self.text, self.pieces = text, list(pieces)

    @property
    def count(self) -> int:
        return sum(len(p.ids) for p in self.pieces)

    def header(self) -> str:
        tokens, chars = self.count, len(self.text)
        per = f", {chars / tokens:.2f} characters a token" if tokens else ""
        return f"{tokens:,} Qwen token{'' if tokens == 1 else 's'} for {chars:,} character{'' if chars == 1 else 's'}{per}"

    def __repr__(self) -> str:
        return self.header() + "\n" + "|".join(p.text for p in self.pieces)

    def _repr_html_(self) -> str:
        chips = []
        for i, piece in enumerate(self.pieces):
            shown = "".join(_VISIBLE.get(c, c) for c in piece.text).replace(" ", "·")
            ids = ", ".join(map(str, piece.ids))
            title = html.escape(f"id {ids}" if len(piece.ids) == 1 else f"ids {ids} (one character, {len(piece.ids)} tokens)",
                                quote=True)
            chips.append(f'<span title="{title}" style="{_CHIP.format(_COLOURS[i % len(_COLOURS)])}">'
                         f"{html.escape(shown)}</span>")
        return (f'<div><div style="color:#555;margin-bottom:4px">{html.escape(self.header())} '
                f'<span style="color:#999">(hover a token for its id; · is a space)</span></div>'
                f'<div style="line-height:1.9">{"".join(chips)}</div></div>')
