"""qwen-magics: Qwen models in Jupyter and IPython.

Load with ``%load_ext qwen_magics``; then ``%%qwen?`` shows the options.
Loading only registers the magics: no network, no model, no SDK import.
"""

from __future__ import annotations

__version__ = "0.1.0"


def load_ipython_extension(ipython) -> None:
    """Register the magics (IPython calls this on ``%load_ext``): %%qwen, %qwen_chat, %qwen_local, %qwen_log,
    %qwen_panel, %%qwen_compare, %qwen_probs, %qwen_lab, %%qwen_map, %qwen_batch, %%qwen_eval, %qwen_tokens; and let ``%qwen What is X?`` ask rather
    than open help."""
    from .magics import line_help
    from .magics.batch import QwenBatchMagics
    from .magics.eval import QwenEvalMagics
    from .magics.lab import QwenLabMagics
    from .magics.qwen import QwenMagics, context_of
    from .magics.map import QwenMapMagics
    from .magics.tokens import QwenTokenMagics
    from .magics.widgets import QwenWidgetMagics

    ipython.register_magics(QwenMagics(ipython))
    context = context_of(ipython)  # the settings and services %%qwen shares: the other magics get these, not it
    ipython.register_magics(QwenWidgetMagics(ipython, context))
    ipython.register_magics(QwenMapMagics(ipython, context))
    ipython.register_magics(QwenBatchMagics(ipython, context))
    ipython.register_magics(QwenLabMagics(ipython, context))
    ipython.register_magics(QwenEvalMagics(ipython, context))
    ipython.register_magics(QwenTokenMagics(ipython))
    line_help.register(ipython)


def panel(columns: int | None = None, **lists):
    """The sampling panel (as ``%qwen_panel``), sharing the loaded extension's settings; it displays itself.

    ``columns=2`` opens two columns; lists give a value per column (``model=["qwen-plus", "qwen-flash"]``,
    ``temperature=[0, 1.3]``, ``top_p``, ``seed``, ``thinking``, ``presence_penalty``, ``repetition_penalty``).
    ``panel.columns[i].temperature`` (...) are a column's controls; ``panel.run()`` returns a future whose result
    is the comparison (as ``%%qwen_compare`` returns); ``panel.as_compare_cell()`` is that cell.
    """
    from IPython import get_ipython

    shell = get_ipython()
    if shell is None or "QwenWidgetMagics" not in shell.magics_manager.registry:
        raise RuntimeError("Load the extension first: %load_ext qwen_magics")
    return shell.magics_manager.registry["QwenWidgetMagics"].panel_from_python(columns, lists)


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


def evaluate(data, template: str, **options):
    """Score a prompt over the rows of ``data`` at several settings (as ``%%qwen_eval``); options by their long
    names, lists as lists: ``expect=``, ``score=`` (a scorer's name, or a function ``f(answer, expected, row)``),
    ``model=``, ``temperature=[0, 1]``, ``repeats=``, ``judge=``, ``limit=``, ...

    Returns the same :class:`~qwen_magics.evaluation.report.Evaluation` as the magic: ``.table``, ``.answers``,
    ``.compare(a, b)``.
    """
    from IPython import get_ipython

    shell = get_ipython()
    if shell is None or "QwenEvalMagics" not in shell.magics_manager.registry:
        raise RuntimeError("Load the extension first: %load_ext qwen_magics")
    return shell.magics_manager.registry["QwenEvalMagics"].evaluate_from_python(data, template, options)


def log():
    """The run log (a :class:`~qwen_magics.runlog.RunLog`): the loaded extension's, else the default file.

    ``log().path`` is the SQLite file and ``log().connect()`` an open
    ``sqlite3`` connection to it, for SQL of your own (close it when done);
    ``recent``, ``search``, ``get``, ``cost`` and ``to_dataframe`` query it.
    """
    context = _loaded_context()
    if context is not None:
        return context.run_log.log()
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


def lab(prompt: str, model: str = "local", chat: bool = False, seed: int | None = None, **settings):
    """The sampling lab (as ``%qwen_lab``): continue ``prompt`` on the local Qwen one token at a time.

    ``chat=True`` puts the prompt in the chat template as a user turn; ``seed`` seeds Sample and Run to end;
    ``settings`` are ``temperature``, ``top_k``, ``typical_p``, ``top_p``, ``min_p``, ``repetition``,
    ``frequency``, ``presence`` (None: that stage off).  The widget answers from Python too:
    ``distribution(shaped=True)``, ``entropy()``, ``set(...)``, ``step(token=None)``, ``back()``,
    ``draw(n, seed=0)``, ``text``, ``tokens``, ``stages``.
    """
    from .magics.lab import make_lab

    loaded = _loaded_context()
    context = 4096 if loaded is None else loaded.config.local_context
    return make_lab(prompt, model, chat=chat, seed=seed, context=context, **settings)


def _loaded_context():
    """The loaded extension's :class:`~qwen_magics.options.context.Context`; None where it is not loaded."""
    from IPython import get_ipython

    shell = get_ipython()
    if shell is None or "QwenMagics" not in shell.magics_manager.registry:
        return None  # not loaded: nothing of the magics is imported
    from .magics.qwen import context_of

    return context_of(shell)
