"""``%qwen_tokens`` / ``%%qwen_tokens``: text as Qwen's tokenizer reads it."""

from __future__ import annotations

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class, no_var_expand

from ..errors import QwenMagicsError


@magics_class
class QwenTokenMagics(Magics):
    @no_var_expand
    @line_cell_magic
    def qwen_tokens(self, line: str, cell: str | None = None):
        """Count TEXT in Qwen's tokens and show the pieces (hover one for its id).

        Examples::

            %qwen_tokens 今天天气很好，我们去公园散步吧。

            %%qwen_tokens
            Any text, over several lines.

        The text is taken as written ({braces} included).  Python:
        ``qwen_magics.tokenize(text)`` gives the pieces as strings.
        """
        from ..display.tokens import TokenView
        from ..tokens import qwen

        text = line if cell is None else cell
        if cell is None and not text.strip():
            raise UsageError("No text to count: write it after %qwen_tokens, or in the cell under %%qwen_tokens")
        try:
            return TokenView(text, qwen.pieces(text))
        except QwenMagicsError as err:
            raise UsageError(err.line()) from err
