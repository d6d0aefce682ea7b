"""Streaming into a terminal IPython: plain text to stdout as it arrives."""

from __future__ import annotations

import sys
from typing import TextIO

from typing import TYPE_CHECKING

from .. import events as ev
from ..display.text import answer_footer_text, asked_text, footer_text, sources_text, tool_run_text
from .base import Renderer

if TYPE_CHECKING:
    from ..result import Result


class TerminalRenderer(Renderer):
    """Reasoning (dimmed on a tty), then the answer, then one footer line."""

    def __init__(self, out: TextIO | None = None, **kw) -> None:
        super().__init__(**kw)
        self.out = out or sys.stdout
        tty = getattr(self.out, "isatty", lambda: False)()
        self._dim, self._reset = ("\x1b[2m", "\x1b[0m") if tty else ("", "")
        self._mode: str | None = None

    def notice(self, text: str) -> None:
        print(f"⚠ {text}", file=self.out, flush=True)

    def heading(self, text: str) -> None:
        print(f"── {text} ──", file=self.out, flush=True)

    def on_event(self, event: ev.Event, result: Result) -> None:
        if getattr(event, "choice", 0):  # the other answers of -n K are printed whole, after this one
            return
        if isinstance(event, ev.ReasoningDelta):
            if self._mode is None:
                self.out.write(f"{self._dim}Thinking: ")
                self._mode = "reasoning"
            self.out.write(event.text)
        elif isinstance(event, ev.TextDelta):
            if self._mode == "reasoning":
                self.out.write(f"{self._reset}\n\n")
            self._mode = "text"
            self.out.write(event.text)

    def refresh(self, result: Result) -> bool:
        self.out.flush()
        return False

    def tool_run(self, run) -> None:
        print(tool_run_text(run), file=self.out, flush=True)

    def finish(self, result: Result) -> None:
        if result.refused:  # nothing arrived: no footer, only the error (unless the caller shows it)
            if not self.separate_error:
                self.notice(result.error or result.state)
            return
        end = self._reset if self._mode == "reasoning" else ""
        calls = "".join(f"\n{asked_text(call)}" for call in result.tool_calls)
        sources = f"\n{sources_text(result.sources)}" if result.sources else ""
        count = len(result.choices)
        others = "".join((f"\n\n── Answer {i + 1} of {count} ──\n{answer.text}" if i else "")
                         + f"\n{self._dim}[{answer_footer_text(answer, i, count)}]{self._reset}"
                         for i, answer in enumerate(result.choices if count > 1 else ()))
        footer = footer_text(result, error=not self.separate_error)
        self.out.write(f"{end}{calls}{sources}{others}\n{self._dim}[{footer}]{self._reset}\n")
        self.out.flush()
