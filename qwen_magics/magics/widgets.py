"""``%qwen_panel``, ``%%qwen_compare`` and ``%qwen_probs``: the widget magics.

They get the extension's :class:`~qwen_magics.options.context.Context` (the
one configuration, the run log) and read every column's options as ``%%qwen``
reads its own (``context.column_options``), so widgets and magics accept, check
and report options identically.  The widget modules import ipywidgets, so they are
imported here on first use, not when the extension loads.
"""

from __future__ import annotations

import argparse
import re
import uuid
from functools import partial

from IPython.core.error import UsageError
from IPython.core.magic import cell_magic, line_magic, magics_class, no_var_expand
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring
from IPython.display import display, update_display

from .. import runner
from ..backends import backend_for
from ..errors import InvalidInput, QwenMagicsError
from .surface import SurfaceMagics
from ..options.expand import expand
from ..options.build import choose_model, endpoint_for, prepare
from ..options.declare import (
    COMPARED,
    REQUEST_OPTIONS,
    as_words,
    parse_options,
    request_arguments,
    words,
)
from ..options.settings import AXES as _AXES, expand as expand_settings, settings_of
from ..options.value import Options
from ..request import Request
from ..display.text import footer_text

_COMMON = tuple(dict.fromkeys(d.dest for d in REQUEST_OPTIONS if d.dest not in COMPARED
                              and d.dest not in ("schema", "prefix", "no_stream")))
"""The request options a comparison applies to every column."""
_CONCURRENCY = 4  # columns streaming at once when --concurrency is not given
_READ_WAIT = 2.0  # seconds to let the log writer finish before a run is looked up


@magics_class
class QwenWidgetMagics(SurfaceMagics):
    """Widgets over the extension's shared settings (its :class:`~qwen_magics.options.context.Context`)."""

    def request_factory(self, prompt: str):
        """Build a request from a ``%qwen`` option string, as the magic would; errors as QwenMagicsError."""
        def make(options: str, text: str = prompt) -> Request:
            chosen = self.context.column_options(options)  # expands nothing: the prompt was, once, for every column
            if not text.strip():
                raise InvalidInput("The prompt is empty", "type a prompt first")
            return prepare(self.context.config, chosen, text, self.shell.user_ns).request

        return make

    @magic_arguments()
    @argument("--columns", type=int, metavar="N", help="N columns side by side (default: one, or one per list item)")
    @argument("-m", "--model", help="a model per column, comma-separated: -m qwen-plus,qwen-flash")
    @argument("-t", "--temperature", help="a temperature per column, comma-separated: -t 0,1.3")
    @argument("--top-p", help="a top_p per column, comma-separated")
    @argument("--seed", help="a seed per column, comma-separated")
    @argument("--thinking", help="on, off or default per column, comma-separated")
    @argument("--presence-penalty", help="a presence penalty per column, comma-separated")
    @argument("--repetition-penalty", help="a repetition penalty per column, comma-separated")
    @line_magic
    def qwen_panel(self, line: str = ""):
        """Show the sampling panel: columns of model pickers and sliders under one prompt; Run all, Stop.

        Examples::

            %qwen_panel                          one column, as configured
            %qwen_panel --columns 2              two columns to set apart
            %qwen_panel -m qwen-plus,qwen-flash -t 0,1.3

        Each column has its own Run; + column copies the last one; a control's
        link toggle moves it in every column.  "Copy as cell" puts the
        %%qwen_compare cell of the columns into a new cell under the panel's
        (JupyterLab and Notebook 7 with ipylab; elsewhere it shows the cell
        to copy); "Make these the %%qwen defaults"
        sets ``%config QwenMagics`` from the first column.  The panel is kept
        in ``_qwen_panel``; ``qwen_magics.panel()`` returns one.
        """
        args = parse_options(self.qwen_panel.parser, words(line), "qwen_panel")
        try:
            panel = self.make_panel(args.columns, {name: _split(getattr(args, name)) for name in _AXES})
        except QwenMagicsError as err:
            raise UsageError(err.line()) from err
        self.shell.user_ns["_qwen_panel"] = panel
        display(panel)
        return None

    def panel_from_python(self, columns: int | None, lists: dict):
        """``qwen_magics.panel(columns=2, temperature=[0, 1.2])``: values by ``%qwen_panel``'s long names."""
        unknown = set(lists) - set(_AXES)
        if unknown:
            raise InvalidInput(f"panel() takes no {', '.join(sorted(unknown))}",
                               f"give columns= and lists of {', '.join(_AXES)}")
        axes = {name: [_python_value(v) for v in (value if isinstance(value, (list, tuple)) else [value])]
                for name, value in lists.items() if value is not None}
        return self.make_panel(columns, axes)

    def make_panel(self, columns: int | None = None, lists: dict | None = None):
        """A panel of ``columns`` columns, or one per item of the ``lists`` (option name → values)."""
        from ..backends.openai_chat import list_models
        from ..widgets.compare import column_specs
        from ..widgets.panel import Panel

        if columns is not None and columns < 1:
            raise InvalidInput("--columns must be 1 or more", "e.g. --columns 2")
        for name, values in (lists or {}).items():
            for value in values:
                _check_number(name, value)
        specs = column_specs(expand_settings(dict(lists or {}), grid=False), 1, [])
        options = [spec.options for spec in specs]
        if columns is not None and len(options) > 1 and columns != len(options):
            raise InvalidInput(f"--columns {columns} but the lists give {len(options)} columns",
                               "drop --columns, or give each list that many values")
        options = options * (columns or 1) if len(options) == 1 else options
        make = self.request_factory("")
        model, _ = choose_model(Options(), self.context.config)
        catalogue = True
        try:
            endpoint = endpoint_for(self.context.config, None, None, None)
            listing = (lambda: list_models(endpoint)) if endpoint.api_key() or not endpoint.key_required else None
            catalogue = endpoint.region is not None  # a base URL: offer that server's models alone
        except QwenMagicsError:
            listing = None
        return Panel(self.context.config, lambda opts, prompt: make(opts, prompt), listing, model=model,
                     new_logger=lambda: self._logger("panel"), catalogue=catalogue, columns=options, shell=self.shell)

    def _logger(self, kind: str):
        """The callback a widget calls with each finished run: into the run log, grouped under one new id."""
        return partial(self.context.run_log.record, group_id=uuid.uuid4().hex, group_kind=kind)

    @magic_arguments()
    @request_arguments(lists=True, without=("schema", "prefix", "no_stream"))
    @argument("--variants", action="store_true",
              help="the cell holds several prompts, separated by lines of only ---: each is a column (an axis)")
    @argument("--grid", action="store_true", help="cross the lists (e.g. a temperature x top_p grid) instead of zipping them")
    @argument("-n", "--repeat", type=int, default=1, metavar="K", help="run each setting K times to show sampling variance")
    @argument("--logprobs", type=int, metavar="K", help="token probabilities, every column")
    @argument("--concurrency", type=int,
              help="columns streaming at once (default 4, and a server's QwenMagics.concurrency entry)")
    @argument("-o", "--out", metavar="NAME", help="also store the comparison in NAME (always in _qwen_compare)")
    @argument("--no-expand", action="store_true", help="send {braces} as written")
    @argument("--no-log", action="store_true", help="keep this comparison's runs out of the run log")
    @no_var_expand
    @cell_magic
    def qwen_compare(self, line: str, cell: str):
        """Run one prompt in columns side by side: models and sampling settings, streaming at once.

        Examples::

            %%qwen_compare -m qwen3.5-plus,qwen-flash
            %%qwen_compare -t 0,0.7,1.3 -n 3          (3 repeats of each temperature)
            %%qwen_compare --grid -t 0.3,1.3 --top-p 0.2,1

        Lists of the same length are zipped, --grid crosses them; a list item
        ``default`` sends nothing for that column (-t default,1.3).  Each
        column shows its settings in a model picker and sliders: move one and
        Run the column alone.  Stop (or the kernel's stop) cancels all.
        A server that serves one request at a time (llama.cpp's) needs
        --concurrency 1, or once: %config QwenMagics.concurrency = {URL: 1}.
        The comparison is returned (``.rows``, ``.to_dataframe()``, ``.to_markdown()``).
        """
        args = parse_options(self.qwen_compare.parser, words(line), "qwen_compare")
        try:
            return self._compare(args, cell)
        except QwenMagicsError as err:
            raise UsageError(err.line()) from err

    def _compare(self, args: argparse.Namespace, cell: str):
        from ..widgets.compare import Comparison, column_specs

        if args.out is not None and not args.out.isidentifier():
            raise UsageError(f"-o {args.out!r} is not a Python name: use e.g. -o runs")
        if args.repeat < 1 or (args.concurrency is not None and args.concurrency < 1):
            raise UsageError("-n and --concurrency must be 1 or more")
        expansion = None if args.no_expand else expand(cell, self.shell.user_ns, max_chars=self.context.config.max_value_chars,
                                                       dataframe_rows=self.context.config.dataframe_rows)
        prompt = (expansion.text if expansion else cell).strip()
        common = [word for dest in _COMMON for word in as_words(dest, getattr(args, dest))]
        common += ["--logprobs", str(args.logprobs)] if args.logprobs is not None else []
        specs = column_specs(settings_of(args, prompt), args.repeat, common)
        make = self.request_factory(prompt)
        requests = [make(spec.options, spec.prompt or prompt) for spec in specs]  # all checked before sending
        for request in requests:
            backend_for(request.protocol)  # and its SDK imported now, not in the first column's latency
        comparison = Comparison(prompt, specs, make, concurrency=args.concurrency or _CONCURRENCY,
                                per_server=self.context.config.concurrency if args.concurrency is None else {},
                                interval=self.context.config.update_interval,
                                on_result=None if args.no_log else self._logger("comparison"),
                                default_model=choose_model(Options(base_url=args.base_url, region=args.region),
                                                           self.context.config)[0],
                                catalogue=not (args.base_url or self.context.config.base_url))
        for warning in [*(expansion.warnings if expansion else ()), *_turns_notice(requests)]:
            print(f"⚠ {warning}")
        self.shell.user_ns["_qwen_compare"] = comparison
        if args.out:
            self.shell.user_ns[args.out] = comparison
        notebook = self.context.renders_in_notebook()
        display_id = None
        if notebook:
            display_id = display(comparison.bundle(), raw=True, display_id=True).display_id
        self._run_blocking(comparison)
        if notebook:
            update_display(comparison.bundle(), raw=True, display_id=display_id)  # the static export, now filled
        else:
            for row, result in zip(comparison.columns, comparison.results):
                print(f"── {row.spec.label} ──\n{result.text}\n[{footer_text(result)}]\n")
        self.context.track_live(comparison)
        return comparison

    def _run_blocking(self, comparison) -> None:
        try:
            runner.block(comparison.run_all())
        except KeyboardInterrupt:
            raise UsageError("Stopped by user: every column keeps its partial answer (in _qwen_compare)") from None

    @magic_arguments()
    @argument("name", nargs="?", default="_qwen",
              help="a result from %%qwen --logprobs K, or the id of a logged run (default: _qwen)")
    @argument("--position", type=int, help="token to start at, 1 for the first (default: the most uncertain one)")
    @line_magic
    def qwen_probs(self, line: str):
        """Explore how sampling picks each token: the next-token distribution with temperature and top_p sliders.

        Examples::

            %qwen -m local --logprobs 5 -t 0 The capital of France is
            %qwen_probs                      the last result
            %qwen_probs answer --position 3
            %qwen_probs 1a2b3c4d              a run from %qwen_log, in this kernel or an earlier one
        """
        from ..widgets.probs import probs_widget

        args = parse_argstring(self.qwen_probs, line)
        result = self.shell.user_ns[args.name] if args.name in self.shell.user_ns else self._logged(args.name)
        try:
            display(probs_widget(result, args.position))
        except ValueError as err:
            raise UsageError(str(err)) from None

    def _logged(self, run_id: str):
        """A logged run's token probabilities (as a result carrying ``logprobs``), found by its id or a prefix."""
        from types import SimpleNamespace

        from ..runlog.view import logprob_entries

        log = self.context.run_log.log()
        log.flush(_READ_WAIT)
        try:
            record = log.get(run_id) if re.fullmatch(r"[0-9a-fA-F]{4,32}", run_id) else None
        except QwenMagicsError as err:
            raise UsageError(err.line()) from None
        if record is None:
            raise UsageError(f"No result or logged run named {run_id!r}: run %%qwen --logprobs 5 first, "
                             "or give a run id from %qwen_log")
        entries = logprob_entries(record)
        if not entries:
            raise UsageError(f"Run {record.id[:8]} has no token probabilities: it ran without --logprobs K")
        return SimpleNamespace(logprobs=entries)


def _turns_notice(requests: list[Request]) -> list[str]:
    """Said once above the columns: local columns share one model, so they take turns."""
    local = sum(request.protocol == "local" for request in requests)
    if local < 2:
        return []
    others = ", the other columns at the same time" if local < len(requests) else ""
    return [f"The local model answers one column at a time: its {local} columns run one after another{others}"]


def _check_number(name: str, value: str) -> None:
    """A panel list's value that its control cannot show is refused before the panel opens."""
    kind = {"seed": int}.get(name, float if name not in ("model", "thinking") else None)
    if kind is None or value.lower() == "default":
        if name == "thinking" and value.lower() not in ("on", "off", "default", "true", "false", "1", "0", "yes", "no"):
            raise InvalidInput(f"thinking {value!r} is not on, off or default", "e.g. --thinking on,off")
        return
    try:
        kind(value)
    except ValueError:
        raise InvalidInput(f"{name} {value!r} is not a number", f"give numbers, e.g. {_AXES[name]} 0,1.3") from None


def _python_value(value) -> str:
    """A value given to ``panel()`` as ``%qwen_panel`` would read it (None: the column sends nothing)."""
    if value is None:
        return "default"
    if isinstance(value, bool):
        return "on" if value else "off"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _split(value: str | None) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()] if value else []
