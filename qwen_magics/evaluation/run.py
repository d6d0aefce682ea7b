"""An evaluation's requests on the map's machinery: one request per row, setting and repeat, then the judge's.

Each setting's rows are planned by :func:`~qwen_magics.datamap.run.plan` (the
map's templates and checks), and the plans are joined into one
:class:`~qwen_magics.datamap.run.Job`, repeat by repeat, row by row, setting by
setting, so a stopped run has every setting's answers for the same first
rows.  One :class:`~qwen_magics.datamap.run.MapRun` answers it: concurrency, rate
limit backoff, the progress view, each answer written to the run log as it
arrives.

Resuming is by request hash.  Repeats of one request are the same request,
so repeat k > 0 is keyed by the request's cache key and k (repeat 0 keeps
the request's own key, as a map's row and ``%%qwen --cache`` do): running the
cell again takes repeat 1 of a row from the log only if repeat 1 was
answered, and ``--repeats 3`` after ``--repeats 1`` sends repeats 1 and 2.

With ``--score judge`` a second job asks a model to grade each complete
answer (see :func:`judge_prompt`); it is keyed, logged and resumed the same way.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from ..datamap import run as datamap
from ..errors import InvalidInput, OutputFormatError, QwenMagicsError
from ..options.build import prepare
from ..runlog import cache_key_of
from ..options.settings import Setting
from ..options.value import Options
from .scorers import Scorer, Unscorable

RUBRIC = ("Score 1 if the answer is correct and complete, 0 if it is wrong, and a value in between for an answer "
          "that is partly right.")


@dataclass(frozen=True)
class Unit:
    """One request of the evaluation: a setting (its position), a row (its position in the data) and a repeat."""

    setting: int
    row: int
    repeat: int


@dataclass
class Plan:
    """Every request of an evaluation, checked, and what is needed to score and report its answers."""

    job: datamap.Job
    units: list[Unit]
    settings: list[Setting]
    setting_args: list[Options]
    rows: datamap.Rows
    count: int
    expect: str | None
    scorer: Scorer
    repeats: int
    judge_args: Options | None = None
    rubric: str = RUBRIC
    judged: datamap.Job | None = None
    judge_units: list[int] = field(default_factory=list)
    """The position in ``job`` of each request of ``judged``."""

    def expected(self, row: int) -> Any:
        return self.rows.values[row].get(self.expect) if self.expect else None


def plan(settings: Any, make_args: Callable[[Setting], Options], choices: list[Setting], data: Any,
         template: str, namespace: dict[str, Any], *, expect: str | None, scorer: Scorer, repeats: int,
         limit: int | None, schema_namespace: Mapping[str, Any] | None = None,
         judge_args: Options | None = None, rubric: str | None = None) -> Plan:
    """Build and check every request (rows x settings x repeats); nothing is sent."""
    rows = datamap.rows_of(data)
    if expect is not None and expect not in rows.fields:
        raise InvalidInput(f"--expect {expect!r}: the data has no column {expect!r}",
                           f"its columns are {', '.join(rows.fields) or '(none)'}")
    if expect is None and scorer.needs_expected:
        raise InvalidInput(f"--score {scorer.name} compares each answer with an expected value",
                           "name the column that holds it: --expect COLUMN")
    count = len(rows.values) if limit is None else min(limit, len(rows.values))
    if scorer.check_expected is not None:
        for position in range(count):
            problem = scorer.check_expected(rows.values[position].get(expect))
            if problem:
                raise InvalidInput(f"Row {rows.labels[position]!r}: --expect {expect}: {problem}",
                                   f"fix the value, or score with another scorer than {scorer.name}")
    setting_args, jobs = [], []
    for setting in choices:
        args = make_args(setting)
        if scorer.needs_json and args.format != "json" and not args.schema:
            raise InvalidInput(f"--score {scorer.name} reads each answer as JSON", "add -f json, or --schema NAME")
        try:
            prepare(settings, args, "(a check of the setting's options)", schema_namespace or namespace)
            jobs.append(datamap.plan(settings, args, data, setting.prompt or template, schema_namespace or namespace,
                                     limit, result_columns=()))
        except QwenMagicsError as err:
            if len(choices) == 1:
                raise
            raise type(err)(f"{setting.label}: {err.message}", err.hint) from None
        setting_args.append(args)
    units, requests, prompts, keys, values, labels = [], [], [], [], [], []
    for repeat in range(repeats):
        for row in range(count):
            for s, job in enumerate(jobs):
                units.append(Unit(s, row, repeat))
                requests.append(job.requests[row])
                prompts.append(job.prompts[row])
                keys.append(repeat_key(job.keys[row], repeat))
                values.append(rows.values[row])
                labels.append(f"{rows.labels[row]} · {choices[s].label}" + (f" #{repeat + 1}" if repeats > 1 else ""))
    notices = list(dict.fromkeys(n for job in jobs for n in job.notices))
    joined = datamap.Job(datamap.Rows(data, values, rows.fields, labels), requests, prompts, keys, _job_id(keys),
                         jobs[0].fmt, jobs[0].validator, notices, [None] * len(requests), kind="evaluation",
                         noun="requests")
    return Plan(joined, units, choices, setting_args, rows, count, expect, scorer, repeats, judge_args,
                rubric or RUBRIC)


def repeat_key(key: str, repeat: int) -> str:
    """The run-log key of repeat ``repeat`` of the request whose cache key is ``key`` (repeat 0: ``key``)."""
    return key if repeat == 0 else hashlib.sha256(f"{key}\nrepeat {repeat}".encode()).hexdigest()


def _job_id(keys: list[str]) -> str:
    return hashlib.sha256("\n".join(keys).encode()).hexdigest()[:16]


def dry_run_text(evaluation: Plan, log: Any) -> str:
    """What would be sent: the counts, the input tokens (Qwen's tokenizer, without the judge's), the first three
    prompts."""
    from ..tokens.qwen import template_tokens

    job = evaluation.job
    answered = sum(1 for key in job.keys if log.cached(key) is not None) if log is not None else 0
    template = sum(template_tokens(r.messages) for r in job.requests)
    judged = f" + {len(job):,} judge requests (one per answer)" if evaluation.judge_args is not None else ""
    lines = [f"Dry run, nothing sent: {evaluation.count:,} rows x {len(evaluation.settings)} settings x "
             f"{evaluation.repeats} repeats = {len(job):,} requests{judged}"
             + (f" ({answered:,} already answered in the run log)" if answered else "")
             + f"; {sum(datamap.input_tokens(job)):,} input tokens (Qwen's tokenizer; {template:,} of them the chat "
               "template's; images and the judge's requests not counted)"]
    for position, prompt in enumerate(job.prompts[:3]):
        lines += [f"── {job.label(position)} ──", prompt]
    return "\n".join(lines)


# The judge ---------------------------------------------------------------------------------------

def judge_prompt(question: str, answer: str, expected: Any, rubric: str) -> str:
    """What the judge is asked about one answer: the row's prompt, the answer, the expected value, the rubric."""
    parts = ["Grade an answer that a model gave to a task.", f"The task:\n<<<\n{question}\n>>>",
             f"The answer to grade:\n<<<\n{answer}\n>>>"]
    if expected is not None:
        parts.append(f"The expected answer:\n<<<\n{expected}\n>>>")
    parts += [f"How to grade: {rubric}",
              'Reply with one JSON object only: {"score": <a number from 0 to 1>, "reason": "<one sentence>"}']
    return "\n\n".join(parts)


def plan_judging(settings: Any, evaluation: Plan, namespace: dict[str, Any]) -> datamap.Job | None:
    """One judge request per complete answer (none when nothing is to be judged)."""
    job, units = evaluation.job, []
    requests, prompts = [], []
    for position, result in enumerate(job.outcomes):
        if result is None or not result.complete:
            continue
        unit = evaluation.units[position]
        text = judge_prompt(job.prompts[position], result.text, evaluation.expected(unit.row), evaluation.rubric)
        prepared = prepare(settings, evaluation.judge_args, text, namespace)
        units.append(position)
        requests.append(prepared.request)
        prompts.append(prepared.prompt)
    if not requests:
        return None
    keys = [cache_key_of(r) for r in requests]
    labels = [f"judge {job.label(p)}" for p in units]
    values = [job.rows.values[p] for p in units]
    judged = datamap.Job(datamap.Rows(None, values, job.rows.fields, labels), requests, prompts, keys, _job_id(keys),
                         "json", None, [], [None] * len(requests), kind="evaluation", noun="judge requests")
    evaluation.judged, evaluation.judge_units = judged, units
    return judged


def verdict(text: str) -> tuple[float, str]:
    """The judge's score and reason from its answer; Unscorable when it gave no score in [0, 1]."""
    from ..display.postprocess import parse_json

    try:
        data = parse_json(text)
    except OutputFormatError:
        data = None
    score = data.get("score") if isinstance(data, dict) else None
    if isinstance(score, bool) or not isinstance(score, (int, float)) or not 0 <= score <= 1:
        raise Unscorable("the judge gave no score in [0, 1] (its answer is in judge_reason)")
    reason = data.get("reason")
    return float(score), reason if isinstance(reason, str) else ""


# Scoring -----------------------------------------------------------------------------------------

@dataclass
class Scored:
    """What became of one unit: its answer, score (None unless scored), state and error."""

    answer: str | None
    score: float | None
    state: str
    error: str | None
    judge_reason: str | None = None


def score_all(evaluation: Plan) -> list[Scored]:
    """Every unit scored: a service error or a scorer that could not score it is failed, never 0."""
    job = evaluation.job
    verdicts = {}
    if evaluation.judged is not None:
        verdicts = dict(zip(evaluation.judge_units, evaluation.judged.outcomes))
    out = []
    for position, (unit, result) in enumerate(zip(evaluation.units, job.outcomes)):
        if result is None:
            out.append(Scored(None, None, "not run", job.unrun.get(position)))
            continue
        if not result.complete:
            out.append(Scored(result.text or None, None, "failed", result.error))
            continue
        row = evaluation.rows.values[unit.row]
        reason = None
        try:
            if evaluation.scorer.score is None:  # judge
                judged = verdicts.get(position)
                if judged is None:
                    out.append(Scored(result.text, None, "not run", "not judged yet: run the cell again"))
                    continue
                if not judged.complete:
                    raise Unscorable(f"the judge failed: {judged.error}")
                reason = judged.text
                score, reason = verdict(judged.text)
            else:
                score = evaluation.scorer.score(result.text, evaluation.expected(unit.row), row)
        except Unscorable as err:
            out.append(Scored(result.text, None, "failed", str(err), reason))
            continue
        out.append(Scored(result.text, score, "complete", None, reason))
    return out
