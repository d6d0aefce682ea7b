"""The request options of one run, as one typed, frozen value.

Every surface ends here: the magics parse their option words into it
(:mod:`~qwen_magics.options.declare`), ``qwen_magics.map(**options)`` and the
widgets build it directly, and the request builder
(:func:`~qwen_magics.options.build.prepare`) takes nothing else.  ``None``
means "not given": the configured default (``%config QwenMagics``) applies.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from ..errors import InvalidInput

Format = Literal["markdown", "text", "code", "json"]


@dataclass(frozen=True)
class Options:
    """What one request asks for; each field is a ``%%qwen`` option of the same name."""

    model: str | None = None
    system: str | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    seed: int | None = None
    max_tokens: int | None = None
    stop: tuple[str, ...] = ()
    presence_penalty: float | None = None
    repetition_penalty: float | None = None
    thinking: bool | None = None
    thinking_budget: int | None = None
    search: bool | None = None
    param: tuple[str, ...] = ()
    """``KEY=VALUE`` words, as written after ``--param``."""
    format: Format = "markdown"
    schema: Any = None
    """The name of a JSON Schema dict or pydantic class in the namespace (or, from Python, the object itself)."""
    prefix: str | None = None
    api: str | None = None
    region: str | None = None
    base_url: str | None = None
    timeout: float | None = None
    stream: bool = True
    expand: bool = True
    """Replace ``{expr}`` in the prompt (``--no-expand``: send braces as written)."""
    n: int | None = None
    logprobs: int | None = None
    tools: str | None = None
    image: tuple[Any, ...] = ()
    video: tuple[Any, ...] = ()

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def of(cls, given: dict[str, Any], where: str = "options") -> Options:
        """From keyword arguments (``qwen_magics.map(temperature=0.3, ...)``): an unknown name is one line."""
        unknown = sorted(set(given) - set(cls.names()))
        if unknown:
            from difflib import get_close_matches

            close = get_close_matches(unknown[0], cls.names(), n=1)
            guess = f": did you mean {close[0]!r}?" if close else ""
            raise InvalidInput(f"{where} has no option {unknown[0]!r}{guess}",
                               f"the request options are {', '.join(cls.names())}")
        return cls(**{k: _as_tuple(v) if k in _TUPLES else v for k, v in given.items()})

    def but(self, **changes: Any) -> Options:
        """A copy with some options changed."""
        return dataclasses.replace(self, **changes)


_TUPLES = {"stop", "param", "image", "video"}


def _as_tuple(value: Any) -> tuple[Any, ...]:
    """A repeatable option's values: none, one value, or a list of them."""
    if value is None:
        return ()
    return tuple(value) if isinstance(value, (list, tuple)) else (value,)
