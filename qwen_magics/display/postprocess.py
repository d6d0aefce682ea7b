"""What ``-f code`` and ``-f json`` do with a finished answer.

``-f code`` puts the answer's code blocks into the next cell (never runs them:
model output is untrusted); ``-f json`` parses the answer into ``result.data``,
validated against a ``--schema`` pydantic model when one was given.  Fenced
blocks are found by the markdown parser the renderers use, so what is taken as
code is exactly what was shown as code.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from ..errors import OutputFormatError


@lru_cache(maxsize=1)
def _parser():
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark")


def code_blocks(text: str) -> list[str]:
    """The contents of the fenced code blocks in a markdown answer, in order."""
    return [token.content for token in _parser().parse(text) if token.type == "fence"]


def code_of(text: str) -> str:
    """The code to put into the next cell: the answer's code blocks, or the whole answer when it has none."""
    blocks = code_blocks(text)
    return ("\n".join(blocks) if blocks else text).rstrip("\n")


def parse_json(text: str) -> Any:
    """The answer as data: its JSON (the first fenced block's, if it fenced it)."""
    raw = text.strip()
    blocks = code_blocks(raw)
    try:
        return json.loads(blocks[0] if blocks else raw)
    except json.JSONDecodeError as err:
        raise OutputFormatError(f"The answer is not valid JSON ({err.msg} at line {err.lineno})",
                                "the raw text is kept in _qwen.text; ask again or loosen the request") from err


def validate(data: Any, validator: Any) -> Any:
    """``data`` as an instance of the pydantic model ``validator`` (``--schema``)."""
    try:
        return validator.model_validate(data)
    except ValueError as err:  # pydantic's ValidationError
        first = str(err).splitlines()[:3]
        raise OutputFormatError(f"The answer does not match {validator.__name__}: {' '.join(first)}",
                                "the raw text is kept in _qwen.text and the parsed JSON in _qwen.data") from err
