"""What ``%qwen_log`` shows: tables of runs and costs, and one run as it was shown.

Records are read by attribute (a :class:`~qwen_magics.runlog.Record`), so the
log is not imported here.  Prompts and answers are model and user text:
every cell of a table is escaped, and a shown run renders through the same
escaping markdown and fragments as a live answer.
"""

from __future__ import annotations

import html
from datetime import datetime
from types import SimpleNamespace
from typing import Any, Iterable, Mapping

from . import events as ev
from .fragments import tool_html
from .result import Result
from .text import footer_text, tool_run_text

_PROMPT_SHOWN = 60


class Table:
    """Rows of text under a title, as plain text and as an HTML table (every cell escaped)."""

    def __init__(self, title: str, heads: list[str], rows: list[list[str]]) -> None:
        self.title, self.heads, self.rows = title, heads, rows

    def __repr__(self) -> str:
        rows = [self.heads, *self.rows]
        widths = [max(len(r[i]) for r in rows) for i in range(len(self.heads))]
        return "\n".join([self.title, *("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)])

    def _repr_html_(self) -> str:
        heads = "".join(f"<th>{html.escape(h)}</th>" for h in self.heads)
        body = "".join("<tr>" + "".join(f'<td style="text-align:left">{html.escape(c)}</td>' for c in row) + "</tr>"
                       for row in self.rows)
        return (f"<p>{html.escape(self.title)}</p><table><thead><tr>{heads}</tr></thead>"
                f"<tbody>{body}</tbody></table>")


def runs_table(records: list[Any], title: str) -> Table:
    """One row per run: time, model, the prompt's first line, tokens, state, id."""
    rows = [[local_time(r.started), r.model, first_line(r.prompt), f"{r.input_tokens} / {r.output_tokens}",
             r.state, r.id[:8]] for r in records]
    return Table(title, ["time", "model", "prompt", "tokens in / out", "state", "id"], rows)


def cost_table(totals: Iterable[Mapping[str, Any]], title: str) -> Table:
    """One row per model and day: runs, tokens and cost (blank where no price is known)."""
    rows = [[t["day"], t["model"], str(t["runs"]), str(t["input"] or 0), str(t["output"] or 0),
             str(t["reasoning"] or 0), "" if t["cost"] is None else f"{t['cost']:.4f}"] for t in totals]
    return Table(title, ["day (UTC)", "model", "runs", "input", "output", "reasoning", "cost"], rows)


class ShownRun:
    """A logged run displayed as its cell showed it: tool calls, reasoning (collapsed), answer, footer."""

    def __init__(self, record: Any, price: tuple[float, float] | None = None) -> None:
        self.record = record
        self.result = Result(model=record.model, parameters=dict(record.parameters), text=record.answer,
                             reasoning=record.reasoning, finish_reason=record.finish_reason,
                             request_id=record.request_id, state=record.state, error=record.error,
                             ttft=record.ttft, elapsed=record.elapsed, price=price,
                             usage=None if record.input_tokens is None else ev.Usage(
                                 record.input_tokens, record.output_tokens or 0, record.reasoning_tokens or 0,
                                 record.cached_tokens or 0))

    def header(self) -> str:
        r = self.record
        return f"run {r.id} · {local_time(r.started)} · {first_line(r.prompt)}"

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict[str, str]:
        tools = [tool_run_text(SimpleNamespace(**{"ran": False, "error": None, "output": "", "name": "?",
                                                  "arguments": "", **run}))
                 for run in self.record.tool_runs if isinstance(run, dict)]
        shown = self.result._repr_mimebundle_()
        head = f'<div style="color:#888;font-size:0.85em">{html.escape(self.header())}</div>'
        return {"text/plain": "\n".join([self.header(), *tools, shown["text/plain"], f"[{footer_text(self.result)}]"]),
                "text/html": head + "".join(tool_html(t) for t in tools) + shown["text/html"]}


def local_time(started: str) -> str:
    """A logged UTC time as the local ``YYYY-MM-DD HH:MM:SS``."""
    try:
        return datetime.fromisoformat(started).astimezone().strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return started


def first_line(text: str) -> str:
    line = text.strip().split("\n", 1)[0]
    return line[:_PROMPT_SHOWN] + ("…" if len(line) > _PROMPT_SHOWN or "\n" in text.strip() else "")
