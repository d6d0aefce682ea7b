"""Side-by-side comparison: one prompt, many columns of models and sampling settings.

Every column is an ordinary ``%qwen`` option string (``-m qwen-plus -t 0.7``),
so a column can be edited and re-run alone with the same parser, checks and
errors as the magic.  All columns stream at once on the package's event loop,
bounded by a semaphore, and by a server's own limit where one is set
(``QwenMagics.concurrency``: base URL → requests at once); the SDK's retries
handle each column's rate limits.  Local-model columns share one model
instance, so they take turns (a lock), while remote columns keep streaming.
A failing column records its error and never stops the others; a column cut
while another column to the same server was streaming says the server may
serve one request at a time (llama.cpp's server cuts the running stream when
the next request comes).
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import itertools
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
from ..text import footer_text
from ..summary import Summary, diff_html, summarize, summary_html, summary_markdown

RequestFactory = Callable[[str, str], Request]
"""Builds the request of a column from its option string and prompt; raises QwenMagicsError on bad options."""
OnResult = Callable[[Request, Result], None]
"""Called with each column's request and finished result (a re-run too); a refused column is not a run."""

_COLUMN_STYLE = dict(border="1px solid #ddd", padding="6px", margin="0 6px 6px 0", min_width="240px", flex="1 1 0%")


@dataclass(frozen=True)
class ColumnSpec:
    """One column: its options, a label, the group of repeats it belongs to, and its prompt variant if any."""

    options: str
    label: str
    group: str
    prompt: str | None = None
    """With ``--variants``: this column's phrasing of the prompt (None: the comparison's prompt)."""


def column_specs(axes: dict[str, list[str]], grid: bool, repeats: int, common: list[str],
                 variants: list[str] | None = None) -> list[ColumnSpec]:
    """Columns from option lists: crossed with ``grid``, else zipped (one list, or lists of equal length).

    ``axes`` maps an option (``-m``, ``-t``, ``--top-p``, ...) to its values; ``variants``, the prompt
    phrasings of ``--variants``, are one more axis.
    """
    axes = {k: v for k, v in axes.items() if v}
    if variants:
        axes = {_VARIANT: variants, **axes}  # the first axis: a grid groups each phrasing's columns together
    lengths = {len(v) for v in axes.values() if len(v) > 1}
    if grid:
        combos = list(itertools.product(*axes.values()))
    elif len(lengths) > 1:
        raise QwenMagicsError("The option lists have different lengths",
                              "give each list the same number of values, or pass --grid to cross them")
    else:
        n = lengths.pop() if lengths else 1
        combos = [tuple(v[i] if len(v) > 1 else v[0] for v in axes.values()) for i in range(n)]
    specs = []
    for combo in combos:
        chosen = dict(zip(axes, combo))
        prompt = chosen.pop(_VARIANT, None)
        tokens = [tok for option, value in chosen.items() for tok in _tokens(option, value)]
        label = " ".join(([f"variant {variants.index(prompt) + 1} “{_first_words(prompt)}”"] if prompt else [])
                         + tokens) or "defaults"
        for k in range(repeats):
            suffix = f" #{k + 1}" if repeats > 1 else ""
            specs.append(ColumnSpec(shlex.join(tokens + common), label + suffix, label, prompt))
    return specs


def _first_words(text: str, words: int = 5) -> str:
    """How the summary names a prompt variant: its first few words."""
    first = text.split()
    return " ".join(first[:words]) + ("…" if len(first) > words else "")


_VARIANT = "variant"


def _tokens(option: str, value: str) -> list[str]:
    if option == "--thinking":
        return ["--thinking" if value.lower() in ("on", "true", "1", "yes") else "--no-thinking"]
    return [option, value]


@dataclass
class Column:
    """A column's widgets, its current options and its latest result."""

    spec: ColumnSpec
    header: w.HTML
    options: w.Text
    output: w.VBox
    diff: w.HTML
    box: w.VBox
    result: Result | None = None
    task: asyncio.Task | None = field(default=None, repr=False)


class Comparison:
    """Runs, widgets and results of one comparison; ``rows`` are the runs, in column order."""

    def __init__(self, prompt: str, specs: list[ColumnSpec], make_request: RequestFactory, *,
                 concurrency: int = 4, per_server: Mapping[str, int] | None = None, interval: float = 0.1,
                 on_result: OnResult | None = None) -> None:
        """``concurrency``: columns streaming at once; ``per_server``: base URL → its columns at once."""
        self.prompt = prompt
        self.make_request = make_request
        self.on_result = on_result
        self.interval = interval
        self._concurrency = concurrency
        self._per_server = dict(per_server or {})
        self._limits: tuple[asyncio.Semaphore, asyncio.Lock] | None = None
        self._server_limits: dict[str, asyncio.Semaphore] = {}
        self._streaming: dict[str, set[int]] = {}  # base URL → the columns streaming from it now (their ids)
        self._shared: set[int] = set()  # columns that streamed while another column streamed from their server
        self.columns = [self._column(spec) for spec in specs]
        self.summary = w.HTML()
        self.stop_button = w.Button(description="Stop", icon="stop", tooltip="cancel every running column")
        self.diff_toggle = w.ToggleButton(description="Show differences", tooltip="word diff against the first column")
        self.stop_button.on_click(lambda _: self.stop())
        self.diff_toggle.observe(lambda _: self._show_summary(), "value")
        self.widget = w.VBox([w.HBox([c.box for c in self.columns], layout=w.Layout(flex_flow="row wrap")),
                              self.summary, w.HBox([self.stop_button, self.diff_toggle])])

    def _column(self, spec: ColumnSpec) -> Column:
        options = w.Text(value=spec.options, layout=w.Layout(width="100%"), tooltip="this column's %qwen options")
        rerun = w.Button(description="Re-run", icon="play", tooltip="run this column again with the options above")
        output, diff = w.VBox(), w.HTML()
        header = w.HTML(f"<b>{html.escape(spec.label)}</b>")
        box = w.VBox([header, w.HBox([options, rerun]), output, diff], layout=w.Layout(**_COLUMN_STYLE))
        column = Column(spec, header, options, output, diff, box)
        rerun.on_click(lambda _: self.start(column))
        return column

    # Running ---------------------------------------------------------------------------------

    async def run_all(self) -> None:
        """Stream every column at once (within the concurrency limit); never raises for a failed column.

        Cancelled, every running column stops, keeps its partial answer (marked stopped), and the
        cancellation propagates."""
        await asyncio.gather(*(self._run(c) for c in self.columns))

    def start(self, column: Column) -> None:
        """Re-run one column in the background (the cell that made the comparison has finished).

        Edited options make the column a setting of its own: its header and its
        label in the summary become the options it now runs with.
        """
        options = column.options.value.strip()
        if options != column.spec.options:
            label = options or "defaults"
            column.spec = ColumnSpec(options, label, label, column.spec.prompt)
            column.header.value = f"<b>{html.escape(label)}</b>"
        runner.submit(self._run(column))

    def stop(self) -> None:
        """Cancel every running column; each keeps its partial answer, marked stopped."""
        loop = runner.background_loop()
        for column in self.columns:
            if column.task is not None:
                loop.call_soon_threadsafe(column.task.cancel)

    async def _run(self, column: Column) -> Result:
        column.task = asyncio.current_task()
        semaphore, local_lock = self._get_limits()
        renderer = WidgetRenderer(column.output, interval=self.interval)
        try:
            request = self.make_request(column.options.value, column.spec.prompt or self.prompt)
        except QwenMagicsError as err:
            result = runner.refused(renderer, err, model="?")
        else:
            url = request.endpoint.base_url
            async with self._server_limit(url), local_lock if is_local(request.model) else semaphore:
                result = Result.for_request(request)  # its clock starts when its turn comes
                try:
                    await runner.drive(self._watched(column, url, backend_for(request.protocol)(request)), renderer,
                                       result)
                finally:  # stopped too: its partial answer is logged and shown in the summary
                    if self.on_result is not None:
                        self.on_result(request, result)
                    self._settle(column, result)
                return result
        self._settle(column, result)
        return result

    def _settle(self, column: Column, result: Result) -> None:
        column.result, column.task = result, None
        self._show_summary()

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
        for column in self.columns:
            r = column.result
            if r is None:
                continue
            p = r.parameters
            out.append({"column": column.spec.label, "options": column.options.value, "model": r.model,
                        "temperature": p.get("temperature"), "top_p": p.get("top_p"), "top_k": p.get("top_k"),
                        "seed": p.get("seed"), "thinking": p.get("enable_thinking"), "text": r.text,
                        "reasoning": r.reasoning, **_token_columns(r), "ttft": r.ttft, "elapsed": r.elapsed,
                        "tokens_per_second": r.tokens_per_second, "finish_reason": r.finish_reason,
                        "state": r.state, "error": r.error, "cost": r.cost})
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
        from ..markdown import render_markdown

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
