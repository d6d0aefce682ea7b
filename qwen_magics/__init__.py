"""qwen-magics: Qwen models in Jupyter and IPython.

Load with ``%load_ext qwen_magics``; then ``%%qwen?`` shows the options.
Loading only registers the magics: no network, no model, no SDK import.
"""

from __future__ import annotations

__version__ = "0.1.0"


def load_ipython_extension(ipython) -> None:
    """Register the magics (IPython calls this on ``%load_ext``): %%qwen, %qwen_chat, %qwen_local,
    %qwen_panel, %%qwen_compare, %qwen_probs; and let ``%qwen What is X?`` ask rather than open help."""
    from . import line_help
    from .magics import QwenMagics
    from .widget_magics import QwenWidgetMagics

    settings = QwenMagics(ipython)
    ipython.register_magics(settings)
    ipython.register_magics(QwenWidgetMagics(ipython, settings))
    line_help.register(ipython)


def panel():
    """The sampling panel widget (as ``%qwen_panel``), sharing the loaded extension's settings."""
    from IPython import get_ipython

    shell = get_ipython()
    if shell is None or "QwenWidgetMagics" not in shell.magics_manager.registry:
        raise RuntimeError("Load the extension first: %load_ext qwen_magics")
    return shell.magics_manager.registry["QwenWidgetMagics"].make_panel().widget


def probs_widget(result, position: int | None = None):
    """The token-probability teaching widget for a result made with ``--logprobs K`` (as ``%qwen_probs``)."""
    from .widgets.probs import probs_widget as make

    return make(result, position)
