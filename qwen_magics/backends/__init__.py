"""Backends: one module per protocol, each an async generator of events.

A backend that computes (the local model) also offers ``generate_here``, which
runs in the calling thread and passes events to a callback.

A backend knows nothing about display; it is chosen by the request's
``protocol`` and imported on first use, so loading the extension imports no SDK.
"""

from __future__ import annotations

from importlib import import_module

from ..runner import Backend, BlockingBackend

_MODULES = {"chat": "openai_chat", "responses": "openai_responses", "dashscope": "dashscope_native", "local": "local"}


def backend_for(protocol: str) -> Backend:
    """The ``stream`` function of the backend that speaks ``protocol``."""
    return import_module(f"{__name__}.{_MODULES[protocol]}").stream


def blocking_backend_for(protocol: str) -> BlockingBackend | None:
    """The backend's ``generate_here`` when it computes rather than waits (the local model), else None."""
    return getattr(import_module(f"{__name__}.{_MODULES[protocol]}"), "generate_here", None)
