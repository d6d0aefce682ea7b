"""qwen-magics: Qwen models in Jupyter and IPython.

Load with ``%load_ext qwen_magics``; then ``%%qwen?`` shows the options.
Loading only registers the magics: no network, no model, no SDK import.
"""

from __future__ import annotations

__version__ = "0.1.0"


def load_ipython_extension(ipython) -> None:
    """Register ``%%qwen``, ``%qwen`` and ``%qwen_chat`` (IPython calls this on ``%load_ext``)."""
    from .magics import QwenMagics

    ipython.register_magics(QwenMagics(ipython))


def probs_widget(result, position: int | None = None):
    """The token-probability teaching widget for a result made with ``--logprobs K`` (as ``%qwen_probs``)."""
    from .widgets.probs import probs_widget as make

    return make(result, position)
