"""The sampling panel: columns of model pickers and sliders under one prompt, run side by side.

Each column is a :class:`~qwen_magics.widgets.column.ColumnControls`, and the
columns are a :class:`~qwen_magics.widgets.compare.Comparison`: Run all
streams them at once, as ``%%qwen_compare`` does (a server's
``QwenMagics.concurrency`` kept, local columns one after another), and
``run()``'s result is that comparison, with its summary under the columns.
Every request is built from the column's ``%qwen`` options by the same parser
and checks as the magic, so a bad setting reads the same in both.  The panel
starts from the ``QwenMagics`` configuration, where an unset value shows as
"default" and is not sent; "Make these the %%qwen defaults" writes the first
column back into that one configuration (there is no second copy to drift).
"Copy as cell" puts the ``%%qwen_compare`` cell that reproduces the columns
into a new cell under the panel's, where the front end takes one (see
:mod:`~qwen_magics.widgets.frontend`), and shows its text where it does not.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import html
import shlex
from typing import Any, Callable

import ipywidgets as w

from .. import runner
from ..errors import InvalidInput
from ..models import is_local, picker_options, unsupported_controls
from ..request import Request
from ..result import Result
from . import frontend
from .column import CONTROLS, NUMBERS, SLIDERS, ColumnControls
from .compare import Column, Comparison, OnResult

RequestFactory = Callable[[str, str], Request]
"""Builds a request from an option string and a prompt; raises QwenMagicsError on bad input."""

_AXES = {"model": "-m", "temperature": "-t", "top_p": "--top-p", "seed": "--seed", "thinking": "--thinking",
         "presence_penalty": "--presence-penalty", "repetition_penalty": "--repetition-penalty"}
"""Controls that ``%%qwen_compare`` takes as a list (a value per column); the others are one for every column."""


class Panel:
    """A shared prompt and system prompt over columns of controls; Run all, Stop, + column, Copy as cell."""

    def __init__(self, settings: Any, make_request: RequestFactory, list_models: Callable[[], Any] | None = None, *,
                 model: str | None = None, new_logger: Callable[[], OnResult] | None = None, catalogue: bool = True,
                 columns: list[str] | None = None, shell: Any = None) -> None:
        """``model``: the model to start with, chosen as ``%%qwen`` would (default: the configured one).

        ``columns``: each column's ``%qwen`` options over the configuration (default: one column as configured).
        ``new_logger()``: the run-log callback of one new group (a Run all's columns share it).
        ``catalogue`` false: the requests go to a server other than Model Studio, so the picker offers what
        ``list_models`` gives (and the local models), and picks the first of them if ``model`` is not listed.
        """
        self.settings, self.catalogue, self.shell = settings, catalogue, shell
        self.start_model = model or settings.model
        self._new_logger = new_logger
        self.comparison = Comparison("", [], make_request, per_server=settings.concurrency,
                                     interval=settings.update_interval, catalogue=catalogue,
                                     default_model=self.start_model, removable=True,
                                     on_result=lambda request, result: self._record(None, request, result))
        for options in columns or [""]:
            self.add_column(options)
        self.system = w.Textarea(value=settings.system, placeholder="system prompt (optional)",
                                 layout=w.Layout(width="100%"))
        self.prompt = w.Textarea(placeholder="prompt", layout=w.Layout(width="100%", height="80px"))
        self.system.observe(lambda _: self._share(), "value")
        self.prompt.observe(lambda _: self._share(), "value")
        self._share()
        self.run_button = w.Button(description="Run all", icon="play", button_style="primary",
                                   tooltip="run every column at once")
        self.stop_button = self.comparison.stop_button
        self.comparison.diff_toggle.layout.width = "auto"
        self.add_button = w.Button(description="+ column", tooltip="a new column with the last column's settings",
                                   layout=w.Layout(width="auto"))
        self.copy_button = w.Button(description="Copy as cell", icon="copy", layout=w.Layout(width="auto"),
                                    tooltip="a new cell under this one: the %%qwen_compare cell that reproduces "
                                            "these columns and prompt")
        self.defaults_button = w.Button(description="Make these the %%qwen defaults", layout=w.Layout(width="auto"),
                                        tooltip="write the first column's settings into %config QwenMagics")
        self.notice = w.HTML()
        """One line under the buttons: what a button did, or why it could not."""
        self.cell = w.HTML()
        """The last "Copy as cell" text, shown to copy by hand where the front end takes no cell from a click."""
        self.run_button.on_click(lambda _: self.run())
        self.add_button.on_click(lambda _: self.add_column())
        self.copy_button.on_click(lambda _: self._copy_clicked())
        self.defaults_button.on_click(lambda _: self.make_defaults())
        self._turn: asyncio.Lock | None = None  # made on the package's loop, by the first run
        self._turns_said = False
        self._future: concurrent.futures.Future | None = None
        self.widget = w.VBox([self.system, self.prompt,
                              w.HBox([self.run_button, self.stop_button, self.add_button, self.copy_button,
                                      self.defaults_button, self.comparison.diff_toggle],
                                     layout=w.Layout(flex_flow="row wrap")),
                              self.notice, self.cell, self.comparison.grid, self.comparison.summary])
        if list_models is not None:
            runner.submit(self._add_listed(list_models))

    # Columns ----------------------------------------------------------------------------------

    @property
    def columns(self) -> list[Column]:
        """The columns, left to right; a column's controls are ``columns[i].model``, ``.temperature``, ..."""
        return self.comparison.columns

    def add_column(self, options: str | None = None) -> Column:
        """A new column: the last column's settings (the configuration's if none), then ``options`` over them."""
        first = not self.columns
        column = self.comparison.add_column()
        if first:
            column.controls.set_from_settings(self.settings, self.start_model)
        if options:
            column.extra = column.controls.set_from_options(options)
        return column

    def remove_column(self, column: Column | int) -> None:
        self.comparison.remove_column(self.columns[column] if isinstance(column, int) else column)

    def link(self, name: str, on: bool = True) -> None:
        """Link a control (``"top_p"``): it moves in every column, from the first column's setting."""
        if name not in CONTROLS:
            raise ValueError(f"No control {name!r}: one of {', '.join(CONTROLS)}")
        self.columns[0].controls.link[name].value = on

    def __getattr__(self, name: str) -> Any:
        """With one column, its controls, output and result are the panel's (``panel.temperature``)."""
        if name in (*CONTROLS, "output", "result", "status") and self.__dict__.get("comparison") is not None:
            column = self.comparison.columns[0]
            return getattr(column, name) if name in ("output", "result", "status") else getattr(column.controls, name)
        raise AttributeError(name)

    # Running ----------------------------------------------------------------------------------

    def run(self) -> concurrent.futures.Future:
        """Run every column at once (a run still going is stopped first); the future's result is the comparison."""
        self.stop()
        self._future = runner.submit(self._run_all())
        return self._future

    def stop(self) -> None:
        self.comparison.stop()

    async def _run_all(self) -> Comparison:
        self._turn = self._turn or asyncio.Lock()
        async with self._turn:
            while any(c.task is not None for c in self.columns):  # the runs just stopped end (their last line) first
                await asyncio.sleep(0.02)
            self._say_turns()
            logger = self._new_logger() if self._new_logger is not None else None
            await self.comparison.run_all(lambda request, result: self._record(logger, request, result))
        return self.comparison

    def _record(self, logger: OnResult | None, request: Request, result: Result) -> None:
        """Into the run log: a Run all's columns under one group, a column run alone under one of its own."""
        logger = logger or (self._new_logger() if self._new_logger is not None else None)
        if logger is not None:
            logger(request, result)

    def _say_turns(self) -> None:
        """Said once: local columns share one model, so they take turns."""
        local = sum(is_local(c.controls.model.value) for c in self.columns)
        if local > 1 and not self._turns_said:
            others = ", the other columns at the same time" if local < len(self.columns) else ""
            self._say(f"The local model answers one column at a time: its {local} columns run one after another"
                      f"{others}", "notice")
            self._turns_said = True

    def _share(self) -> None:
        self.comparison.prompt = self.prompt.value
        self.comparison.shared = ["-s", self.system.value] if self.system.value.strip() else []

    def _say(self, text: str, kind: str = "done") -> None:
        """One line under the buttons: what was done (✔), a notice (⚠), or why not (✖)."""
        mark, colour = {"done": ("✔", "#1a7f37"), "notice": ("⚠", "#a65e00"), "error": ("✖", "#b00020")}[kind]
        self.notice.value = f'<div style="color:{colour}">{mark} {html.escape(text)}</div>'

    # As a cell, as defaults -------------------------------------------------------------------

    def as_compare_cell(self) -> str:
        """The ``%%qwen_compare`` cell that runs these columns with this prompt and system prompt.

        A control that differs between columns becomes a list (``-t 0,1.2``;
        ``default`` where a column sends nothing); the controls ``%%qwen_compare``
        takes once for every column (top_k, max tokens, thinking budget, web
        search) must be the same in every column, else InvalidInput names the one.
        """
        controls = [c.controls for c in self.columns]
        if not controls:
            raise InvalidInput("The panel has no columns", "add one with + column")
        line = ["%%qwen_compare"]
        for name in CONTROLS:
            values = [_cell_value(c, name) for c in controls]
            if name in _AXES:
                if any(v != "default" for v in values):
                    line += [_AXES[name], values[0] if len(set(values)) == 1 else ",".join(values)]
            elif len(set(values)) > 1:
                which = next(i for i, v in enumerate(values) if v != values[0]) + 1
                raise InvalidInput(f"Column {which}'s {name} differs from column 1's, and %%qwen_compare sets "
                                   f"{name} once for every column", f"give every column the same {name} (link it)")
            elif values[0] != "default":
                line += ["--search"] if name == "search" else [NUMBERS[name][0], values[0]]
        if self.system.value.strip():
            line += ["-s", self.system.value]
        if "{" in self.prompt.value:
            line.append("--no-expand")  # the panel sends its prompt as typed
        return shlex.join(line) + "\n" + self.prompt.value

    def copy_as_cell(self) -> None:
        """Make :meth:`as_compare_cell` the next cell, from a cell that calls this (IPython's ``set_next_input``)."""
        cell = self._compare_cell()
        if cell is None:
            return
        if self.shell is None:
            self._show_cell(cell)
            return
        self.shell.set_next_input(cell, replace=False)
        self.cell.value = ""
        self._say("The %%qwen_compare cell for these columns is the next cell")

    def _copy_clicked(self) -> None:
        """The button: :meth:`as_compare_cell` into a new cell under the panel's, or shown where that cannot be."""
        cell = self._compare_cell()
        if cell is None:
            return
        if frontend.insert_below(cell):
            self.cell.value = ""
            self._say("The %%qwen_compare cell for these columns is in a new cell under this one")
        else:
            self._show_cell(cell)

    def _compare_cell(self) -> str | None:
        try:
            return self.as_compare_cell()
        except InvalidInput as err:
            self._say(err.line(), "error")
            return None

    def _show_cell(self, cell: str) -> None:
        self.cell.value = (f'<pre style="user-select:all;border:1px solid #ddd;padding:4px;white-space:pre-wrap">'
                           f"{html.escape(cell)}</pre>")
        self._say("Select the %%qwen_compare cell below to copy it, or run p.copy_as_cell() in a cell (p: this "
                  "panel) to make it the next cell: this front end takes no cell from a button (JupyterLab or "
                  "Notebook 7 with ipylab does)", "notice")

    def make_defaults(self) -> str:
        """Write the first column's settings and the system prompt into ``%config QwenMagics``; says what was set."""
        s, values = self.settings, self.columns[0].controls.values()
        if values["model"]:
            s.model = values["model"]
        for name, value in values.items():
            if name != "model":
                setattr(s, name, value)
        s.system = self.system.value
        set_, unset = [], []
        for name, value in values.items():
            if name == "thinking":
                value = None if value is None else ("on" if value else "off")
            if value is None:
                unset.append(name)
            elif value is False:  # web search off
                continue
            else:
                set_.append(f"{name} {'on' if value is True else f'{value:g}' if isinstance(value, float) else value}")
        if self.system.value.strip():
            set_.append("a system prompt")
        source = " (column 1's)" if len(self.columns) > 1 else ""
        text = (f"%%qwen defaults{source}: {', '.join(set_) or 'nothing set'}"
                + (f"; the model's own default for {', '.join(unset)}" if unset else ""))
        self._say(text)
        return text

    async def _add_listed(self, list_models: Callable[[], Any]) -> None:
        try:
            listed = await list_models()
        except Exception:  # noqa: BLE001 - the known models are still offered
            return
        options = picker_options(listed, self.catalogue)
        for column in self.columns:
            column.controls.model.options = options
            first = column.controls.model.value
            if not self.catalogue and listed and first == self.start_model and first not in listed \
                    and not is_local(first):
                column.controls.model.value = listed[0]

    # Display ----------------------------------------------------------------------------------

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict[str, Any]:
        """The live widget; beside it, for saved notebooks and terminals, the comparison's static copy.

        Shown, the panel connects the front end that lets "Copy as cell" insert a cell.
        """
        frontend.connect()
        bundle = {"text/plain": self._plain()}
        if self.comparison.results:
            bundle.update({"text/markdown": self.comparison.to_markdown(), "text/html": self.comparison.to_html()})
        view = {"version_major": 2, "version_minor": 0, "model_id": self.widget.model_id}
        return {**bundle, "application/vnd.jupyter.widget-view+json": view}

    def _plain(self) -> str:
        if not self.comparison.results:
            return (f"<qwen_magics panel of {len(self.columns)} column(s): its sliders show in a notebook; "
                    "panel.run().result() runs it>")
        from ..display.text import footer_text

        return "\n".join(f"── {c.spec.label} ──\n{c.result.text}\n[{footer_text(c.result)}]\n"
                         for c in self.columns if c.result is not None)


def _cell_value(controls: ColumnControls, name: str) -> str:
    """A control as ``%%qwen_compare`` writes it; ``default`` where the column sends nothing."""
    value, unset = controls.state(name)
    if unset or name in unsupported_controls(controls.model.value):
        return "default"
    if name in SLIDERS:
        return f"{value:g}"
    if name == "search":
        return "on" if value else "default"
    if name == "thinking":
        return value
    return str(value).strip() if value not in ("", 0) and str(value).strip() else "default"
