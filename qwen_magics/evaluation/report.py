"""The result of an evaluation: a table per setting, every answer, paired comparisons, and its display.

Rows are the unit: a setting's score is the mean over the rows it scored,
a row's score the mean of its repeats.  A row none of whose answers could be
scored (a service error, a scorer or judge that failed on it) is counted in
``failed``, never as 0; rows not run (a stopped run, a judge not yet asked)
are in neither.  Shown: the table, a chart of each setting's score with its
interval, and one sentence naming the best setting and whether its lead over
the next is significant at 5%.  Answers are model output: the HTML escapes
them (pandas' ``to_html`` escapes every cell).
"""

from __future__ import annotations

import html
import math
from typing import Any

from ..display.charts import interval_rows
from ..options.settings import AXES, VARIANT
from . import stats
from .run import Plan, Scored

SIGNIFICANCE = 0.05
_TYPES = {"temperature": float, "top_p": float, "presence_penalty": float, "repetition_penalty": float, "seed": int}


class Evaluation:
    """``.table`` (one row per setting), ``.answers`` (one per row x setting x repeat), ``.compare(a, b)``."""

    def __init__(self, evaluation: Plan, scored: list[Scored], line: str = "") -> None:
        import pandas as pd

        self.line = line
        """The run's end line (answered, failed, not run)."""
        self.labels = [s.label for s in evaluation.settings]
        columns = _setting_columns(evaluation)
        count, settings = evaluation.count, len(evaluation.settings)
        sums, counts = [[0.0] * count for _ in range(settings)], [[0] * count for _ in range(settings)]
        failed_at: list[set[int]] = [set() for _ in range(settings)]
        tokens = [[0, 0] for _ in range(settings)]
        costs: list[list[float]] = [[] for _ in range(settings)]
        latencies: list[list[float]] = [[] for _ in range(settings)]
        for unit, outcome, result in zip(evaluation.units, scored, evaluation.job.outcomes):
            if outcome.score is not None:
                sums[unit.setting][unit.row] += outcome.score
                counts[unit.setting][unit.row] += 1
            elif outcome.state == "failed":
                failed_at[unit.setting].add(unit.row)
            if result is not None:
                if result.usage is not None:
                    tokens[unit.setting][0] += result.usage.input
                    tokens[unit.setting][1] += result.usage.output
                if result.cost is not None:
                    costs[unit.setting].append(result.cost)
                if result.complete and result.elapsed is not None:
                    latencies[unit.setting].append(result.elapsed)
        keys = [(u.setting, u.row, u.repeat) for u in evaluation.units]
        order = sorted(range(len(keys)), key=keys.__getitem__)  # by setting, then row, then repeat
        units, outcomes = [evaluation.units[p] for p in order], [scored[p] for p in order]
        labels, expected = evaluation.rows.labels, [evaluation.expected(row) for row in range(count)]
        answers: dict[str, list[Any]] = {
            "row": [labels[u.row] for u in units],
            **{name: [values[u.setting] for u in units] for name, values in columns.items()},
            "repeat": [u.repeat for u in units], "answer": [o.answer for o in outcomes],
            "expected": [expected[u.row] for u in units], "score": [o.score for o in outcomes],
            "state": [o.state for o in outcomes], "error": [o.error for o in outcomes]}
        if evaluation.scorer.score is None:  # judged
            answers["judge_reason"] = [o.judge_reason for o in outcomes]
        self.row_scores = [{row: total / n for row, (total, n) in enumerate(zip(sums[s], counts[s])) if n}
                           for s in range(settings)]
        """Each setting's score of every row it scored (row position -> the mean of its repeats)."""
        table: dict[str, list[Any]] = {**columns, "n": [], "score": [], "low": [], "high": [], "failed": [],
                                       "input_tokens": [], "output_tokens": [], "cost": [], "latency": []}
        self.methods: list[str | None] = []
        for s in range(settings):
            found = stats.interval(list(self.row_scores[s].values()))
            self.methods.append(found.method)
            table["n"].append(len(self.row_scores[s]))
            table["score"].append(found.mean)
            table["low"].append(found.low)
            table["high"].append(found.high)
            table["failed"].append(len(failed_at[s] - set(self.row_scores[s])))
            table["input_tokens"].append(tokens[s][0])
            table["output_tokens"].append(tokens[s][1])
            table["cost"].append(math.fsum(costs[s]) if costs[s] else None)
            table["latency"].append(math.fsum(latencies[s]) / len(latencies[s]) if latencies[s] else None)
        self.table = pd.DataFrame(table)
        self.answers = pd.DataFrame(answers)

    def compare(self, a: int, b: int) -> stats.Paired:
        """A paired test of settings ``a`` and ``b`` (positions in ``.table``) on the rows both scored."""
        for position in (a, b):
            if not isinstance(position, int) or not 0 <= position < len(self.labels):
                raise IndexError(f"compare() takes positions in .table, 0 to {len(self.labels) - 1}; got {position!r}")
        shared = sorted(set(self.row_scores[a]) & set(self.row_scores[b]))
        return stats.paired([self.row_scores[a][r] for r in shared], [self.row_scores[b][r] for r in shared],
                            (self.labels[a], self.labels[b]))

    def sentence(self) -> str:
        """The best setting, and whether its lead over the next is significant at 5%."""
        scores = list(self.table["score"])
        ranked = sorted((s for s in range(len(scores)) if self.table["n"][s] > 0), key=lambda s: -scores[s])
        if not ranked:
            return "No setting has a scored answer yet."
        best = ranked[0]
        head = (f"Best: {self.labels[best]}, scoring {scores[best]:.2f} (95% interval {self.table['low'][best]:.2f} "
                f"to {self.table['high'][best]:.2f}, {self.table['n'][best]} rows)")
        if len(ranked) == 1:
            return head + ("; no other setting was scored." if len(scores) > 1 else ".")
        following = ranked[1]
        test = self.compare(best, following)
        if test.p_value is None:
            return head + f"; no row was scored by both it and {self.labels[following]}, so they cannot be compared."
        verdict = "significant" if test.p_value < SIGNIFICANCE else "not significant"
        return (f"{head}; its lead of {test.difference:+.2f} over {self.labels[following]} ({scores[following]:.2f}) "
                f"on the {test.n} rows both scored is {verdict} at 5% ({test.method}, p = {test.p_value:.3g}).")

    def chart(self) -> str:
        """The SVG chart: each setting's score with its 95% interval."""
        return interval_rows(self.labels, _plain(self.table["score"]), _plain(self.table["low"]),
                             _plain(self.table["high"]), title="Score per setting, with its 95% interval",
                             axis="mean score over rows")

    def __repr__(self) -> str:
        return f"<Evaluation of {len(self.labels)} settings on {len(self.answers)} answers>"

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict[str, str]:
        sentence = self.sentence()
        shown = self.table.copy()
        plain = "\n".join(part for part in (self.line, shown.to_string(), sentence) if part)
        body = "".join([f"<p>{html.escape(self.line)}</p>" if self.line else "",
                        shown.to_html(index=True, escape=True, float_format=lambda v: f"{v:.3g}", na_rep="—"),
                        self.chart(), f'<p class="qwen-eval-verdict">{html.escape(sentence)}</p>'])
        return {"text/plain": plain, "text/html": f'<div class="qwen-eval">{body}</div>'}


def _setting_columns(evaluation: Plan) -> dict[str, list[Any]]:
    """The options that make the settings, as columns named as in a comparison's DataFrame; ``model`` always."""
    given = {axis for setting in evaluation.settings for axis, _ in setting.values}
    names = [name for name in (VARIANT, *AXES) if name in given]
    if "model" not in names:
        names.insert(1 if VARIANT in names else 0, "model")
    phrasings = list(dict.fromkeys(s.prompt for s in evaluation.settings if s.prompt))
    columns: dict[str, list[Any]] = {}
    for name in names:
        values = []
        for index, (setting, args) in enumerate(zip(evaluation.settings, evaluation.setting_args)):
            if name == VARIANT:  # the phrasing's number, as the settings' labels name it
                values.append(phrasings.index(setting.prompt) + 1 if setting.prompt else None)
            elif name == "model":
                values.append(_model_of(evaluation, index))
            else:
                value = getattr(args, name, None)
                values.append(_TYPES[name](value) if name in _TYPES and value is not None else value)
        columns[name] = values
    return columns


def _model_of(evaluation: Plan, index: int) -> str:
    """The model setting ``index``'s requests go to (that of its first request)."""
    position = next((p for p, unit in enumerate(evaluation.units) if unit.setting == index), None)
    return evaluation.job.requests[position].model if position is not None else ""


def _plain(values: Any) -> list[float | None]:
    return [None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v) for v in values]
