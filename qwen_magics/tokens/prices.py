"""What tokens cost: a price type that knows input tiers, thinking output and cached input, and the list
prices shipped with the package.

Model Studio bills per million tokens, in the region's currency: input by the tier the prompt's length falls
in, output at a higher price in thinking mode for some models, cache hits at a fraction of the input price,
and Batch at half price.  The table below holds the prices read from the pages named in each entry, on the
date in :data:`READ_ON`; a model or region not in it has no known price, and its cost is ``None`` (never 0).
``QwenMagics.prices`` sets a flat price per model that replaces the table's.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

READ_ON = "2026-12-06"
"""The day the prices below were read."""

BEIJING_PAGE = "https://help.aliyun.com/en/document_detail/3023262.html (AI PaaS billing rules, CNY per 1k tokens)"
INTERNATIONAL_PAGE = ("https://www.alibabacloud.com/help/en/model-studio/billing-for-model-studio "
                      "(flagship models' minimum prices; cache hits at 40% of input; Batch at 50%)")
CACHE_SHARE = 0.4
"""The international page: a cache hit costs 40% of the input price."""
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

    def describe(self) -> str:
        """``$0.40 in / $1.20 out per million tokens (thinking out $4.00)``, for the first tier, and how many
        tiers follow."""
        symbol = SYMBOLS.get(self.currency, f"{self.currency} " if self.currency else "")
        if self.free:
            return "free"
        t = self.tiers[0]
        text = f"{symbol}{t.input:g} in / {symbol}{t.output:g} out per million tokens"
        if t.thinking_output != t.output:
            text += f", thinking out {symbol}{t.thinking_output:g}" if t.thinking_output is not None else \
                ", thinking out unknown"
        if t.up_to is not None:
            text += f" (prompts up to {t.up_to // 1024:,}K tokens; {len(self.tiers) - 1} dearer tier(s) above)" \
                if len(self.tiers) > 1 else f" (prompts up to {t.up_to // 1024:,}K tokens)"
        return text


def _cny_per_1k(*tiers: tuple[int | None, float, float, float | None, float | None]) -> Price:
    """A Beijing entry, written as the page gives it (CNY per 1,000 tokens)."""
    return Price("CNY", tuple(Tier(up, i * 1000, o * 1000, None if t is None else t * 1000,
                                   None if c is None else c * 1000) for up, i, o, t, c in tiers), BEIJING_PAGE)


def _usd_per_million(up_to: int, input_: float, output: float) -> Price:
    """An international entry: the page gives the first tier's price (non-thinking output) and the context."""
    return Price("USD", (Tier(up_to, input_, output, None, input_ * CACHE_SHARE),), INTERNATIONAL_PAGE)


_K = 1024
TABLE: dict[str, dict[str, Price]] = {
    "beijing": {
        # up to, input, output, thinking output, cache hit (CNY per 1k tokens)
        "qwen-flash": _cny_per_1k((128 * _K, 0.0002, 0.0015, 0.0015, 0.0001), (256 * _K, 0.0006, 0.006, 0.006, 0.0002),
                                  (1024 * _K, 0.0012, 0.012, 0.012, 0.0003)),
        "qwen-plus": _cny_per_1k((128 * _K, 0.0008, 0.002, 0.008, 0.0002), (256 * _K, 0.0024, 0.02, 0.024, 0.0005),
                                 (1024 * _K, 0.0048, 0.048, 0.064, 0.001)),
        "qwen3-235b-a22b": _cny_per_1k((None, 0.002, 0.008, None, None)),
        "qwen3-32b": _cny_per_1k((None, 0.002, 0.008, 0.02, None)),
        "qwen3-30b-a3b-instruct-2507": _cny_per_1k((None, 0.0008, 0.003, None, None)),
        "qwen3-30b-a3b-thinking-2507": _cny_per_1k((None, 0.0008, 0.0075, 0.0075, None)),
    },
    "singapore": {
        "qwen-max": _usd_per_million(32_768, 1.6, 6.4),
        "qwen-plus": _usd_per_million(131_072, 0.4, 1.2),
    },
}
"""Region -> model -> price.  The other regions (us, hongkong, frankfurt) have no prices here yet."""


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
