"""What tokens cost: a price type that knows input tiers, thinking output and cached input, and the list
prices shipped with the package.

Model Studio bills per million tokens, in the region's currency: input by the tier the prompt's length falls
in, output at a higher price in thinking mode for some models, cache hits at a fraction of the input price,
and Batch at half price.  ``prices.json`` (next to this module) holds the prices as the pages give them: each
page with its address, title, "Last Updated" date, currency and unit, and each region's models with the page
they come from; :data:`READ_ON` is the day they were read.  A model or region not in it has no known price,
and its cost is ``None`` (never 0); so has a thinking answer where the page gives no thinking price.  A model
is looked up by its exact name: a dated snapshot or a ``-latest`` alias the pages do not list has no price.
``QwenMagics.prices`` sets a flat price per model that replaces the table's.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

SYMBOLS = {"USD": "$", "CNY": "¥"}


@dataclass(frozen=True)
class Tier:
    """Prices per million tokens for prompts of at most ``up_to`` tokens (``None``: any length)."""

    up_to: int | None
    input: float
    output: float
    thinking_output: float | None
    """Output in thinking mode; ``None`` where it is not known (a thinking answer then has no cost)."""
    cached_input: float | None = None
    """A cache hit's price; ``None``: charged as input."""


@dataclass(frozen=True)
class Price:
    """A model's price in one currency: tiers by prompt length, from the shortest."""

    currency: str
    tiers: tuple[Tier, ...]
    source: str = ""
    batch: bool = False
    """Batch prices: half of everything, and no cache discount."""

    @classmethod
    def flat(cls, input_: float, output: float, currency: str = "") -> "Price":
        """One price for any prompt, thinking or not (``QwenMagics.prices``; 0, 0 for the local model)."""
        return cls(currency, (Tier(None, float(input_), float(output), float(output)),), "QwenMagics.prices")

    def to_json(self) -> dict[str, Any]:
        """The price as plain data (kept with a Batch job's marker in the run log)."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> "Price | None":
        return None if not data else cls(data["currency"], tuple(Tier(**t) for t in data["tiers"]),
                                          data.get("source", ""), data.get("batch", False))

    @property
    def free(self) -> bool:
        return all(t.input == 0 and t.output == 0 and not t.thinking_output for t in self.tiers)

    def halved(self) -> "Price":
        """The Batch price: half the input and output prices; cached input is charged as input."""
        half = tuple(Tier(t.up_to, t.input / 2, t.output / 2,
                          None if t.thinking_output is None else t.thinking_output / 2) for t in self.tiers)
        return replace(self, tiers=half, batch=True)

    def tier(self, prompt_tokens: int) -> Tier | None:
        """The tier a prompt of this length is billed in; ``None`` beyond the last known one."""
        return next((t for t in self.tiers if t.up_to is None or prompt_tokens <= t.up_to), None)

    def cost(self, input_: int, output: int, cached: int = 0, thinking: bool = False) -> float | None:
        """What these tokens cost; ``None`` where a price they need is not known."""
        tier = self.tier(input_)
        if tier is None:
            return None
        out = tier.thinking_output if thinking else tier.output
        if out is None:
            return None
        hit = tier.input if self.batch or tier.cached_input is None else tier.cached_input
        cached = min(cached, input_)
        return ((input_ - cached) * tier.input + cached * hit + output * out) / 1_000_000

    def money(self, amount: float) -> str:
        """``$0.0012`` / ``¥0.0012`` (the bare number for a price without a currency)."""
        symbol = SYMBOLS.get(self.currency, f"{self.currency} " if self.currency else "")
        return f"{symbol}{amount:.4f}" if amount < 1 else f"{symbol}{amount:,.2f}"

    def describe(self, thinks: bool = True) -> str:
        """``$0.40 in / $1.20 out per million tokens (thinking out $4.00)``, for the first tier, and how many
        tiers follow.  ``thinks`` false (a model without a thinking mode): no thinking price is named."""
        symbol = SYMBOLS.get(self.currency, f"{self.currency} " if self.currency else "")
        if self.free:
            return "free"
        t = self.tiers[0]
        text = f"{symbol}{t.input:g} in / {symbol}{t.output:g} out per million tokens"
        if thinks and t.thinking_output != t.output:
            text += f", thinking out {symbol}{t.thinking_output:g}" if t.thinking_output is not None else \
                ", thinking out unknown"
        if t.up_to is not None:
            size = f"{t.up_to // 1024:,}K" if t.up_to % 1024 == 0 else f"{t.up_to:,}"
            text += f" (prompts up to {size} tokens; {len(self.tiers) - 1} dearer tier(s) above)" \
                if len(self.tiers) > 1 else f" (prompts up to {size} tokens)"
        return text


def _page_source(page: dict[str, Any]) -> str:
    """``URL (title; last updated DATE)``: where a price was read, to check it against."""
    return f"{page['url']} ({page['title']}; last updated {page['updated'] or 'not shown'})"


def _price(entry: dict[str, Any], pages: dict[str, dict[str, Any]]) -> Price:
    """A table entry, written in its page's unit, as a price per million tokens.  A page that states cache hits
    as a share of the input price (``cache_hit_share``) gives every tier that share."""
    page = pages[entry["page"]]
    scale, share = 1_000_000 / page["per_tokens"], page.get("cache_hit_share")

    def per_million(value: float | None) -> float | None:
        return None if value is None else round(value * scale, 10)

    def tier(t: dict[str, Any]) -> Tier:
        cached = t["cached_input"] if t["cached_input"] is not None or share is None else t["input"] * share
        return Tier(t["up_to"], per_million(t["input"]), per_million(t["output"]), per_million(t["thinking_output"]),
                    per_million(cached))

    return Price(page["currency"], tuple(tier(t) for t in entry["tiers"]), _page_source(page))


def _read_table() -> tuple[str, dict[str, dict[str, Price]]]:
    data = json.loads(Path(__file__).with_name("prices.json").read_text(encoding="utf-8"))
    return data["read_on"], {region: {model: _price(entry, data["pages"]) for model, entry in models.items()}
                             for region, models in data["prices"].items()}


READ_ON, TABLE = _read_table()
"""The day the prices were read; region -> model -> price (regions without prices are absent)."""


def listed_price(model: str, region: str | None) -> Price | None:
    """The table's price of ``model`` in ``region`` (``None``: not known)."""
    return TABLE.get(region or "", {}).get(model)


def price_for(model: str, region: str | None, overrides: dict[str, Any] | None = None,
              local: bool = False) -> Price | None:
    """The price a request to ``model`` in ``region`` is costed at: free for the local model, else
    ``QwenMagics.prices`` (a flat ``[in, out]`` per million tokens), else the table."""
    if local:
        return Price.flat(0.0, 0.0)
    given = (overrides or {}).get(model)
    if given:
        return Price.flat(given[0], given[1])
    return listed_price(model, region)


def thinking_of(result: Any) -> bool:
    """Whether an answer was made in thinking mode (billed at the thinking output price)."""
    return bool(result.usage.reasoning or result.reasoning or result.parameters.get("enable_thinking") is True)


def cost_of(result: Any) -> float | None:
    """What a result's tokens cost at its price (``None`` when its price or its tokens are not known)."""
    if result.cached_from is not None:
        return None
    total = 0.0
    for answer in result.rounds or [result]:
        if answer.price is None or answer.usage is None:
            return None
        u = answer.usage
        cost = answer.price.cost(u.input, u.output, u.cached, thinking_of(answer))
        if cost is None:
            return None
        total += cost
    return total
