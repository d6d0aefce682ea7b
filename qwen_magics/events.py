"""Typed events: the one language spoken between backends and renderers.

A backend turns a :class:`~qwen_magics.request.Request` into an async stream of
these; a renderer consumes them; :class:`~qwen_magics.result.Result` is their
fold.  No SDK object ever appears here, so renderers never import an SDK.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass
from typing import Literal, Union

consumer_pace: contextvars.ContextVar[float | None] = contextvars.ContextVar("consumer_pace", default=0.0)
"""How often the consumer of a stream shows what arrived (seconds; None: only at its end).  Set by the
driver while it reads a stream, so a backend that must batch what it hands over (the local model's
worker thread) hands it over no more often than it will be shown; a consumer that sets none (a plain
``async for``) gets each piece as it comes."""


@dataclass(frozen=True)
class ReasoningDelta:
    """A piece of the model's thinking (``reasoning_content``); ``choice``: which of ``-n K`` answers."""

    text: str
    choice: int = 0
    type: Literal["reasoning"] = "reasoning"


@dataclass(frozen=True)
class TextDelta:
    """A piece of the answer; ``choice``: which of ``-n K`` answers (0 for the first, or only, one)."""

    text: str
    choice: int = 0
    type: Literal["text"] = "text"


@dataclass(frozen=True)
class ToolCallDelta:
    """A piece of a tool call the model asked for (arguments arrive in parts)."""

    index: int
    id: str | None
    name: str | None
    arguments: str
    type: Literal["tool_call"] = "tool_call"


@dataclass(frozen=True)
class TokenLogprob:
    """One generated token, its log-probability and the top alternatives at that position.

    These are the model's raw distribution, before temperature and top_p.
    """

    token: str
    logprob: float
    top: tuple[tuple[str, float], ...] = ()
    entropy: float | None = None
    """Bits of the whole next-token distribution here (the local model); None where only the top K are known."""
    type: Literal["logprob"] = "logprob"


@dataclass(frozen=True)
class Usage:
    """Token counts as the service reported them."""

    input: int = 0
    output: int = 0
    reasoning: int = 0
    cached: int = 0
    type: Literal["usage"] = "usage"


@dataclass(frozen=True)
class Started:
    """The service accepted the request; carries its id and the model that answers."""

    request_id: str | None = None
    model: str | None = None
    type: Literal["started"] = "started"


@dataclass(frozen=True)
class Finished:
    """The model ended its answer (``stop``, ``length``, ``tool_calls``, …); ``choice`` as for text."""

    reason: str
    choice: int = 0
    type: Literal["finished"] = "finished"


@dataclass(frozen=True)
class Source:
    """A web page the answer drew on (``--search``), shown as a link under the answer."""

    url: str
    title: str = ""
    type: Literal["source"] = "source"


@dataclass(frozen=True)
class Failed:
    """The run ended early.  ``state`` is ``"incomplete"`` (an error) or ``"stopped"`` (the user).

    ``kind`` names the error's class (``RateLimited``, ``ContentBlocked``, ...), for tallies of many runs.
    """

    message: str
    state: Literal["incomplete", "stopped"] = "incomplete"
    kind: str | None = None
    type: Literal["failed"] = "failed"


Event = Union[ReasoningDelta, TextDelta, ToolCallDelta, TokenLogprob, Usage, Started, Finished, Source, Failed]
