"""Alternated pairs of runs, and which of them a shared machine left undisturbed.

Each run is a dict with at least ``elapsed`` (seconds, timed in the kernel) and
``others`` (cores' worth of CPU other processes used meanwhile, see
:class:`harness.Meter`).  Runs alternate A B, B A, ... so drift hits both sides;
ratios are taken per pair, from the undisturbed pairs when there are enough.
"""

from __future__ import annotations

import random
import statistics
import time
from dataclasses import dataclass
from typing import Callable

QUIET = 0.3  # cores used by other processes above which a run counts as disturbed
ENOUGH = 3  # undisturbed pairs needed before only those are used

Run = Callable[[], dict]


@dataclass
class Pair:
    """Run A and run B, taken back to back."""

    a: dict
    b: dict

    @property
    def others(self) -> float:
        return max(self.a["others"], self.b["others"])

    @property
    def quiet(self) -> bool:
        return self.others < QUIET

    def ratio(self, key: str = "elapsed") -> float:
        return self.a[key] / self.b[key]


def alternate(run_a: Run, run_b: Run, *, want: int, least: int, most: int, budget: float,
              log: Callable[[str], None], names: tuple[str, str],
              settle: Callable[[float], object] | None = None) -> list[Pair]:
    """Pairs until ``want`` are undisturbed or ``most`` were taken; after ``least`` pairs, also when ``budget`` s passed.

    ``settle(QUIET)``, called before each pair, may wait for the machine to calm down.
    """
    pairs: list[Pair] = []
    started = time.monotonic()
    while len(pairs) < most and sum(p.quiet for p in pairs) < want:
        if len(pairs) >= least and time.monotonic() - started > budget:
            break
        if settle is not None:
            settle(QUIET)
        if len(pairs) % 2 == 0:
            a = run_a()
            pair = Pair(a, run_b())
        else:
            b = run_b()
            pair = Pair(run_a(), b)
        pairs.append(pair)
        log(f"  pair {len(pairs)}: {names[0]} {pair.a['elapsed']:.3f} s, {names[1]} {pair.b['elapsed']:.3f} s, "
            f"other processes {pair.others:.2f} cores")
    return pairs


def fastest_ratio(pairs: list[Pair]) -> float:
    """Fastest A over fastest B: how they compare when the CPU runs at its best on both sides."""
    return min(p.a["elapsed"] for p in pairs) / min(p.b["elapsed"] for p in pairs)


def usable(pairs: list[Pair]) -> tuple[list[Pair], bool, str]:
    """The pairs to summarise (the undisturbed ones, if there are enough), whether that is all noise, and a note."""
    quiet = [p for p in pairs if p.quiet]
    noisy = len(quiet) < ENOUGH
    note = f"{len(quiet)} of {len(pairs)} pairs undisturbed (other processes < {QUIET} cores)"
    if noisy:
        note += "; too few, so every pair is used and the number is noisy"
    return (pairs if noisy else quiet), noisy, note


def median_interval(values: list[float], level: float = 0.9, resamples: int = 2000) -> tuple[float, float]:
    """Bootstrap interval of the median: how much the machine's noise leaves it uncertain.

    This CPU changes speed by up to 1.7× in phases of a few hundred milliseconds, so single
    ratios scatter by ±15 %; the interval says how far the median of the pairs can be trusted.
    """
    rng = random.Random(0)
    medians = sorted(statistics.median(rng.choices(values, k=len(values))) for _ in range(resamples))
    return medians[int((1 - level) / 2 * resamples)], medians[int((1 + level) / 2 * resamples) - 1]
