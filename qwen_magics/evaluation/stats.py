"""The statistics of an evaluation, all from ``scipy.stats`` (imported on first use, not when the extension loads).

A setting's score is the mean of its rows' scores, each row one unit (with
repeats, a row's score is the mean of its repeats).  Its 95% interval is
Wilson's score interval when every row scored 0 or 1
(``binomtest(k, n).proportion_ci(method="wilson")``), else a bootstrap of the
mean over rows (``scipy.stats.bootstrap``: BCa, the percentile interval past
500 rows; past 2,000 rows Student's t interval, ``ttest_1samp``).  Two
settings are compared on the rows both scored: the exact McNemar test for 0/1
scores (a binomial test on the discordant pairs), the Wilcoxon signed-rank
test otherwise; the difference's interval is made as a mean's, from the
paired differences.
Bootstraps draw from a generator seeded with 0, so the same scores give the
same interval.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

CONFIDENCE = 0.95
_RESAMPLES = 9999
_BOOTSTRAP_ROWS = 2_000
"""Past this many rows a mean's interval is Student's t interval: the bootstrap's work grows with the rows, and with
that many the mean's sampling distribution is normal to within the bootstrap's own resampling error."""
_BCA_ROWS = 500
"""Past this many rows the bootstrap interval is the percentile one: BCa's jackknife grows with the square of the
rows, and its correction matters in small samples."""


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
    low, high, method = _spread(scores)
    return Interval(mean, low, high, method)


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
    low, high, _ = _spread(differences)
    return Paired(*names, n, difference, low, high, p, method)


def _wilcoxon(differences: Sequence[float]) -> float:
    if not any(differences):  # every row scored alike: no evidence of a difference
        return 1.0
    from scipy.stats import wilcoxon

    return float(wilcoxon(differences).pvalue)


def _spread(values: Sequence[float]) -> tuple[float, float, str]:
    """The 95% interval of the mean of ``values``, and its method: a bootstrap (BCa up to 500 values, else the
    percentile interval, which is also taken where BCa is undefined), or past 2,000 values Student's t."""
    if len(set(values)) < 2:  # no spread: every resample has the same mean
        return float(values[0]), float(values[0]), "bootstrap"
    import warnings

    import numpy as np

    data = np.asarray(values, dtype=float)
    if len(values) > _BOOTSTRAP_ROWS:
        from scipy.stats import ttest_1samp

        ci = ttest_1samp(data, 0.0).confidence_interval(CONFIDENCE)
        return float(ci.low), float(ci.high), "t"
    from scipy.stats import bootstrap

    for method in ("BCa", "percentile") if len(values) <= _BCA_ROWS else ("percentile",):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # BCa's warning on a lopsided sample: the percentile interval follows
            ci = bootstrap((data,), np.mean, confidence_level=CONFIDENCE, n_resamples=_RESAMPLES, method=method,
                           rng=np.random.default_rng(0)).confidence_interval
        if not (math.isnan(ci.low) or math.isnan(ci.high)):
            break
    return float(ci.low), float(ci.high), "bootstrap"
