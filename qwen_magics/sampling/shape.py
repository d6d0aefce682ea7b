"""The sampler's stages over a whole next-token distribution, in numpy, in llama.cpp's order.

llama-cpp-python 0.3.36 builds its sampler chain in ``Llama._init_sampler``
(llama_cpp/llama.py) as: penalties (repeat, frequency, presence over the last
``last_n_tokens_size`` = 64 tokens) -> [grammar] -> at temperature 0 greedy,
otherwise top_k -> typical -> top_p -> min_p -> temperature -> dist.  The
stages below follow llama.cpp's implementations (src/llama-sampler.cpp):

- penalties: a repeated token's logit is divided by ``repetition`` when
  positive and multiplied by it when not, then lowered by
  ``count * frequency + presence``;
- top_k keeps the k highest logits;
- typical keeps the tokens whose surprise is closest to the entropy, in that
  order, until their probability exceeds p;
- top_p keeps the smallest most-likely set whose probability reaches p;
- min_p keeps the tokens at least ``min_p`` times as likely as the top one;
- temperature divides the remaining logits, and the draw is from their softmax.

Each truncating stage recomputes the softmax over the candidates left at
temperature 1 (temperature comes last), exactly as llama.cpp does.  What a
stage removed is reported as a share of the distribution entering the chain
(after penalties), so the shares of the stages add up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from functools import cached_property
from difflib import get_close_matches
from typing import Any, Sequence

import numpy as np

from ..errors import InvalidInput

PENALTY_WINDOW = 64
"""Tokens the penalties look back over: llama-cpp-python's ``last_n_tokens_size`` default."""


@dataclass(frozen=True)
class Settings:
    """The sampler's settings; a stage is off at its neutral value (None is accepted as "off")."""

    temperature: float = 1.0
    top_k: int = 0
    typical_p: float = 1.0
    top_p: float = 1.0
    min_p: float = 0.0
    repetition: float = 1.0
    frequency: float = 0.0
    presence: float = 0.0

    def changed(self, **changes: Any) -> Settings:
        """These settings with ``changes`` applied and checked; one clear line for a bad name or value."""
        names = [f.name for f in fields(self)]
        for name in changes:
            if name not in names:
                close = get_close_matches(name, names, n=1)
                hint = f"Did you mean {close[0]}?" if close else f"Use one of: {', '.join(names)}"
                raise InvalidInput(f"Unknown sampler setting {name!r}", hint)
        values = {name: _OFF[name] if value is None else value for name, value in changes.items()}
        for name, value in values.items():
            _check(name, value)
        return replace(self, **values)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


_OFF = {f.name: f.default for f in fields(Settings)}
_RANGES = {
    "temperature": (0.0, 100.0, "a number from 0 (greedy) up"),
    "top_k": (0, None, "a whole number, 0 or None for off"),
    "typical_p": (0.0, 1.0, "a number in (0, 1], 1 or None for off"),
    "top_p": (0.0, 1.0, "a number in (0, 1], 1 or None for off"),
    "min_p": (0.0, 1.0, "a number in [0, 1], 0 or None for off"),
    "repetition": (0.0, 100.0, "a number above 0, 1 or None for off"),
    "frequency": (-100.0, 100.0, "a number, 0 or None for off"),
    "presence": (-100.0, 100.0, "a number, 0 or None for off"),
}


def _check(name: str, value: Any) -> None:
    low, high, what = _RANGES[name]
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if name == "top_k":
        ok = ok and float(value).is_integer() and value >= 0
    elif ok:
        ok = low <= value <= high and not (name in ("typical_p", "top_p", "repetition") and value <= 0)
    if not ok:
        raise InvalidInput(f"{name}={value!r} is not valid", f"Give {name} {what}")


@dataclass(frozen=True)
class Stage:
    """One stage of the chain as applied: ``removed`` is the probability it cut (of the distribution
    entering the chain), ``moved`` the total-variation distance it made without cutting."""

    name: str
    setting: str
    kept: int
    removed: float = 0.0
    moved: float = 0.0
    active: bool = True


@dataclass(frozen=True)
class Shaped:
    """The model's softmax (``raw``), the distribution the draw uses (``probs``), and the stages between."""

    raw: np.ndarray
    probs: np.ndarray
    stages: tuple[Stage, ...]
    cuts: tuple[tuple[str, np.ndarray], ...] = ()
    """Each cutting stage's name and the candidates it kept, in order."""

    @cached_property
    def entropy(self) -> float:
        """Entropy in bits of ``probs``."""
        return entropy_bits(self.probs)

    @cached_property
    def raw_entropy(self) -> float:
        """Entropy in bits of ``raw``."""
        return entropy_bits(self.raw)

    def cut_by(self, token: int) -> str | None:
        """The first stage that removed ``token``; None while it is a candidate."""
        if self.probs[token] > 0:
            return None
        return next((name for name, kept in self.cuts if not np.any(kept == token)), None)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Float64 softmax, stable at any scale."""
    x = np.asarray(logits, dtype=np.float64)
    e = np.exp(x - x.max())
    return e / e.sum()


def entropy_bits(probs: np.ndarray) -> float:
    """Shannon entropy in bits of a distribution (zeros ignored)."""
    p = probs[probs > 0]
    return float(-(p * np.log2(p)).sum())


def penalise(logits: np.ndarray, history: Sequence[int], settings: Settings) -> np.ndarray:
    """llama.cpp's penalties over the last :data:`PENALTY_WINDOW` tokens of ``history`` (a copy; float64)."""
    out = np.asarray(logits, dtype=np.float64).copy()
    recent = list(history)[-PENALTY_WINDOW:]
    if not recent or (settings.repetition == 1 and settings.frequency == 0 and settings.presence == 0):
        return out
    ids, counts = np.unique(np.asarray(recent, dtype=np.int64), return_counts=True)
    values = out[ids]
    values = np.where(values <= 0, values * settings.repetition, values / settings.repetition)
    out[ids] = values - counts * settings.frequency - (counts > 0) * settings.presence
    return out


def shape(logits: np.ndarray, history: Sequence[int], settings: Settings) -> Shaped:
    """Run the chain of ``settings`` over the logits of one position, whose context ended with ``history``."""
    raw = softmax(logits)
    penalised = penalise(logits, history, settings)
    on = settings.repetition != 1 or settings.frequency != 0 or settings.presence != 0
    base = softmax(penalised) if on and history else raw
    n = len(base)
    stages = [Stage("penalties", _penalty_label(settings), n, moved=0.5 * float(np.abs(raw - base).sum()),
                    active=on)]
    mass = 1.0  # of ``base``, still among the candidates

    cuts: list[tuple[str, np.ndarray]] = []

    def cut(name: str, setting: str, kept: np.ndarray) -> Stage:
        nonlocal mass
        cuts.append((name, kept))
        left = float(base[kept].sum())
        stage = Stage(name, setting, len(kept), removed=max(0.0, mass - left))
        mass = left
        return stage
    if settings.greedy:  # llama-cpp-python's chain is penalties -> greedy
        top = int(np.argmax(penalised))
        probs = np.zeros(n)
        probs[top] = 1.0
        stages += [Stage(name, "skipped at temperature 0", n, active=False)
                   for name in ("top_k", "typical_p", "top_p", "min_p")]
        stages.append(Stage("temperature", "0: greedy takes the top token", 1, removed=1.0 - float(base[top])))
        return Shaped(raw, probs, tuple(stages), (("temperature 0", np.array([top])),))

    order: np.ndarray | None = None  # candidates, highest logit first (made only when a stage needs it)
    k = settings.top_k
    if k and k < n:
        part = np.argpartition(-penalised, k - 1)[:k]
        order = part[np.argsort(-penalised[part], kind="stable")]
        stages.append(cut("top_k", f"k={k}", order))
    else:
        stages.append(Stage("top_k", "off", n, active=False))
    if settings.typical_p < 1:
        order = _sorted(penalised, order)
        order = _typical(penalised, order, settings.typical_p)
        stages.append(cut("typical_p", f"p={settings.typical_p:g}", order))
    else:
        stages.append(Stage("typical_p", "off", _count(order, n), active=False))
    if settings.top_p < 1:
        order = _nucleus(penalised, order, settings.top_p)
        stages.append(cut("top_p", f"p={settings.top_p:g}", order))
    else:
        stages.append(Stage("top_p", "off", _count(order, n), active=False))
    if settings.min_p > 0:
        candidates = order if order is not None else np.arange(n)
        floor = penalised[candidates].max() + math.log(settings.min_p)
        kept = candidates[penalised[candidates] >= floor]
        if order is None:
            order = kept[np.argsort(-penalised[kept], kind="stable")]
        else:
            order = kept
        stages.append(cut("min_p", f"p={settings.min_p:g}", order))
    else:
        stages.append(Stage("min_p", "off", _count(order, n), active=False))

    candidates = order if order is not None else np.arange(n)
    probs = np.zeros(n)
    t = settings.temperature
    before = softmax(penalised[candidates])
    after = softmax(penalised[candidates] / t) if t != 1 else before
    probs[candidates] = after
    stages.append(Stage("temperature", f"T={t:g}" if t != 1 else "off (T=1)", len(candidates),
                        moved=0.5 * float(np.abs(after - before).sum()), active=t != 1))
    return Shaped(raw, probs, tuple(stages), tuple(cuts))


def _nucleus(penalised: np.ndarray, order: np.ndarray | None, p: float) -> np.ndarray:
    """The smallest most-likely prefix of the candidates whose probability reaches ``p`` (at least one).

    Over the whole vocabulary only the head is sorted, as llama.cpp does: the likeliest 256 first, then four
    times as many until the prefix reaches ``p``, so a slider move does not sort 151,936 numbers.
    """
    if order is not None:
        probs = softmax(penalised[order])
        return order[:min(int(np.searchsorted(np.cumsum(probs), p, side="left")) + 1, len(order))]
    peak = penalised.max()
    weights = np.exp(penalised - peak)
    total = weights.sum()
    m = 256
    while True:
        m = min(m, len(penalised))
        head = np.argpartition(-penalised, m - 1)[:m] if m < len(penalised) else np.arange(m)
        head = head[np.argsort(-penalised[head], kind="stable")]
        cumulative = np.cumsum(weights[head] / total)
        reach = int(np.searchsorted(cumulative, p, side="left"))
        if reach < m or m == len(penalised):
            return head[:min(reach + 1, m)]
        m *= 4


def _sorted(penalised: np.ndarray, order: np.ndarray | None) -> np.ndarray:
    return np.argsort(-penalised, kind="stable") if order is None else order


def _count(order: np.ndarray | None, n: int) -> int:
    return n if order is None else len(order)


def _typical(penalised: np.ndarray, order: np.ndarray, p: float) -> np.ndarray:
    """llama.cpp's locally typical sampling over the candidates (kept in logit order)."""
    probs = softmax(penalised[order])
    with np.errstate(divide="ignore"):
        surprise = -np.log(probs)
    entropy = float(-(probs[probs > 0] * np.log(probs[probs > 0])).sum())
    by_typicality = np.argsort(np.abs(surprise - entropy), kind="stable")
    cumulative = np.cumsum(probs[by_typicality])
    over = np.nonzero(cumulative > p)[0]
    last = int(over[0]) + 1 if len(over) else len(order)
    return order[np.sort(by_typicality[:last])]


def _penalty_label(settings: Settings) -> str:
    parts = [f"{name}={getattr(settings, name):g}" for name in ("repetition", "frequency", "presence")
             if getattr(settings, name) != _OFF[name]]
    return ", ".join(parts) or "off"
