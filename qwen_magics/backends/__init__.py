"""Backends: one module per protocol, each an async generator of events.

A backend knows nothing about display; it is chosen by the request's
``protocol`` and imported on first use, so loading the extension imports no SDK.
"""

from __future__ import annotations

from importlib import import_module

from ..runner import Backend

_MODULES = {"chat": "openai_chat", "responses": "openai_responses", "dashscope": "dashscope_native", "local": "local"}


def backend_for(protocol: str) -> Backend:
    """The ``stream`` function of the backend that speaks ``protocol``."""
    return import_module(f"{__name__}.{_MODULES[protocol]}").stream
