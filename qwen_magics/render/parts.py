"""The pieces every rich surface shares: a chain of parts, a thinking slot, a footer.

Resending the whole answer at every refresh would cost O(n²) bytes: about 95×
its size for a 16 kB answer streamed over 4 s.  Here each part is sent about
once: the answer is a chain of parts (displays in a cell, HTML widgets in a
column), and a part is updated only while it holds the open tail.  When a
markdown block is complete (a later block has started) it is frozen into the
current part and a new part opens for the tail, shown at the next refresh:
a refresh sends one message.  A block that grows past ``tail_limit`` (a long
code block, a long paragraph) is cut at a line, so no single part is resent
without bound.

The thinking section is one part that shows the latest ``thinking_window``
characters while reasoning streams, and becomes a collapsed ``<details>``
holding the whole reasoning (sent once) when the answer starts.

All HTML is built from escaped text (see :mod:`qwen_magics.display.markdown`); every
bundle carries ``text/plain`` too, for nbconvert, terminals and GitHub.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Callable

from .. import events as ev
from ..display.fragments import (
    footer_line_html,
    heading_bundle,
    notice_bundle,
    reasoning_html,
    sources_html,
    token_view_html,
    token_view_text,
    tool_html,
)
from ..display.markdown import block_starts, render_markdown, render_plain
from ..display.text import answer_footer_text, asked_text, footer_text, sources_text, tool_run_text
from .base import Renderer

if TYPE_CHECKING:
    from ..result import Result

Bundle = dict[str, str]
NewPart = Callable[[Bundle], Callable[[Bundle], None]]
"""Shows a new part and returns the function that updates it."""

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})[^\n]*\n")


def split_blocks(source: str, limit: int, markdown: bool = True) -> tuple[str, str]:
    """Split ``source`` into (frozen, tail): frozen text will not change how it renders.

    For a fenced code block cut at ``limit``, the frozen part gets a closing
    fence and the tail re-opens it, so both halves render as code.
    """
    frozen = ""
    if markdown:
        starts = block_starts(source)
        if len(starts) >= 2:
            lines = source.splitlines(keepends=True)
            frozen, source = "".join(lines[: starts[-1]]), "".join(lines[starts[-1]:])
    if len(source) <= limit:
        return frozen, source
    fence = _FENCE.match(source) if markdown else None
    cut = source.rfind("\n") + 1
    if fence and cut > fence.end():
        marker = fence.group(1)
        return frozen + source[:cut] + marker + "\n", fence.group(0) + source[cut:]
    if cut <= 0 and not fence:
        cut = source.rfind(" ") + 1
    if cut <= 0:
        return frozen, source
    return frozen + source[:cut], source[cut:]


class Slot:
    """One part, shown on first use and updated afterwards."""

    def __init__(self, new_part: NewPart) -> None:
        self.new_part = new_part
        self._update: Callable[[Bundle], None] | None = None

    def put(self, bundle: Bundle) -> None:
        if self._update is None:
            self._update = self.new_part(bundle)
        else:
            self._update(bundle)


class Chain:
    """The answer as a chain of parts: frozen ones never change, the last one is the tail.

    ``render(text, colour)`` makes a part's HTML: the open tail is rendered
    without colouring its code (it is rendered again at every refresh), a
    frozen part and the final tail with it (once).
    """

    def __init__(self, new_part: NewPart, render: Callable[[str, bool], str], markdown: bool, limit: int) -> None:
        self.new_part, self.render, self.markdown, self.limit = new_part, render, markdown, limit
        self.source = ""
        self.tail = Slot(new_part)
        self.sent: Bundle | None = None

    def refresh(self, final: bool = False) -> bool:
        """Send one message: a finished block, else the tail.  True when the tail is left for the next refresh."""
        frozen, tail = ("", self.source) if final else split_blocks(self.source, self.limit, self.markdown)
        self.source = tail
        if frozen:
            self.tail.put(self._bundle(frozen, colour=True))
            self.tail, self.sent = Slot(self.new_part), None
            return bool(tail)
        if tail and (self.sent is None or tail != self.sent["text/plain"] or final):
            bundle = self._bundle(tail, colour=final)
            if bundle != self.sent:
                self.tail.put(bundle)
                self.sent = bundle
        return False

    def _bundle(self, source: str, colour: bool) -> Bundle:
        return {"text/plain": source, "text/html": self.render(source, colour)}


class PartsRenderer(Renderer):
    """Thinking slot, answer chain, token view and footer, on any surface that can show parts."""

    def __init__(self, new_part: NewPart, *, fmt: str = "markdown", tail_limit: int = 1000,
                 thinking_window: int = 1500, **kw) -> None:
        super().__init__(**kw)
        self.new_part = new_part
        markdown = fmt not in ("text", "json")  # text and JSON are shown exactly as written
        self.answer = Chain(new_part, render_markdown if markdown else lambda text, _colour: render_plain(text),
                            markdown, tail_limit)
        self.thinking_window = thinking_window
        self._thinking = Slot(new_part)
        self._thinking_sent = 0
        self._thinking_open = False  # reasoning has arrived and is shown live
        self._thinking_closed = False

    def notice(self, text: str) -> None:
        self.new_part(notice_bundle(text))

    def heading(self, text: str) -> None:
        self.new_part(heading_bundle(text))

    def on_event(self, event: ev.Event, result: Result) -> None:
        if getattr(event, "choice", 0):  # the other answers of -n K are shown whole, after this one
            return
        if isinstance(event, ev.TextDelta):
            if self._thinking_open:
                self._close_thinking(result)
            self.answer.source += event.text
        elif isinstance(event, ev.ReasoningDelta) and event.text and not self._thinking_closed:
            self._thinking_open = True

    def refresh(self, result: Result) -> bool:
        if self._thinking_open and len(result.reasoning) != self._thinking_sent:
            text = result.reasoning
            window = text if len(text) <= self.thinking_window else "…" + text[-self.thinking_window:]
            self._thinking.put({"text/plain": f"Thinking… {window}",
                                "text/html": reasoning_html(window, open_=True, title="Thinking…")})
            self._thinking_sent = len(text)
        return self.answer.refresh()

    def tool_run(self, run) -> None:
        text = tool_run_text(run)
        self.new_part({"text/plain": text, "text/html": tool_html(text)})

    def finish(self, result: Result) -> None:
        if result.refused:  # nothing arrived: no footer, only the error (unless the caller shows it)
            if not self.separate_error:
                self.notice(result.error or result.state)
            return
        if self._thinking_open:
            self._close_thinking(result, open_=not result.text)
        self.answer.refresh(final=True)
        for call in result.tool_calls:
            text = asked_text(call)
            self.new_part({"text/plain": text, "text/html": tool_html(text)})
        if result.logprobs:
            self.new_part({"text/plain": token_view_text(result.logprobs), "text/html": token_view_html(result.logprobs)})
        if result.sources:
            self.new_part({"text/plain": sources_text(result.sources), "text/html": sources_html(result.sources)})
        choices = result.choices
        for index, answer in enumerate(choices if len(choices) > 1 else ()):
            if index:
                self.new_part(heading_bundle(f"Answer {index + 1} of {len(choices)}"))
                if answer.reasoning:
                    self.new_part({"text/plain": f"Thinking: {answer.reasoning}",
                                   "text/html": reasoning_html(answer.reasoning, open_=False)})
                self.new_part({"text/plain": answer.text, "text/html": self.answer.render(answer.text, True)})
            line = answer_footer_text(answer, index, len(choices))
            self.new_part({"text/plain": line, "text/html": footer_line_html(line)})
        footer = footer_text(result, error=not self.separate_error)
        self.new_part({"text/plain": footer, "text/html": footer_line_html(footer)})

    def _close_thinking(self, result: Result, open_: bool = False) -> None:
        """Replace the live window by the whole reasoning, collapsed: sent once."""
        title = f"Thinking ({len(result.reasoning):,} characters)"
        self._thinking.put({"text/plain": f"Thinking: {result.reasoning}",
                            "text/html": reasoning_html(result.reasoning, open_=open_, title=title)})
        self._thinking_open, self._thinking_closed = False, True
