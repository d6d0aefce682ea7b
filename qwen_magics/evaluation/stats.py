"""The statistics of an evaluation, all from ``scipy.stats`` (imported on first use, not when the extension loads).

A setting's score is the mean of its rows' scores, each row one unit (with
repeats, a row's score is the mean of its repeats).  Its 95% interval is
Wilson's score interval when every row scored 0 or 1
(``binomtest(k, n).proportion_ci(method="wilson")``), else a bootstrap of the
mean over rows (``scipy.stats.bootstrap``, BCa).  Two settings are compared
on the rows both scored: the exact McNemar test for 0/1 scores (a binomial
test on the discordant pairs), the Wilcoxon signed-rank test otherwise, and
the difference's interval is a bootstrap of the paired differences.
Bootstraps draw from a generator seeded with 0, so the same scores give the
same interval.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

CONFIDENCE = 0.95
_RESAMPLES = 9999
_WORK = 20_000_000
"""Resampled values a bootstrap draws at most: past it, fewer resamples (never under 1,000), so 100,000 rows stay fast."""


@dataclass(frozen=True)
class Interval:
    """A mean and its 95% interval, and how the interval was made (``wilson`` or ``bootstrap``)."""

    mean: float | None
    low: float | None
    high: float | None
    method: str | None


def binary(scores: Sequence[float]) -> bool:
    """Whether every score is 0 or 1 (the scores of a yes/no scorer, one answer a row)."""
    return all(s == 0 or s == 1 for s in scores)


def interval(scores: Sequence[float]) -> Interval:
    """The mean of the rows' scores and its 95% interval; None throughout for no rows."""
    n = len(scores)
    if n == 0:
        return Interval(None, None, None, None)
    mean = math.fsum(scores) / n
    if binary(scores):
        from scipy.stats import binomtest

        ci = binomtest(int(round(math.fsum(scores))), n).proportion_ci(confidence_level=CONFIDENCE, method="wilson")
        return Interval(mean, float(ci.low), float(ci.high), "wilson")
    low, high = _bootstrap(scores)
    return Interval(mean, low, high, "bootstrap")


@dataclass(frozen=True)
class Paired:
    """Two settings compared on the rows both scored: ``difference`` is a's mean score less b's."""

    a: str
    b: str
    n: int
    difference: float | None
    low: float | None
    high: float | None
    p_value: float | None
    method: str

    def __repr__(self) -> str:
        if self.difference is None:
            return f"<Paired {self.a} vs {self.b}: no row scored by both>"
        return (f"<Paired {self.a} vs {self.b}: difference {self.difference:+.3f} "
                f"(95% CI {self.low:+.3f} to {self.high:+.3f}), p = {self.p_value:.3g}, {self.method}, n = {self.n}>")


def paired(a: Sequence[float], b: Sequence[float], names: tuple[str, str] = ("a", "b")) -> Paired:
    """A paired test of two settings' scores on the same rows (``a[i]`` and ``b[i]`` are row i's)."""
    n = len(a)
    if n == 0:
        return Paired(*names, 0, None, None, None, None, "none")
    differences = [x - y for x, y in zip(a, b)]
    difference = math.fsum(differences) / n
    if binary(a) and binary(b):
        from scipy.stats import binomtest

        only_a = sum(1 for x, y in zip(a, b) if x > y)
        only_b = sum(1 for x, y in zip(a, b) if y > x)
        p = float(binomtest(only_a, only_a + only_b, 0.5).pvalue) if only_a + only_b else 1.0
        method = "exact McNemar"
    else:
        p = _wilcoxon(differences)
        method = "Wilcoxon signed-rank"
    low, high = _bootstrap(differences)
    return Paired(*names, n, difference, low, high, p, method)


def _wilcoxon(differences: Sequence[float]) -> float:
    if not any(differences):  # every row scored alike: no evidence of a difference
        return 1.0
    from scipy.stats import wilcoxon

    return float(wilcoxon(differences).pvalue)


def _bootstrap(values: Sequence[float]) -> tuple[float, float]:
    """The 95% bootstrap interval of the mean of ``values`` (BCa; the percentile interval where BCa is undefined)."""
    if len(set(values)) < 2:  # no spread: every resample has the same mean
        return float(values[0]), float(values[0])
    import warnings

    import numpy as np
    from scipy.stats import bootstrap

    data = (np.asarray(values, dtype=float),)
    resamples = max(1000, min(_RESAMPLES, _WORK // len(values)))
    for method in ("BCa", "percentile"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # BCa's warning on a lopsided sample: the percentile interval follows
            ci = bootstrap(data, np.mean, confidence_level=CONFIDENCE, n_resamples=resamples, method=method,
                           rng=np.random.default_rng(0)).confidence_interval
        if not (math.isnan(ci.low) or math.isnan(ci.high)):
            break
    return float(ci.low), float(ci.high)
