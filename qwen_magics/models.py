"""Models a picker offers before the endpoint has been asked (and when it cannot be)."""

from __future__ import annotations

#: Model Studio models from the text-generation page, most recommended first.
MODEL_STUDIO = ("qwen3.5-plus", "qwen3.5-flash", "qwen3-max", "qwen-plus", "qwen-flash", "qwen-max",
                "qwen3.5-397b-a17b", "qwen3.5-122b-a10b", "qwen3.5-27b", "qwen3.5-35b-a3b")
#: The in-process models (``-m local`` picks the best one installed).
LOCAL = ("local", "local:1.5b", "local:0.5b")


def is_local(model: str) -> bool:
    """Whether ``model`` names the in-process runtime rather than a service."""
    return model == "local" or model.startswith("local:")


def picker_options(listed: list[str] | None = None) -> list[str]:
    """Known models, then whatever the endpoint listed, then the local ones; no duplicates."""
    return list(dict.fromkeys([*MODEL_STUDIO, *(listed or ()), *LOCAL]))
