"""Settings from option lists: what ``%%qwen_compare`` makes columns of and ``%%qwen_eval`` scores.

``-m a,b -t 0,1`` zips the lists (lists of one value apply to every
setting), ``--grid`` crosses them, and ``--variants`` adds the cell's
phrasings of the prompt as one more axis.  Each setting is a set of ``%qwen``
option tokens, so it is checked and built by the same parser as a cell.
Imports nothing heavy: the magics that declare these options load it.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from typing import Any, Callable

from IPython.core.magic_arguments import argument

from ..errors import InvalidInput, QwenMagicsError

AXES = {"model": "-m", "temperature": "-t", "top_p": "--top-p", "seed": "--seed", "thinking": "--thinking",
        "presence_penalty": "--presence-penalty", "repetition_penalty": "--repetition-penalty"}
"""Each list option: its name (as the settings' columns are named) and its ``%qwen`` flag."""
VARIANT = "variant"
_VARIANT_SEPARATOR = re.compile(r"^[ \t]*---[ \t]*$", re.M)

_ARGUMENTS = [
    argument("-m", "--model", help="models, comma-separated: -m qwen3.5-plus,qwen-flash,local"),
    argument("-t", "--temperature", help="temperatures, comma-separated: -t 0,0.7,1.3"),
    argument("--top-p", help="top_p values, comma-separated: --top-p 0.1,0.5,1"),
    argument("--seed", help="seeds, comma-separated: --seed 1,2,3"),
    argument("--thinking", nargs="?", const="on", help="on, off, or on,off (compare reasoning against none)"),
    argument("--no-thinking", dest="thinking", action="store_const", const="off", help="no reasoning, every setting"),
    argument("--presence-penalty", help="presence penalties, comma-separated: --presence-penalty 0,1.5"),
    argument("--repetition-penalty", help="repetition penalties, comma-separated: --repetition-penalty 1,1.3"),
    argument("--variants", action="store_true",
             help="the cell holds several prompts, separated by lines of only ---: each is a setting (an axis)"),
    argument("--grid", action="store_true", help="cross the lists (e.g. a temperature x top_p grid) instead of "
             "zipping them"),
]


def setting_arguments(func: Callable[..., Any]) -> Callable[..., Any]:
    """Declare the list options on a magic (under ``@magic_arguments()``), in the order written above."""
    for declared in reversed(_ARGUMENTS):
        func = declared(func)
    return func


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
    if option == "--thinking":
        return ["--thinking" if value.lower() in ("on", "true", "1", "yes") else "--no-thinking"]
    return [option, value]


def _first_words(text: str, words: int = 5) -> str:
    """How a label names a prompt variant: its first few words."""
    first = text.split()
    return " ".join(first[:words]) + ("…" if len(first) > words else "")
