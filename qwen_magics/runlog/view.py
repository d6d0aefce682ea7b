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

from .. import events as ev
from ..display.fragments import token_view_html, token_view_text, tool_html
from ..result import Result
from ..display.text import footer_text, tool_run_text

_PROMPT_SHOWN = 80
#: How the log's group kinds read in the table: which comparison, map or evaluation a run belonged to.
_GROUPS = {"comparison": "compare", "dataset": "map", "batch": "map batch job"}


class Table:
    """Rows of text under a title, as plain text and as an HTML table (every cell escaped)."""

    def __init__(self, title: str, heads: list[str], rows: list[list[str]], wide: str | None = None) -> None:
        """``wide``: the head of a column of running text (a prompt), given room in HTML rather than squeezed."""
        self.title, self.heads, self.rows, self.wide = title, heads, rows, wide

    def __repr__(self) -> str:
        rows = [self.heads, *self.rows]
        widths = [max(len(r[i]) for r in rows) for i in range(len(self.heads))]
        return "\n".join([self.title, *("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)])

    def _repr_html_(self) -> str:
        heads = "".join(f"<th>{html.escape(h)}</th>" for h in self.heads)
        styles = ["text-align:left" + (";min-width:24em" if head == self.wide else "") for head in self.heads]
        body = "".join("<tr>" + "".join(f'<td style="{style}">{html.escape(c)}</td>' for style, c in zip(styles, row))
                       + "</tr>" for row in self.rows)
        return (f"<p>{html.escape(self.title)}</p><table><thead><tr>{heads}</tr></thead>"
                f"<tbody>{body}</tbody></table>")


def runs_table(records: list[Any], title: str) -> Table:
    """One row per run: time, model, the prompt's first line, temperature, the group it ran in (a comparison,
    a map, ...), tokens, state, id."""
    rows = [[local_time(r.started), r.model, first_line(r.prompt), temperature(r.parameters), group(r),
             f"{r.input_tokens} / {r.output_tokens}", r.state, r.id[:8]] for r in records]
    return Table(title, ["time", "model", "prompt", "temperature", "group", "tokens in / out", "state", "id"], rows,
                 wide="prompt")


def temperature(parameters: Mapping[str, Any]) -> str:
    """The temperature sent, or ``default`` where the model's own was left to apply."""
    value = parameters.get("temperature")
    return "default" if value is None else f"{value:g}"


def group(record: Any) -> str:
    """``compare 1a2b3c4d``: the kind of group a run belonged to and the start of its id (blank for a cell)."""
    if not record.group_kind:
        return ""
    kind = _GROUPS.get(record.group_kind, record.group_kind)
    return f"{kind} {record.group_id[:8]}" if record.group_id else kind


def cost_table(totals: Iterable[Mapping[str, Any]], title: str) -> Table:
    """One row per model and day: runs, tokens and cost (blank where no price is known)."""
    rows = [[t["day"], t["model"], str(t["runs"]), str(t["input"] or 0), str(t["output"] or 0),
             str(t["reasoning"] or 0), "" if t["cost"] is None else f"{t['cost']:.4f}"] for t in totals]
    return Table(title, ["day (UTC)", "model", "runs", "input", "output", "reasoning", "cost"], rows)


class ShownRun:
    """A logged run displayed as its cell showed it: tool calls, reasoning (collapsed), answer, footer."""

    def __init__(self, record: Any, price: Any = None) -> None:
        self.record = record
        self.result = Result(model=record.model, parameters=dict(record.parameters), text=record.answer,
                             reasoning=record.reasoning, finish_reason=record.finish_reason,
                             request_id=record.request_id, state=record.state, error=record.error,
                             ttft=record.ttft, elapsed=record.elapsed, price=price,
                             usage=None if record.input_tokens is None else ev.Usage(
                                 record.input_tokens, record.output_tokens or 0, record.reasoning_tokens or 0,
                                 record.cached_tokens or 0),
                             logprobs=logprob_entries(record))

    def header(self) -> str:
        r = self.record
        return f"run {r.id} · {local_time(r.started)} · {first_line(r.prompt)}"

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict[str, str]:
        tools = [tool_run_text(SimpleNamespace(**{"ran": False, "error": None, "output": "", "name": "?",
                                                  "arguments": "", **run}))
                 for run in self.record.tool_runs if isinstance(run, dict)]
        shown = self.result._repr_mimebundle_()
        head = f'<div style="color:#888;font-size:0.85em">{html.escape(self.header())}</div>'
        entries = self.result.logprobs
        return {"text/plain": "\n".join([self.header(), *tools, shown["text/plain"], f"[{footer_text(self.result)}]",
                                         *([token_view_text(entries)] if entries else [])]),
                "text/html": head + "".join(tool_html(t) for t in tools) + shown["text/html"]
                + (token_view_html(entries) if entries else "")}


def logprob_entries(record: Any) -> list[ev.TokenLogprob]:
    """The run's token probabilities as the events that made them (empty for a run without --logprobs)."""
    return [ev.TokenLogprob(token, logprob, tuple((alt, lp) for alt, lp in top), entropy)
            for token, logprob, top, entropy in record.logprobs or ()]


def local_time(started: str) -> str:
    """A logged UTC time as the local ``YYYY-MM-DD HH:MM:SS``."""
    try:
        return datetime.fromisoformat(started).astimezone().strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return started


def first_line(text: str, limit: int = _PROMPT_SHOWN) -> str:
    """The first line of ``text``, cut at a word within ``limit`` characters; "…" marks anything left out."""
    stripped = text.strip()
    line = stripped.split("\n", 1)[0]
    if len(line) <= limit:
        return line + ("…" if "\n" in stripped else "")
    cut = line[:limit + 1].rsplit(" ", 1)[0].rstrip(" ,;:")
    return (cut if len(cut) >= limit // 2 else line[:limit]) + "…"  # a word longer than half the room is cut
