"""The request: everything a backend needs, as plain frozen data.

Backends receive only a :class:`Request`, never the shell or the config, so the
same request can be replayed, compared across columns, or sent by a script.
The API key is *not* here: :class:`Endpoint` names the environment variable,
and the backend reads it at call time, so no repr of a request can leak it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from .tokens.prices import Price

Protocol = Literal["chat", "responses", "dashscope", "local"]
APIS: tuple[str, ...] = ("chat", "responses", "dashscope")
"""The remote protocols a user picks with ``--api``; ``local`` follows from the model's name."""
ResponseFormat = dict[str, Any]
"""``{"type": "json_object"}``, or ``{"type": "json_schema", "json_schema": {"name", "schema", "strict"}}``."""


@dataclass(frozen=True)
class Sampling:
    """Sampling settings; ``None`` means "leave it to the model's default"."""

    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    seed: int | None = None
    max_tokens: int | None = None
    stop: tuple[str, ...] = ()
    presence_penalty: float | None = None
    """In [-2, 2]: above 0, tokens already in the text are less likely again (new topics); below 0, more."""
    repetition_penalty: float | None = None
    """Above 0; 1.0 means none: above 1, repeating any earlier token is penalised (less looping)."""

    def sent(self) -> dict[str, Any]:
        """The settings that were set, as they are reported in a result."""
        values = ((name, getattr(self, name)) for name in _SAMPLING_FIELDS)  # asdict's deep copies cost a map
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in values if v is not None and v != ()}


_SAMPLING_FIELDS = tuple(f.name for f in fields(Sampling))


@dataclass(frozen=True)
class Endpoint:
    """Where to send a request and how patiently (for the local runtime: its context window)."""

    base_url: str
    api_key_env: str = "DASHSCOPE_API_KEY"
    key_required: bool = True
    region: str | None = None
    timeout: float = 60.0
    connect_timeout: float = 10.0
    max_retries: int = 2
    context: int = 4096

    def api_key(self) -> str | None:
        """The key, read from the environment now (never stored on the object)."""
        return os.environ.get(self.api_key_env) or None


@dataclass(frozen=True)
class Request:
    """One call to a model: messages, model, sampling and protocol."""

    messages: tuple[dict[str, Any], ...]
    model: str
    endpoint: Endpoint
    sampling: Sampling = field(default_factory=Sampling)
    thinking: bool | None = None
    thinking_budget: int | None = None
    response_format: ResponseFormat | None = None
    stream: bool = True
    protocol: Protocol = "chat"
    logprobs: int | None = None
    """Ask for the top-K alternatives of every generated token."""
    price: Price | None = None
    """What a million tokens cost, where known: the package's table, ``QwenMagics.prices``, free for local."""
    tools: tuple[dict[str, Any], ...] = ()
    """Functions the model may call: ``{"name", "description", "parameters"}`` (see :mod:`qwen_magics.tools`)."""
    n: int = 1
    """Answers asked for in this one request (``-n K`` where the protocol and model allow it)."""
    search: bool = False
    """Web search on (``enable_search``; the Responses API's ``web_search`` tool)."""
    extra: tuple[tuple[str, Any], ...] = ()
    """Request fields the package does not model (``--param KEY=VALUE``), sent as they are where the protocol
    takes extra fields; one that names a field the package sets replaces it (the user was told)."""

    def parameters(self) -> dict[str, Any]:
        """The settings this request sends, for the result object and the footer."""
        params: dict[str, Any] = {"model": self.model, **self.sampling.sent()}
        if self.thinking is not None:
            params["enable_thinking"] = self.thinking
        if self.thinking_budget is not None:
            params["thinking_budget"] = self.thinking_budget
        if self.response_format:
            params["response_format"] = self.response_format["type"]
        if self.logprobs:
            params["logprobs"] = self.logprobs
        if self.tools:
            params["tools"] = [t["name"] for t in self.tools]
        if self.n > 1:
            params["n"] = self.n
        if self.search:
            params["enable_search"] = True
        params.update(self.extra)
        params["stream"] = self.stream
        params["protocol"] = self.protocol
        return params
