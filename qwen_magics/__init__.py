"""qwen-magics: Qwen models in Jupyter and IPython.

Load with ``%load_ext qwen_magics``; then ``%%qwen?`` shows the options.
Loading only registers the magics: no network, no model, no SDK import.
"""

from __future__ import annotations

__version__ = "0.1.0"


def load_ipython_extension(ipython) -> None:
    """Register the magics (IPython calls this on ``%load_ext``): %%qwen, %qwen_chat, %qwen_local, %qwen_log,
    %qwen_panel, %%qwen_compare, %qwen_probs, %%qwen_map, %qwen_batch, %qwen_tokens; and let ``%qwen What is X?`` ask rather
    than open help."""
    from .magics import line_help
    from .magics.batch import QwenBatchMagics
    from .magics.qwen import QwenMagics
    from .magics.map import QwenMapMagics
    from .magics.tokens import QwenTokenMagics
    from .magics.widgets import QwenWidgetMagics

    settings = QwenMagics(ipython)
    ipython.register_magics(settings)
    ipython.register_magics(QwenWidgetMagics(ipython, settings))
    ipython.register_magics(QwenMapMagics(ipython, settings))
    ipython.register_magics(QwenBatchMagics(ipython, settings))
    ipython.register_magics(QwenTokenMagics(ipython))
    line_help.register(ipython)


def panel():
    """The sampling panel widget (as ``%qwen_panel``), sharing the loaded extension's settings."""
    from IPython import get_ipython

    shell = get_ipython()
    if shell is None or "QwenWidgetMagics" not in shell.magics_manager.registry:
        raise RuntimeError("Load the extension first: %load_ext qwen_magics")
    return shell.magics_manager.registry["QwenWidgetMagics"].make_panel().widget


def map(data, template: str, **options):
    """One prompt over every row of ``data`` (as ``%%qwen_map``); options by their long names:
    ``model=``, ``temperature=``, ``concurrency=``, ``limit=``, ``schema=`` (a name, class or dict), ...

    Returns a DataFrame aligned with the input (a list of dicts without pandas).
    """
    from IPython import get_ipython

    shell = get_ipython()
    if shell is None or "QwenMapMagics" not in shell.magics_manager.registry:
        raise RuntimeError("Load the extension first: %load_ext qwen_magics")
    return shell.magics_manager.registry["QwenMapMagics"].map_from_python(data, template, options)


def log():
    """The run log (a :class:`~qwen_magics.runlog.RunLog`): the loaded extension's, else the default file.

    ``log().path`` is the SQLite file and ``log().connect()`` an open
    ``sqlite3`` connection to it, for SQL of your own (close it when done);
    ``recent``, ``search``, ``get``, ``cost`` and ``to_dataframe`` query it.
    """
    from IPython import get_ipython

    shell = get_ipython()
    if shell is not None and "QwenMagics" in shell.magics_manager.registry:
        return shell.magics_manager.registry["QwenMagics"].run_log.log()
    from .runlog import RunLog

    return RunLog()


def tokenize(text: str, model: str | None = None) -> list[str]:
    """The pieces Qwen's tokenizer reads ``text`` as (strings, in order, joining to the text); ``model``, if
    given, must be a Qwen model (they share one vocabulary).  The vocabulary loads on first use."""
    from .tokens.qwen import tokenize as pieces

    return pieces(text, model)


def probs_widget(result, position: int | None = None):
    """The token-probability teaching widget for a result made with ``--logprobs K`` (as ``%qwen_probs``)."""
    from .widgets.probs import probs_widget as make

    return make(result, position)
