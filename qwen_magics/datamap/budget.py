"""``--budget``: what a map may spend, checked before anything is sent and before each row starts.

A row's estimate is its input tokens (Qwen's tokenizer, chat template included) at the model's price, plus
its output: ``--max-tokens`` until rows are answered, then the mean output of the rows answered so far.  A
row starts only if what was spent, the estimates of the rows in flight (re-estimated as answers come) and its
own estimate fit in the budget, so what is spent stays within the budget plus what was in flight.
"""

from __future__ import annotations

from typing import Any, Sequence

from ..errors import InvalidInput
from ..models import known
from ..request import Request
from ..tokens.prices import Price


def thinks(request: Request) -> bool:
    """Whether the request's answer is billed as thinking (asked for, or the model's default)."""
    if request.thinking is not None:
        return request.thinking
    model = known(request.model)
    return bool(model and model.thinks_by_default)


class Budget:
    """The money a map (or an evaluation) may spend, and what it has spent and has in flight."""

    def __init__(self, amount: float, requests: Sequence[Request], input_tokens: Sequence[int],
                 noun: str = "rows") -> None:
        """``noun``: what the lines count (a map's rows, an evaluation's requests)."""
        if not amount > 0:
            raise InvalidInput(f"--budget {amount:g} is not an amount", "give an amount above 0, e.g. --budget 0.50")
        unpriced = next((r for r in requests if r.price is None), None)
        if unpriced is not None:
            raise InvalidInput(f"--budget: {unpriced.model} has no known price here, so its cost cannot be bounded",
                               f"set one with %config QwenMagics.prices = {{'{unpriced.model}': [IN, OUT]}} "
                               "(per million tokens), or drop --budget")
        self.amount, self.requests, self.input_tokens, self.noun = amount, requests, input_tokens, noun
        first = requests[0] if requests else None
        self.price: Price | None = first.price if first is not None else None
        self.spent = 0.0
        self._outputs: list[int] = []
        self._in_flight: set[int] = set()

    def money(self, amount: float) -> str:
        return self.price.money(amount) if self.price is not None else f"{amount:.4f}"

    @property
    def output_guess(self) -> int:
        """The output tokens a row is expected to take: the answered rows' mean, else --max-tokens, else 0."""
        if self._outputs:
            return round(sum(self._outputs) / len(self._outputs))
        return (self.requests[0].sampling.max_tokens or 0) if self.requests else 0

    def estimate(self, position: int) -> float | None:
        """The row's estimated cost (None: its price is not known for a prompt this long)."""
        request = self.requests[position]
        if request.price is None:
            return None
        return request.price.cost(self.input_tokens[position], self.output_guess, thinking=thinks(request))

    def total(self, positions: Sequence[int]) -> float | None:
        costs = [self.estimate(p) for p in positions]
        return None if any(c is None for c in costs) else sum(costs)  # type: ignore[misc]

    def plan_line(self, positions: Sequence[int]) -> str:
        """The estimate shown before anything is sent."""
        total = self.total(positions)
        guess = self.requests[0].sampling.max_tokens if self.requests else None
        how = (f"output estimated at --max-tokens {guess}" if guess else
               "input only: output is estimated from the rows' mean once rows are answered")
        shown = "not known" if total is None else self.money(total)
        return (f"Estimated cost of {len(positions):,} {self.noun}: {shown} ({how}; input counted with Qwen's tokenizer); "
                f"budget {self.money(self.amount)}")

    def check(self, positions: Sequence[int]) -> None:
        """Refuse, before anything is sent, a map whose estimate is over the budget."""
        total = self.total(positions)
        if total is None:
            raise InvalidInput("--budget: a row's prompt is longer than the longest priced tier, so its cost is "
                               "not known", "shorten the prompts, or drop --budget")
        if total > self.amount:
            raise InvalidInput(f"The estimated cost of {len(positions):,} {self.noun}, {self.money(total)}, is over the "
                               f"budget of {self.money(self.amount)}: nothing was sent",
                               "raise --budget, or send fewer rows with --limit N")

    def start(self, position: int) -> bool:
        """Take the row if its estimate fits in what is left; it is then in flight until :meth:`settle`."""
        estimate = self.estimate(position)
        if estimate is None:
            return False
        committed = self.spent + sum(self.estimate(p) or 0.0 for p in self._in_flight)
        if committed + estimate > self.amount:
            return False
        self._in_flight.add(position)
        return True

    def settle(self, position: int, result: Any) -> None:
        """The row ended (``result`` None: stopped, nothing billed that is known)."""
        self._in_flight.discard(position)
        if result is None:
            return
        cost = result.cost
        if cost is not None:
            self.spent += cost
        if result.usage is not None and result.complete:
            self._outputs.append(result.usage.output)

    def ran_out(self) -> str:
        """The error of a row not started because the budget ran out."""
        return (f"not run: the budget of {self.money(self.amount)} ran out ({self.money(self.spent)} spent); "
                "raise --budget and run the cell again to send it")

    def end_line(self, not_run: int) -> str:
        return (f"Budget {self.money(self.amount)}: {self.money(self.spent)} spent"
                + (f"; {not_run:,} {self.noun} not run for lack of budget" if not_run else ""))
