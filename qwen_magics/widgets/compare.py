"""Side-by-side comparison: one prompt, many columns of models and sampling settings.

Every column shows its settings in controls (:mod:`.column`: a model picker
and sliders) and runs them as an ordinary ``%qwen`` option string
(``-m qwen-plus -t 0.7``), so a column re-run after a slider move goes through
the same parser, checks and errors as the magic; a refused re-run keeps the
column's answer and shows why.  The same comparison is the panel's engine
(:mod:`.panel`), which adds and removes columns and links controls across
them.  All columns stream at once on the package's event loop,
bounded by a semaphore, and by a server's own limit where one is set
(``QwenMagics.concurrency``: base URL → requests at once); a column's request
is retried as any is (:func:`~qwen_magics.backends.common.guarded`).  Local-model columns share one model
instance, so they take turns (a lock), while remote columns keep streaming.
A failing column records its error and never stops the others; a column cut
while another column to the same server was streaming says the server may
serve one request at a time (llama.cpp's server cuts the running stream when
the next request comes).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import html
import shlex
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable, Mapping

import ipywidgets as w

from .. import runner
from ..backends import backend_for
from ..errors import QwenMagicsError, StreamCut
from ..models import is_local
from ..render.widget import WidgetRenderer
from ..request import Request
from ..result import Result
from ..display.text import footer_text
from ..display.summary import Summary, diff_html, summarize, summary_html, summary_markdown
from .column import ColumnControls
from ..options.settings import Setting

RequestFactory = Callable[[str, str], Request]
"""Builds the request of a column from its option string and prompt; raises QwenMagicsError on bad options."""
OnResult = Callable[[Request, Result], None]
"""Called with each column's request and finished result (a re-run too); a refused column is not a run."""

_COLUMN_STYLE = dict(border="1px solid #ddd", padding="6px", min_width="0")


@dataclass(frozen=True)
class ColumnSpec:
    """One column: its options, a label, the group of repeats it belongs to, and its prompt variant if any."""

    options: str
    label: str
    group: str
    prompt: str | None = None
    """With ``--variants``: this column's phrasing of the prompt (None: the comparison's prompt)."""


def column_specs(settings: list[Setting], repeats: int, common: list[str]) -> list[ColumnSpec]:
    """Columns for the settings (see :mod:`~qwen_magics.options.settings`): each ``repeats`` times, with the
    options ``common`` to every column after the setting's own."""
    return [ColumnSpec(shlex.join([*setting.tokens, *common]), setting.label + (f" #{k + 1}" if repeats > 1 else ""),
                       setting.label, setting.prompt)
            for setting in settings for k in range(repeats)]


@dataclass
class Column:
    """A column's widgets (its controls, Run, output), the options it last ran with, and its latest result."""

    spec: ColumnSpec
    controls: ColumnControls
    extra: list[str]
    """Options the controls do not show (``--region``, ``--logprobs``, ``-s`` ...): sent as given."""
    header: w.HTML
    status: w.HTML
    """One line above the answer: waiting for a turn, or why a run was refused (the answer stays)."""
    output: w.VBox
    diff: w.HTML
    run_button: w.Button
    remove_button: w.Button
    box: w.VBox
    ran: str | None = None
    """The options the column's label describes (None: not labelled yet, a panel's new column)."""
    result: Result | None = None
    refusal: str | None = None
    """Why the last run was refused (its one line), None once a run starts."""
    task: asyncio.Task | None = field(default=None, repr=False)
    stopping: bool = False
    """The column's run is being stopped on its own (Stop, ×, Run again): it ends with its partial answer."""

    def options(self) -> str:
        """The column's ``%qwen`` options: its controls, then the options they do not show."""
        return shlex.join(self.controls.tokens() + self.extra)


class Comparison:
    """Runs, widgets and results of one comparison; ``rows`` are the runs, in column order."""

    def __init__(self, prompt: str, specs: list[ColumnSpec], make_request: RequestFactory, *,
                 concurrency: int = 4, per_server: Mapping[str, int] | None = None, interval: float = 0.1,
                 on_result: OnResult | None = None, catalogue: bool = True, default_model: str = "",
                 removable: bool = False) -> None:
        """``concurrency``: columns streaming at once; ``per_server``: base URL → its columns at once.

        ``removable``: each column has a × that removes it (the panel's columns).
        """
        self.prompt = prompt
        self.shared: list[str] = []
        """Options sent with every column and not part of its label (the panel's system prompt)."""
        self.make_request = make_request
        self.on_result = on_result
        self.interval = interval
        self.catalogue, self.default_model, self.removable = catalogue, default_model, removable
        self._concurrency = concurrency
        self._per_server = dict(per_server or {})
        self._limits: tuple[asyncio.Semaphore, asyncio.Lock] | None = None
        self._server_limits: dict[str, asyncio.Semaphore] = {}
        self._streaming: dict[str, set[int]] = {}  # base URL → the columns streaming from it now (their ids)
        self._shared: set[int] = set()  # columns that streamed while another column streamed from their server
        self._running = 0
        self._linking = False
        self.linked: set[str] = set()
        """The controls that move in every column (a column's link toggle)."""
        self.grid = w.GridBox(layout=w.Layout(grid_gap="6px", margin="0 0 6px 0"))
        self.columns: list[Column] = []
        for spec in specs:
            self._add(spec, None)
        self.summary = w.HTML()
        self.stop_button = w.Button(description="Stop", icon="stop", tooltip="cancel every running column",
                                    disabled=True)
        self.diff_toggle = w.ToggleButton(description="Show differences", tooltip="word diff against the first column")
        self.stop_button.on_click(lambda _: self.stop())
        self.diff_toggle.observe(lambda _: self._show_summary(), "value")
        self.buttons = w.HBox([self.stop_button, self.diff_toggle])
        self.widget = w.VBox([self.grid, self.summary, self.buttons])

    # Columns -----------------------------------------------------------------------------------

    def _add(self, spec: ColumnSpec, like: Column | None) -> Column:
        controls = ColumnControls(self.catalogue, self.default_model)
        if like is not None:
            controls.copy_from(like.controls)
            extra = list(like.extra)
        else:
            extra = controls.set_from_options(spec.options)
        rerun = w.Button(description="Run", icon="play", tooltip="run this column (alone) with its settings",
                         layout=w.Layout(width="auto"))
        remove = w.Button(description="×", tooltip="remove this column", layout=w.Layout(width="34px"))
        remove.layout.display = None if self.removable else "none"
        header, status, output, diff = w.HTML(f"<b>{html.escape(spec.label)}</b>"), w.HTML(), w.VBox(), w.HTML()
        box = w.VBox([w.HBox([header, remove], layout=w.Layout(justify_content="space-between")), controls.box,
                      rerun, status, output, diff], layout=w.Layout(**_COLUMN_STYLE))
        column = Column(spec, controls, extra, header, status, output, diff, rerun, remove, box)
        column.ran = None if self.removable else column.options()
        rerun.on_click(lambda _: self.start(column))
        remove.on_click(lambda _: self.remove_column(column))
        controls.on_change(lambda name: self._follow_link(column, name))
        for name, toggle in controls.link.items():
            toggle.observe(lambda change, n=name: self._link(column, n, change.new), "value")
            toggle.value = name in self.linked
        self.columns.append(column)
        self._layout()
        return column

    def add_column(self) -> Column:
        """A new column with the last column's settings (a column with the configured ones if none is left)."""
        like = self.columns[-1] if self.columns else None
        label = f"column {len(self.columns) + 1}"
        column = self._add(ColumnSpec(like.options() if like else "", label, label), like)
        column.header.value = f"<b>{html.escape(label)}</b>"
        return column

    def remove_column(self, column: Column) -> None:
        """Remove a column (a running one is stopped first, keeping nothing)."""
        if column not in self.columns:
            return
        runner.background_loop().call_soon_threadsafe(self._stop_column, column)
        self.columns.remove(column)
        self._layout()
        self._show_summary()

    def _layout(self) -> None:
        """Columns in a grid whose rows fill evenly (four columns: 2 + 2, not 3 + 1); three at most in a row."""
        n = max(len(self.columns), 1)
        per_row = -(-n // -(-n // 3))
        self.grid.layout.grid_template_columns = f"repeat({per_row}, minmax(240px, 1fr))"
        self.grid.children = [c.box for c in self.columns]
        for column in self.columns:
            for toggle in column.controls.link.values():
                toggle.layout.display = None if len(self.columns) > 1 else "none"

    def _link(self, column: Column, name: str, on: bool) -> None:
        """A link toggle: the control moves in every column, from this column's setting."""
        if self._linking:
            return
        self._linking = True
        try:
            (self.linked.add if on else self.linked.discard)(name)
            for other in self.columns:
                other.controls.link[name].value = on
                if on and other is not column:
                    other.controls.set_state(name, column.controls.state(name))
        finally:
            self._linking = False

    def _follow_link(self, column: Column, name: str) -> None:
        if name not in self.linked or self._linking:
            return
        self._linking = True
        try:
            for other in self.columns:
                if other is not column:
                    other.controls.set_state(name, column.controls.state(name))
        finally:
            self._linking = False

    # Running ---------------------------------------------------------------------------------

    async def run_all(self, on_result: OnResult | None = None) -> None:
        """Stream every column at once (within the concurrency limit); never raises for a failed or stopped column.

        ``on_result``: where this run's results go (default: the comparison's ``on_result``).
        A column stopped alone (:meth:`stop`, its Run pressed again) keeps its partial answer,
        marked stopped, and the others go on; cancelled itself, every running column stops
        the same way and the cancellation propagates.
        """
        await asyncio.gather(*(self._run(c, on_result) for c in list(self.columns)))

    def start(self, column: Column, on_result: OnResult | None = None) -> concurrent.futures.Future:
        """Run one column in the background (the cell that made the comparison has finished)."""
        return runner.submit(self._run(column, on_result))

    def stop(self) -> None:
        """Cancel every running column; each keeps its partial answer, marked stopped."""
        loop = runner.background_loop()
        for column in self.columns:
            loop.call_soon_threadsafe(self._stop_column, column)

    def _stop_column(self, column: Column) -> None:
        """On the loop: cancel the column's run as a stop of that column alone (its run returns, not raises)."""
        if column.task is not None:
            column.stopping = True
            column.task.cancel()

    async def _run(self, column: Column, on_result: OnResult | None = None) -> Result | None:
        """Run a column; a refused run (bad options) keeps the column's answer and shows why, returning None.

        Changed settings make the column a setting of its own: its header and
        its label in the summary become the options it now runs with.
        """
        running = column.task
        if running is not None and running is not asyncio.current_task():  # Run pressed again: the run before ends
            self._stop_column(column)
            while column.task is running:
                await asyncio.sleep(0.02)
        options = column.options()
        try:
            request = self.make_request(shlex.join(shlex.split(options) + self.shared),
                                        column.spec.prompt or self.prompt)
        except QwenMagicsError as err:
            column.refusal = err.line()
            column.status.value = f'<div style="color:#b00020">✖ {html.escape(column.refusal)}</div>'
            return None
        column.refusal = None
        if options != column.ran:
            label = shlex.join(column.controls.tokens()) or "defaults"
            column.spec = ColumnSpec(options, label, label, column.spec.prompt)
            column.header.value = f"<b>{html.escape(label)}</b>"
            column.ran = options
        column.task, column.stopping = asyncio.current_task(), False
        self._running += 1
        self.stop_button.disabled = False
        column.status.value = _waiting(is_local(request.model))
        result = None
        try:
            semaphore, local_lock = self._get_limits()
            url = request.endpoint.base_url
            async with self._server_limit(url), local_lock if is_local(request.model) else semaphore:
                column.status.value = ""
                renderer = WidgetRenderer(column.output, interval=self.interval)
                result = Result.for_request(request)  # its clock starts when its turn comes
                await runner.drive(self._watched(column, url, backend_for(request.protocol)(request)), renderer,
                                   result)
        except asyncio.CancelledError:
            if not column.stopping:  # the whole comparison was cancelled (Ctrl-C): that goes on up
                raise
        finally:
            column.task = None
            self._running -= 1
            self.stop_button.disabled = self._running == 0  # every column has finished
            if result is None:
                column.status.value = ""  # stopped while waiting: the earlier answer stays
            else:  # finished, failed or stopped: what streamed is kept and recorded
                column.result = result
                record = on_result or self.on_result
                if record is not None:
                    record(request, result)
                self._show_summary()
        return result

    def _get_limits(self) -> tuple[asyncio.Semaphore, asyncio.Lock]:
        if self._limits is None:  # created on the loop that uses them
            self._limits = asyncio.Semaphore(self._concurrency), asyncio.Lock()
        return self._limits

    def _server_limit(self, url: str) -> asyncio.Semaphore | contextlib.nullcontext:
        """The server's own limit (taken before the comparison's, by every column alike, so none waits in a circle)."""
        if url not in self._per_server:
            return contextlib.nullcontext()
        return self._server_limits.setdefault(url, asyncio.Semaphore(self._per_server[url]))

    async def _watched(self, column: Column, url: str, events: AsyncIterator) -> AsyncIterator:
        """A column's events; a cut while another column streamed from the same server says what to do."""
        streaming = self._streaming.setdefault(url, set())
        self._shared.discard(id(column))
        if streaming:
            self._shared |= {*streaming, id(column)}
        streaming.add(id(column))
        try:
            async with contextlib.aclosing(events):
                async for event in events:
                    yield event
        except StreamCut as err:
            if id(column) not in self._shared:
                raise
            raise StreamCut(f"{err.message}; this server may serve one request at a time",
                            f"run with --concurrency 1, or %config QwenMagics.concurrency = {{{url!r}: 1}}") from err
        finally:
            streaming.discard(id(column))

    def _show_summary(self) -> None:
        results = self.results
        if not self.columns:
            self.summary.value = ""
            return
        if len(results) < len(self.columns):
            return
        labels = [c.spec.label for c in self.columns]
        self.summary.value = summary_html(summarize([r.text for r in results], [c.spec.group for c in self.columns]),
                                          labels)
        first = results[0].text
        for column, result in zip(self.columns, results):
            shown = self.diff_toggle.value and column is not self.columns[0]
            column.diff.value = (f'<div style="white-space:pre-wrap;font-size:0.9em"><b>vs. first column:</b> '
                                 f"{diff_html(first, result.text)}</div>" if shown else "")

    # Results as data -------------------------------------------------------------------------

    @property
    def results(self) -> list[Result]:
        return [c.result for c in self.columns if c.result is not None]

    @property
    def rows(self) -> list[dict[str, Any]]:
        """One row per run: its settings, text, reasoning, usage and timings."""
        out = []
        ran = [c for c in self.columns if c.result is not None]
        similar = summarize([c.result.text for c in ran]).to_first if ran else []
        for column, to_first in zip(ran, similar):
            r = column.result
            p = r.parameters
            out.append({"column": column.spec.label, "options": column.options(), "model": r.model,
                        "temperature": p.get("temperature"), "top_p": p.get("top_p"), "top_k": p.get("top_k"),
                        "seed": p.get("seed"), "thinking": p.get("enable_thinking"), "text": r.text,
                        "reasoning": r.reasoning, **_token_columns(r), "ttft": r.ttft, "elapsed": r.elapsed,
                        "tokens_per_second": r.tokens_per_second, "finish_reason": r.finish_reason,
                        "state": r.state, "error": r.error, "cost": r.cost, "similarity": to_first})
        return out

    def to_dataframe(self):
        """The rows as a pandas DataFrame (pandas is imported here, on first use)."""
        try:
            import pandas as pd
        except ImportError:
            raise QwenMagicsError("to_dataframe() needs pandas, which is not installed",
                                  "run `pip install pandas`, or use .rows (a list of dicts)") from None

        return pd.DataFrame(self.rows)

    def to_markdown(self) -> str:
        """A static export that renders without widgets (nbconvert, GitHub)."""
        summary = self._export_summary()
        return self._columns_markdown() + (f"\n{summary_markdown(*summary)}" if summary else "")

    def to_html(self) -> str:
        """The export as HTML: the columns' markdown rendered safely, then the summary's tables and chart."""
        from ..display.markdown import render_markdown

        summary = self._export_summary()
        return render_markdown(self._columns_markdown()) + (summary_html(*summary) if summary else "")

    def _columns_markdown(self) -> str:
        results = self.results
        parts = [f"**Comparison** of {len(results)} runs for the prompt:\n\n> {_quote(self.prompt)}\n"]
        for column, result in ((c, c.result) for c in self.columns if c.result is not None):
            variant = f"> {_quote(column.spec.prompt)}\n\n" if column.spec.prompt else ""
            parts.append(f"### {_escape_md(column.spec.label)}\n\n{variant}{result.text}\n\n*{footer_text(result)}*\n")
        return "\n".join(parts)

    def _export_summary(self) -> tuple[Summary, list[str]] | None:
        """The summary of the finished columns and their labels; None before any has finished."""
        finished = [c for c in self.columns if c.result is not None]
        if not finished:
            return None
        summary = summarize([c.result.text for c in finished], [c.spec.group for c in finished])
        return summary, [c.spec.label for c in finished]

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict[str, Any]:
        return {"text/plain": f"<Comparison of {len(self.columns)} columns>", "text/markdown": self.to_markdown(),
                "text/html": self.to_html()}

    def bundle(self) -> dict[str, Any]:
        """The live widget, with the static export beside it for front ends without widgets."""
        view = {"version_major": 2, "version_minor": 0, "model_id": self.widget.model_id}
        return {**self._repr_mimebundle_(), "application/vnd.jupyter.widget-view+json": view}


_WAITING = '<div style="color:#666">⏳ waiting'


def _waiting(local: bool) -> str:
    """A column's line while it waits for its turn (blank until the first token would look broken)."""
    why = "for the local model: it answers one column at a time" if local else "for a free slot (--concurrency)"
    return f"{_WAITING} {why}…</div>"


def _token_columns(result: Result) -> dict[str, int | None]:
    """A run's token counts; None, not 0, where the server reported none."""
    if result.usage is None:
        return {"input_tokens": None, "output_tokens": None, "reasoning_tokens": None}
    u = result.usage
    return {"input_tokens": u.input, "output_tokens": u.output, "reasoning_tokens": u.reasoning}


def _quote(text: str) -> str:
    return _escape_md(text).replace("\n", "\n> ")


def _escape_md(text: str) -> str:
    return html.escape(text).replace("|", "\\|")
