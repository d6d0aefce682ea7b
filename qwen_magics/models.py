"""What is known about models before (or without) asking an endpoint: pickers, the table, typo checks.

The table holds Model Studio's text models as its documentation describes
them: the text-generation page (the Qwen3.5 series thinks by default), the
deep-thinking page (qwen-plus and qwen-flash are hybrid: thinking only when
``enable_thinking`` is true; qwen-max does not think) and each model's catalogue
entry for the context window.  Endpoints change faster than a package: what
``/models`` lists is shown next to the table, never replaced by it.  Another
OpenAI-compatible server (``--base-url``) offers what it lists and nothing else,
so its list is shown alone.
"""

from __future__ import annotations

import difflib
import html
from dataclasses import dataclass
from typing import Any, Mapping

from .tokens.prices import READ_ON, price_for


@dataclass(frozen=True)
class KnownModel:
    """One row of the table."""

    name: str
    context: int
    """Context window in tokens."""
    thinking: str
    """``hybrid`` (enable_thinking switches it), ``none``, or ``local`` (the in-process models: none)."""
    thinks_by_default: bool


KNOWN = (
    KnownModel("qwen3.5-plus", 1_000_000, "hybrid", True),
    KnownModel("qwen3.5-flash", 1_000_000, "hybrid", True),
    KnownModel("qwen3-max", 262_144, "hybrid", False),
    KnownModel("qwen-plus", 1_000_000, "hybrid", False),
    KnownModel("qwen-flash", 1_000_000, "hybrid", False),
    KnownModel("qwen-max", 32_768, "none", False),
    KnownModel("qwen3.5-397b-a17b", 262_144, "hybrid", True),
    KnownModel("qwen3.5-122b-a10b", 262_144, "hybrid", True),
    KnownModel("qwen3.5-27b", 262_144, "hybrid", True),
    KnownModel("qwen3.5-35b-a3b", 262_144, "hybrid", True),
)
#: Model Studio models from the text-generation page, most recommended first.
MODEL_STUDIO = tuple(m.name for m in KNOWN)
#: The in-process models (``-m local`` picks the best one installed).
LOCAL = ("local", "local:1.5b", "local:0.5b")


def is_local(model: str) -> bool:
    """Whether ``model`` names the in-process runtime rather than a service."""
    return model == "local" or model.startswith("local:")


#: What the in-process models cannot do, by the option (its destination name) that asks for it, and why.
LOCAL_LACKS = {
    "search": "the local model cannot search the web",
    "thinking": "the local Qwen2.5-Coder models do not reason",
    "thinking_budget": "the local Qwen2.5-Coder models do not reason",
}


def unsupported_controls(model: str) -> tuple[str, ...]:
    """The sampling controls ``model`` does not honour (``search``, ``thinking``, ``thinking_budget``): a surface
    greys them out rather than send what would be ignored."""
    return tuple(LOCAL_LACKS) if is_local(model) else ()


def picker_options(listed: list[str] | None = None, catalogue: bool = True) -> list[str]:
    """Known models (unless ``catalogue`` is false: a server other than Model Studio), then whatever the
    endpoint listed, then the local ones; no duplicates."""
    return list(dict.fromkeys([*(MODEL_STUDIO if catalogue else ()), *(listed or ()), *LOCAL]))


def known(name: str) -> KnownModel | None:
    return next((m for m in KNOWN if m.name == name), None)


def likely_typo(name: str, listed: list[str] | None = None, catalogue: bool = True) -> str | None:
    """The model ``name`` was probably meant to be, when it is neither known nor listed but close to one.

    ``catalogue`` false: only ``listed`` counts (a server that is not Model Studio).
    """
    candidates = [*(MODEL_STUDIO if catalogue else ()), *(listed or ())]
    if is_local(name) or name in candidates:
        return None
    close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.8)
    return close[0] if close else None


class ModelTable:
    """What ``%qwen_models`` shows (and returns): the known table next to what the endpoint offers.

    With ``catalogue`` false (a server that is not Model Studio) the table holds only what that server listed:
    Model Studio's models and the in-process ones are not its to offer.
    """

    def __init__(self, listed: list[str] | None, where: str, local_context: int, note: str | None = None,
                 asked: bool = True, catalogue: bool = True, prices: Mapping[str, Any] | None = None) -> None:
        """``prices``: ``QwenMagics.prices`` (flat, per model), which replace the package's table."""
        self.listed, self.where, self.note, self.asked, self.catalogue = listed, where, note, asked, catalogue
        offered = set(listed or ())
        self.rows: list[dict[str, object]] = []
        if not catalogue:
            self.rows = [{"model": name} for name in sorted(offered)]
            return
        for m in KNOWN:
            self.rows.append({"model": m.name, "offered": m.name in offered if listed is not None else None,
                              "context": m.context, "thinking": m.thinking, "thinks by default": m.thinks_by_default})
        for name in sorted(offered - set(MODEL_STUDIO)):
            self.rows.append({"model": name, "offered": True, "context": None, "thinking": None,
                              "thinks by default": None})
        for name in LOCAL:
            self.rows.append({"model": name, "offered": None, "context": local_context, "thinking": "none",
                              "thinks by default": False})
        for row in self.rows:
            price = price_for(str(row["model"]), where, prices, local=is_local(str(row["model"])))
            thinks = row["thinking"] not in ("none", "local")  # a model that cannot think has no thinking price
            row["price"] = price.describe(thinks) if price is not None else None

    def _cells(self, row: dict[str, object]) -> list[str]:
        if not self.catalogue:
            return [str(row["model"])]
        offered = {True: "yes", False: "no", None: "—"}[row["offered"]]  # type: ignore[index]
        context = f"{row['context']:,}" if row["context"] else "?"
        default = {True: "on", False: "off", None: "?"}[row["thinks by default"]]  # type: ignore[index]
        return [str(row["model"]), offered, context, str(row["thinking"] or "?"), default, str(row["price"] or "—")]

    def _heads(self, html_: bool) -> list[str]:
        if not self.catalogue:
            return ["model"]
        return ["model", "offered here" if html_ else "offered", "context (tokens)" if html_ else "context",
                "thinking", "default thinking", "price"]

    def header(self) -> str:
        if self.listed is not None:
            head = f"{len(self.listed)} model{'' if len(self.listed) == 1 else 's'} listed by {self.where}"
        else:
            head = f"{self.where} did not list its models" if self.asked else f"{self.where} was not asked"
        head += f" ({self.note})" if self.note else ""
        if self.catalogue:
            head += f"; prices: Model Studio's list prices read {READ_ON} (— where not known; QwenMagics.prices sets one)"
        return head

    def __repr__(self) -> str:
        heads = self._heads(html_=False)
        rows = [heads] + [self._cells(r) for r in self.rows]
        widths = [max(len(r[i]) for r in rows) for i in range(len(heads))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
        return "\n".join([self.header(), *lines])

    def _repr_html_(self) -> str:
        heads = "".join(f"<th>{h}</th>" for h in self._heads(html_=True))
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in self._cells(r)) + "</tr>"
                       for r in self.rows)
        return (f"<div><p>{html.escape(self.header())}</p><table><thead><tr>{heads}</tr></thead>"
                f"<tbody>{body}</tbody></table></div>")
