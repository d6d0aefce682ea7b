"""The result of one run: a fold of the events a backend produced.

``str(result)`` is the answer text; displayed, it renders as markdown (with the
model's raw HTML escaped).  ``state`` says whether the answer is whole:
``complete``, ``incomplete`` (an error cut it short: see ``error``) or
``stopped`` (the user interrupted it).
"""

from __future__ import annotations

import time
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from . import events as ev
from .display.fragments import footer_html, reasoning_html
from .display.markdown import render_markdown
from .request import Request
from .tokens.prices import Price, cost_of

State = Literal["streaming", "complete", "incomplete", "stopped"]
_PER_CHOICE = (ev.TextDelta, ev.ReasoningDelta, ev.Finished)


@dataclass
class Result:
    """Text, reasoning, usage and timings of one answer."""

    model: str
    parameters: dict[str, Any]
    messages: list[dict[str, Any]] = field(repr=False, default_factory=list)
    text: str = ""
    reasoning: str = ""
    usage: ev.Usage | None = None
    """The token counts the service reported for this request; None where it reported none (some
    OpenAI-compatible servers send none, and a run cut short may end before they come)."""
    finish_reason: str | None = None
    request_id: str | None = None
    state: State = "streaming"
    error: str | None = None
    error_kind: str | None = None
    """The class of the error that cut the answer short (``RateLimited``, ``ContentBlocked``, ...)."""
    started: float = field(default_factory=time.monotonic, repr=False)
    ttft: float | None = None
    elapsed: float | None = None
    price: Price | None = field(default=None, repr=False)
    """What a million tokens cost (:class:`~qwen_magics.tokens.prices.Price`), where known."""
    data: Any = field(default=None, repr=False)
    """The parsed object when the answer was asked for as JSON (``-f json``)."""
    logprobs: list[ev.TokenLogprob] = field(default_factory=list, repr=False)
    """One entry per generated token when asked for with ``--logprobs K``."""
    sources: list[ev.Source] = field(default_factory=list, repr=False)
    """With ``--search``: the web pages the answer drew on, where the protocol names them."""
    _others: dict[int, "Result"] = field(default_factory=dict, repr=False)
    _tool_calls: dict[int, dict[str, str]] = field(default_factory=dict, repr=False)
    rounds: list["Result"] = field(default_factory=list, repr=False)
    """With ``--tools``: every round's result, this one last (the others ended in tool calls)."""
    tool_runs: list[Any] = field(default_factory=list, repr=False)
    """With ``--tools``: every call the model made (:class:`~qwen_magics.tools.ToolRun`), in order."""
    cached_from: str | None = None
    """With ``--cache``: the id of the logged run this answer was replayed from (nothing was sent)."""

    @classmethod
    def for_request(cls, request: Request) -> "Result":
        """An empty result for ``request``, its clock started now."""
        return cls(model=request.model, parameters=request.parameters(), messages=list(request.messages),
                   price=request.price)

    def apply(self, event: ev.Event, at: float | None = None) -> None:
        """Fold one event into the result; ``at`` is when it arrived (monotonic).

        Text, reasoning and the finish of answers after the first (``-n K``) fold into their own results
        (:attr:`choices`); usage and failures belong to the request, so to this one.
        """
        at = time.monotonic() if at is None else at
        if type(event) in _PER_CHOICE and event.choice:
            self.choice(event.choice).apply(dataclasses.replace(event, choice=0), at)
            return
        if isinstance(event, (ev.TextDelta, ev.ReasoningDelta, ev.ToolCallDelta)) and self.ttft is None:
            self.ttft = at - self.started
        if isinstance(event, ev.TextDelta):
            self.text += event.text
        elif isinstance(event, ev.ReasoningDelta):
            self.reasoning += event.text
        elif isinstance(event, ev.ToolCallDelta):
            call = self._tool_calls.setdefault(event.index, {"id": "", "name": "", "arguments": ""})
            call["id"] = event.id or call["id"]
            call["name"] = event.name or call["name"]
            call["arguments"] += event.arguments
        elif isinstance(event, ev.TokenLogprob):
            self.logprobs.append(event)
        elif isinstance(event, ev.Usage):
            self.usage = event
        elif isinstance(event, ev.Started):
            self.request_id = event.request_id or self.request_id
            self.model = event.model or self.model
        elif isinstance(event, ev.Finished):
            self.finish_reason = event.reason
        elif isinstance(event, ev.Source):
            if all(source.url != event.url for source in self.sources):
                self.sources.append(event)
        elif isinstance(event, ev.Failed):
            self.state, self.error, self.error_kind = event.state, event.message, event.kind
            for other in self._others.values():
                other.apply(event, at)

    def close(self, at: float | None = None) -> None:
        """Mark the end of the run: complete unless a failure was recorded."""
        self.elapsed = (time.monotonic() if at is None else at) - self.started
        if self.state == "streaming":
            self.state = "complete"
        for other in self._others.values():
            other.close(at)

    def choice(self, index: int) -> "Result":
        """Answer ``index`` of ``-n K`` (0 is this one), made on first use."""
        if index == 0:
            return self
        if index not in self._others:
            self._others[index] = Result(model=self.model, parameters=self.parameters, messages=self.messages,
                                         started=self.started, price=None)
        return self._others[index]

    @property
    def choices(self) -> list["Result"]:
        """Every answer to the request, in order: this one, then the others of ``-n K``."""
        return [self, *(self._others[i] for i in sorted(self._others))]

    def with_choices(self, others: list["Result"]) -> "Result":
        """This result, with the answers of separate requests made for ``-n K`` as its other choices."""
        self._others = dict(enumerate(others, start=1))
        return self

    @property
    def tool_calls(self) -> list[dict[str, str]]:
        """The calls this answer asked for: ``{"id", "name", "arguments"}`` (arguments as JSON text)."""
        return [self._tool_calls[i] for i in sorted(self._tool_calls)]

    def with_rounds(self, rounds: list["Result"], runs: list[Any]) -> "Result":
        """This (last) round, carrying all rounds and the tool runs between them."""
        if len(rounds) > 1:
            self.rounds, self.tool_runs = rounds, runs
        return self

    @property
    def total_usage(self) -> ev.Usage | None:
        """Tokens of every round together (``usage`` is this round's); None where no round's were reported."""
        if not self.rounds:
            return self.usage
        counted = [r.usage for r in self.rounds if r.usage is not None]
        if not counted:
            return None
        return ev.Usage(**{name: sum(getattr(u, name) for u in counted)
                           for name in ("input", "output", "reasoning", "cached")})

    @property
    def tokens_per_second(self) -> float | None:
        """Output tokens over the generation time (from first token to the end); None for an answer that
        arrived whole (``--no-stream``), which has no generation time of its own."""
        if self.usage is None or not self.usage.output or self.elapsed is None or self.ttft is None:
            return None
        if self.parameters.get("stream") is False:
            return None
        span = self.elapsed - self.ttft
        return self.usage.output / span if span > 0 else None

    @property
    def counted_output(self) -> int:
        """The answer's and its reasoning's tokens counted with Qwen's tokenizer (for servers that report none)."""
        from .tokens.qwen import count_many

        return sum(count_many([self.text, self.reasoning]))

    @property
    def cost(self) -> float | None:
        """What the tokens of every round cost, in the price's currency, where the model's price and the tokens
        are known (``None`` otherwise, never 0 for an unknown price); thinking answers at the thinking price."""
        return cost_of(self)

    @property
    def cost_text(self) -> str | None:
        """The cost with its currency (``$0.0012``), where known."""
        cost = self.cost
        return None if cost is None or self.price is None else self.price.money(cost)

    @property
    def complete(self) -> bool:
        return self.state == "complete"

    @property
    def refused(self) -> bool:
        """The run failed or was stopped before the model produced anything: no text, reasoning, tool call or
        token count.  It has nothing for a footer to describe; its error is all there is to show."""
        return self.state in ("incomplete", "stopped") and not (
            self.text or self.reasoning or self._tool_calls or self.logprobs or self.usage is not None or self._others)

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        head = self.text[:60] + ("…" if len(self.text) > 60 else "")
        u = self.usage
        tokens = f"{u.input}/{u.output}/{u.reasoning}" if u is not None else "not-reported"
        return f"<Result {self.model} {self.state} finish={self.finish_reason} tokens={tokens} text={head!r}>"

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict[str, str]:
        html = "".join([reasoning_html(self.reasoning, open_=False) if self.reasoning else "",
                        render_markdown(self.text), footer_html(self)])
        return {"text/plain": self.text, "text/markdown": self.text, "text/html": html}
