"""Backends: one module per protocol, each turning a request into an async stream of events.

A backend knows nothing about display: it builds its protocol's request,
maps what comes back to :mod:`~qwen_magics.events`, and leaves the skeleton
every protocol shares (a start, a finish reason, errors as one line) to
:func:`~qwen_magics.backends.common.guarded`.  It is chosen by the request's
``protocol`` and imported on first use, so loading the extension imports no SDK.
"""

from __future__ import annotations

from importlib import import_module
from typing import AsyncIterator, Callable

from ..events import Event
from ..request import Request

Backend = Callable[[Request], AsyncIterator[Event]]
"""A protocol's ``stream``: the events of one request; fails with a QwenMagicsError."""

_MODULES = {"chat": "openai_chat", "responses": "openai_responses", "dashscope": "dashscope_native", "local": "local"}


def backend_for(protocol: str) -> Backend:
    """The ``stream`` function of the backend that speaks ``protocol``."""
    return import_module(f"{__name__}.{_MODULES[protocol]}").stream
