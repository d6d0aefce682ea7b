"""Settings from option lists: what ``%%qwen_compare`` makes columns of and ``%%qwen_eval`` scores.

``-m a,b -t 0,1`` zips the lists (lists of one value apply to every
setting), ``--grid`` crosses them, and ``--variants`` adds the cell's
phrasings of the prompt as one more axis; a list item ``default`` sends
nothing for that setting.  Each setting is a set of ``%qwen`` option words,
so it is checked and built by the same parser as a cell.  The list options
are declared with the others (:mod:`~qwen_magics.options.declare`).
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidInput, QwenMagicsError
from .declare import COMPARED, REQUEST_OPTIONS

AXES = {d.dest: d.flags[0] for d in REQUEST_OPTIONS if d.dest in COMPARED and d.listed}
"""Each list option: its name (as the settings' columns are named) and the flag that writes it."""
VARIANT = "variant"
_VARIANT_SEPARATOR = re.compile(r"^[ \t]*---[ \t]*$", re.M)


@dataclass(frozen=True)
class Setting:
    """One combination of the lists: each axis' value as written, its option tokens, a label and its phrasing."""

    values: tuple[tuple[str, str], ...]
    """(axis, value) for every axis given, ``variant`` first (its value the phrasing)."""
    tokens: tuple[str, ...]
    label: str
    prompt: str | None = None
    """With ``--variants``: this setting's phrasing of the prompt."""

    def value(self, axis: str) -> str | None:
        return dict(self.values).get(axis)


def settings_of(args: Any, prompt: str) -> list[Setting]:
    """The settings that the parsed list options (``args``) and the cell's ``prompt`` describe."""
    axes = {name: _split(getattr(args, name)) for name in AXES}
    return expand(axes, args.grid, variants_of(prompt) if args.variants else [])


def expand(axes: dict[str, list[str]], grid: bool, variants: list[str] | None = None) -> list[Setting]:
    """Combinations of the axes' values (name -> values): crossed with ``grid``, else zipped.

    Zipped lists must have one length (a list of one value goes with every
    setting); ``variants`` is one more axis, the first, so a grid groups each
    phrasing's settings together.
    """
    axes = {k: v for k, v in axes.items() if v}
    if variants:
        axes = {VARIANT: variants, **axes}
    lengths = {len(v) for v in axes.values() if len(v) > 1}
    if grid:
        combos = list(itertools.product(*axes.values()))
    elif len(lengths) > 1:
        raise QwenMagicsError("The option lists have different lengths",
                              "give each list the same number of values, or pass --grid to cross them")
    else:
        n = lengths.pop() if lengths else 1
        combos = [tuple(v[i] if len(v) > 1 else v[0] for v in axes.values()) for i in range(n)]
    out = []
    for combo in combos:
        chosen = dict(zip(axes, combo))
        phrasing = chosen.pop(VARIANT, None)
        tokens = [tok for name, value in chosen.items() for tok in _tokens(AXES[name], value)]
        label = " ".join(([f"variant {variants.index(phrasing) + 1} “{_first_words(phrasing)}”"] if phrasing else [])
                         + tokens) or "defaults"
        values = ((VARIANT, phrasing),) if phrasing else ()
        out.append(Setting(values + tuple(chosen.items()), tuple(tokens), label, phrasing))
    return out


def variants_of(prompt: str) -> list[str]:
    """``--variants``: the prompts of a cell, separated by lines holding only ``---``."""
    variants = [part.strip() for part in _VARIANT_SEPARATOR.split(prompt)]
    if len(variants) < 2 or not all(variants):
        raise InvalidInput("--variants needs two or more prompts separated by lines holding only ---",
                           "write each phrasing of the prompt, with a line of --- between them")
    return variants


def _split(value: str | None) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()] if value else []


def _tokens(option: str, value: str) -> list[str]:
    if value.lower() == "default":  # this setting sends nothing for the option: %%qwen's default applies
        return []
    if option == "--thinking":
        return ["--thinking" if value.lower() in ("on", "true", "1", "yes") else "--no-thinking"]
    return [option, value]


def _first_words(text: str, words: int = 5) -> str:
    """How a label names a prompt variant: its first few words."""
    first = text.split()
    return " ".join(first[:words]) + ("…" if len(first) > words else "")
