"""One prompt over every row of a dataset: the rows, one request per row, and the run that answers them.

A map is many ordinary runs.  Each row's prompt is the template with the
row's fields filled in (notebook expressions are evaluated once), turned into
a request by :func:`~qwen_magics.options.build.prepare` (the checks of ``%%qwen``),
and streamed by :func:`~qwen_magics.runner.drive` into a renderer that shows
nothing; the progress view is handed each finished result.  Every row is
built and checked before anything is sent.

At most ``concurrency`` rows are in flight.  A row is retried as any request
is (:func:`~qwen_magics.backends.common.guarded`: at most ``max_retries``
times); the map only takes over the waits between tries: a rate limit halves
the limit and holds every row back for the service's Retry-After, and the
waiting row gives up its place meanwhile; the limit grows back one step per
window of successes.  Every finished row goes to the run log at once (the
log's writer thread stores it, with any other rows waiting, in one
transaction), grouped under the job, and a later run of the same job takes
each row whose exact request has a complete answer in the log from there, so
an interrupted or killed run loses at most the rows that were in flight (and,
killed, the few being stored).
"""

from __future__ import annotations

import ast
import asyncio
import builtins
import hashlib
import string
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from .. import events as ev
from .. import runner
from ..backends.common import retry_pause
from ..errors import InvalidInput, OutputFormatError, QwenMagicsError, RateLimited
from ..options.expand import _is_pandas, expand, format_value
from ..options.build import for_prompt, prepare
from ..options.value import Options
from ..display.postprocess import parse_json, validate
from ..render.base import Renderer
from ..request import Request
from ..result import Result
from ..runlog import RunLog, cache_key_of, record_from

RESULT_COLUMNS = ("answer", "reasoning", "state", "error", "input_tokens", "output_tokens", "cost", "elapsed",
                  "request_id")
_QUIET_RENDERER = Renderer(interval=None)  # shows nothing: a row's deltas are joined until its stream ends
_KINDS = {"RateLimited": "rate limit", "ContentBlocked": "moderation", "ServerError": "server error",
          "TimedOut": "timeout", "StreamCut": "cut stream", "ConnectionFailed": "connection",
          "QuotaExceeded": "quota", "BadRequest": "bad request", "LocalModelError": "local model"}


# The rows ----------------------------------------------------------------------------------------

@dataclass
class Rows:
    """The input as a list of field dicts, with what is needed to give the result the input's shape."""

    source: Any
    values: list[dict[str, Any]]
    fields: list[str]
    labels: list[Any]
    """Each row's index label (its position for a list)."""


def rows_of(data: Any) -> Rows:
    """A DataFrame's rows (fields: its columns), a Series' or a list's items (``item``), or a list of dicts."""
    if _is_pandas(data, "DataFrame"):
        names = [str(c) for c in data.columns]
        if len(set(names)) < len(names):
            raise InvalidInput("The DataFrame has duplicate column names", "rename them so each is unique")
        values = [dict(zip(names, row)) for row in data.itertuples(index=False, name=None)]
        return Rows(data, values, names, list(data.index))
    if _is_pandas(data, "Series"):
        return Rows(data, [{"item": v} for v in data.tolist()], ["item"], list(data.index))
    if isinstance(data, (str, bytes, Mapping)) or not hasattr(data, "__iter__"):
        raise InvalidInput(f"A {type(data).__name__} is not a list of rows",
                           "give a DataFrame, a Series, or a list of strings or dicts")
    items = list(data)
    dicts = [isinstance(x, Mapping) for x in items]
    if any(dicts) and not all(dicts):
        raise InvalidInput("The list mixes dicts and other values", "give a list of dicts, or a list of strings")
    if items and all(dicts):
        values = [{str(k): v for k, v in x.items()} for x in items]
        return Rows(items, values, list(dict.fromkeys(k for row in values for k in row)), list(range(len(items))))
    return Rows(items, [{"item": x} for x in items], ["item"], list(range(len(items))))


class Template:
    """The cell body split once: literal text, row fields, and notebook expressions (evaluated once).

    ``{field}`` is the row's value; an expression that names a field (``{text.upper()}``)
    is evaluated per row with the row's fields over the notebook's names; any
    other ``{expr}`` comes from the notebook, as in ``%%qwen``.
    """

    def __init__(self, text: str, fields: list[str], namespace: dict[str, Any], *, max_chars: int,
                 dataframe_rows: int) -> None:
        self._namespace, self._limits = namespace, dict(max_chars=max_chars, dataframe_rows=dataframe_rows)
        self.notices: list[str] = []
        self._pieces: list[Any] = []
        try:
            parts = list(string.Formatter().parse(text))
        except ValueError as err:
            raise InvalidInput(f"The template has an unmatched brace ({err})",
                               "write {{ and }} for literal braces") from None
        known = set(fields)
        for literal, name, spec, conversion in parts:
            self._pieces.append(literal)
            if name is None:
                continue
            expr = f"{name}:{spec}" if spec else name
            if expr in known and not conversion:
                self._pieces.append((expr, None, None))
                continue
            loaded = _names(expr)
            if loaded & known:
                self._pieces.append((expr, compile(expr.strip(), "<template>", "eval"), conversion))
                continue
            unknown = sorted(n for n in loaded if n not in namespace and not hasattr(builtins, n))
            if unknown:
                raise InvalidInput(f"{{{expr}}}: {unknown[0]!r} is neither a field of the rows nor a notebook name",
                                   f"the fields are {', '.join(fields) or '(none)'}; or define {unknown[0]} in a cell "
                                   "first, or write {{ and }} for literal braces")
            once = expand("{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}",
                          namespace, **self._limits)
            self._pieces.append(once.text)
            self.notices += once.warnings

    def render(self, row: dict[str, Any], label: Any) -> tuple[str, list[str]]:
        """The prompt for one row, and the warnings about values cut short."""
        out: list[str] = []
        warnings: list[str] = []
        for piece in self._pieces:
            if isinstance(piece, str):
                out.append(piece)
                continue
            expr, code, conversion = piece
            if code is None:
                if expr not in row:
                    raise InvalidInput(f"Row {label!r} has no {expr!r}", "give every row that key")
                value = row[expr]
            else:
                try:
                    value = eval(code, self._namespace, row)  # noqa: S307 - the user's own template and names
                except Exception as err:  # noqa: BLE001 - reported as one line, before anything is sent
                    raise InvalidInput(f"Row {label!r}: {{{expr}}} raised {type(err).__name__}: {err}",
                                       "fix the expression, or write {{ and }} for literal braces") from None
                value = repr(value) if conversion == "r" else ascii(value) if conversion == "a" else value
            text, warning = format_value(value, expr, **self._limits)
            out.append(text)
            if warning:
                warnings.append(warning)
        return "".join(out), warnings


def _names(expr: str) -> set[str]:
    """The names an expression reads (not those it binds itself, as a comprehension's)."""
    if not expr.strip():
        raise InvalidInput("The template has an empty {}", "write {{}} for literal braces, or put a field inside")
    try:
        tree = ast.parse(expr.strip(), mode="eval")
    except SyntaxError:
        raise InvalidInput(f"{{{expr}}} is not a field or a Python expression",
                           "write {{ and }} for literal braces") from None
    nodes = list(ast.walk(tree))
    bound = {n.id for n in nodes if isinstance(n, ast.Name) and not isinstance(n.ctx, ast.Load)}
    bound |= {a.arg for n in nodes if isinstance(n, ast.arguments) for a in (*n.posonlyargs, *n.args, *n.kwonlyargs)}
    return {n.id for n in nodes if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)} - bound


# The job -----------------------------------------------------------------------------------------

@dataclass
class Job:
    """Every row's request, checked; what became of each row; and the key that names the job in the run log."""

    rows: Rows
    requests: list[Request]
    prompts: list[str]
    keys: list[str]
    """Each request's cache key: the same request, the same key, in any kernel."""
    id: str
    fmt: str
    validator: Any = None
    notices: list[str] = field(default_factory=list)
    outcomes: list[Result | None] = field(default_factory=list)
    parsed: dict[int, Any] = field(default_factory=dict)
    parse_errors: dict[int, str] = field(default_factory=dict)
    recalled: set[int] = field(default_factory=set)
    unrun: dict[int, str] = field(default_factory=dict)
    """Why a row that has no outcome was not run, where that is known (its Batch job expired, was cancelled...)."""
    model_notice: str | None = None
    """Why the model was chosen for the user (no key: the local model): said once per kernel, as by %%qwen."""
    kind: str = "dataset"
    """The group kind of its records in the run log."""
    noun: str = "rows"
    """What the end line counts (an evaluation's job holds a request per row, setting and repeat)."""
    input_tokens: list[int] | None = None
    """Each row's input tokens, once counted (:func:`input_tokens`)."""

    def __len__(self) -> int:
        return len(self.requests)

    def label(self, position: int) -> Any:
        return self.rows.labels[position]

    def settle(self, position: int, result: Result) -> None:
        """Record a row's result, with its parsed JSON (or why it did not parse) under -f json / --schema."""
        self.outcomes[position] = result
        if self.fmt != "json" or not result.complete:
            return
        try:
            data = parse_json(result.text)
            self.parsed[position] = validate(data, self.validator) if self.validator is not None else data
        except OutputFormatError as err:
            self.parse_errors[position] = err.message


def plan(settings: Any, options: Options, data: Any, template: str, namespace: dict[str, Any],
         limit: int | None = None, *, result_columns: tuple[str, ...] = RESULT_COLUMNS) -> Job:
    """Build and check every row's request (the first ``limit`` rows); nothing is sent.

    ``result_columns`` are the columns the caller's result adds, which the data must not have.
    """
    rows = rows_of(data)
    clash = [name for name in rows.fields if name in result_columns]
    if clash:
        raise InvalidInput(f"The data already has a column {clash[0]!r}, which the result adds",
                           f"rename it first, e.g. data.rename(columns={{{clash[0]!r}: 'given_{clash[0]}'}})")
    count = len(rows.values) if limit is None else min(limit, len(rows.values))
    body = Template(template, rows.fields, namespace, max_chars=settings.max_value_chars,
                    dataframe_rows=settings.dataframe_rows)
    options = options.but(expand=False)  # each row's prompt is expanded here, once
    requests, prompts, notices, cut = [], [], list(body.notices), Counter()
    first = None
    for position in range(count):
        label = rows.labels[position]
        text, warnings = body.render(rows.values[position], label)
        try:  # the first row is checked in full; the others differ from it by their prompt only
            if first is None:
                prepared = first = prepare(settings, options, text, namespace, reasoning_shown=False)
                notices += first.notices
            else:
                prepared = for_prompt(first, text)
        except QwenMagicsError as err:
            raise InvalidInput(f"Row {label!r}: {err.message}", err.hint) from None
        cut.update(warnings)
        requests.append(prepared.request)
        prompts.append(prepared.prompt)
    notices += [f"{w} (in {n:,} rows)" if n > 1 else w for w, n in cut.items()]
    fmt = "json" if options.schema is not None else options.format
    keys = [cache_key_of(r) for r in requests]
    job_id = hashlib.sha256("\n".join(keys).encode()).hexdigest()[:16]
    validator, model_notice = (first.validator, first.model_notice) if first is not None else (None, None)
    return Job(rows, requests, prompts, keys, job_id, fmt, validator, notices, [None] * count,
               model_notice=model_notice)


def dry_run_text(job: Job, log: RunLog | None) -> str:
    """What would be sent: the row count, the input tokens (Qwen's tokenizer) and the first three prompts."""
    from ..tokens.qwen import template_tokens

    answered = len(log.cached_many(job.keys)) if log is not None else 0
    template = sum(template_tokens(r.messages) for r in job.requests)
    lines = [f"Dry run, nothing sent: {len(job):,} rows to {job.requests[0].model if job.requests else '-'}"
             + (f" ({answered:,} already answered in the run log)" if answered else "")
             + f", {sum(input_tokens(job)):,} input tokens (Qwen's tokenizer; {template:,} of them the chat "
               "template's; images not counted)" + _estimated_cost(job)]
    for position, prompt in enumerate(job.prompts[:3]):
        lines += [f"── row {job.label(position)!r} ──", prompt]
    return "\n".join(lines)


def _estimated_cost(job: Job) -> str:
    """``, estimated cost $0.0123 (...)`` where the model's price is known; else nothing."""
    from .budget import Budget

    if not job.requests or job.requests[0].price is None or job.requests[0].price.free:
        return ""
    budget = Budget(float("inf"), job.requests, input_tokens(job))
    total = budget.total(range(len(job)))
    if total is None:
        return ""
    guess = job.requests[0].sampling.max_tokens
    return (f", estimated cost {budget.money(total)} ("
            + (f"output at --max-tokens {guess})" if guess else "input only: output is not known before answers)"))


def input_tokens(job: Job) -> list[int]:
    """Each row's input tokens as Qwen's tokenizer counts them, chat template included (counted once)."""
    if job.input_tokens is None:
        from ..tokens.qwen import count_conversations

        job.input_tokens = count_conversations([r.messages for r in job.requests])
    return job.input_tokens


def recall(job: Job, log: RunLog) -> int:
    """Take from the run log every row whose exact request already has a complete answer; how many."""
    answered = log.cached_many(job.keys)
    for position, key in enumerate(job.keys):
        record = answered.get(key)
        if record is not None:
            usage = None if record.input_tokens is None else ev.Usage(
                record.input_tokens, record.output_tokens or 0, record.reasoning_tokens or 0, record.cached_tokens or 0)
            job.settle(position, Result(model=record.model, parameters=record.parameters, text=record.answer,
                                        reasoning=record.reasoning, usage=usage, request_id=record.request_id,
                                        finish_reason=record.finish_reason, state="complete",
                                        elapsed=record.elapsed, price=job.requests[position].price))
            job.recalled.add(position)
    return len(job.recalled)


# The run -----------------------------------------------------------------------------------------

class Throttle:
    """At most ``limit`` rows in flight; halved when the service rate-limits, then regained one step at a time.

    After a rate limit nothing new is sent until the pause it asked for ends.
    Each ``limit`` successes in a row raise the limit by one, back to ``most``.
    """

    def __init__(self, most: int) -> None:
        self.most = self.limit = most
        self.in_flight = 0
        self.resume_at = 0.0
        self._streak = 0
        self._waiters: list[asyncio.Future] = []

    async def acquire(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            pause = self.resume_at - loop.time()
            if pause <= 0 and self.in_flight < self.limit:
                self.in_flight += 1
                return
            waiter = loop.create_future()
            self._waiters.append(waiter)
            timer = loop.call_later(pause, self._wake) if pause > 0 else None
            try:
                await waiter
            finally:
                if timer is not None:
                    timer.cancel()

    def release(self) -> None:
        self.in_flight -= 1
        self._wake()

    def succeeded(self) -> None:
        self._streak += 1
        if self.limit < self.most and self._streak >= self.limit:
            self.limit, self._streak = self.limit + 1, 0
            self._wake()

    def backoff(self, seconds: float) -> None:
        """A rate limit: halve the limit (once per pause, not once per row that hit it) and pause ``seconds``."""
        now = asyncio.get_running_loop().time()
        if now >= self.resume_at:
            self.limit = max(1, self.limit // 2)
        self.resume_at, self._streak = max(self.resume_at, now + seconds), 0

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)


class _Slot:
    """One row's place under the throttle; given up while the row waits to be retried."""

    def __init__(self, throttle: Throttle, progress: Any) -> None:
        self.throttle, self.progress, self.held = throttle, progress, False

    async def take(self) -> None:
        await self.throttle.acquire()
        self.held = True
        self.progress.running(self.throttle.in_flight)

    def give_up(self) -> None:
        if self.held:
            self.held = False
            self.throttle.release()
            self.progress.running(self.throttle.in_flight)

    async def pause(self, error: QwenMagicsError, seconds: float) -> None:
        """Before a retry: a rate limit holds every row back; the row waits without its place."""
        self.give_up()
        if isinstance(error, RateLimited):
            self.throttle.backoff(seconds)
        else:
            await asyncio.sleep(seconds)
        await self.take()


class MapRun:
    """Answers a job's rows that have no outcome yet, on the package's loop (:meth:`run`)."""

    def __init__(self, job: Job, progress: Any, log: RunLog | None, concurrency: int,
                 backend: Callable[[Request], Any], budget: Any = None, **context: Any) -> None:
        """``context`` goes into every row's log record (``kernel_id``, ``notebook``); ``budget`` (a
        :class:`~qwen_magics.datamap.budget.Budget`) decides whether each row may start."""
        self.job, self.progress, self.log, self.backend, self.context = job, progress, log, backend, context
        self.budget = budget
        self.throttle = Throttle(concurrency)

    async def run(self) -> None:
        todo = deque(i for i, outcome in enumerate(self.job.outcomes) if outcome is None)
        workers = [asyncio.create_task(self._work(todo)) for _ in range(min(self.throttle.most, len(todo)))]
        self.progress.begin(self.job)
        try:
            await asyncio.gather(*workers)
        finally:  # also when cancelled: the rows in flight stop, and stay "not run"
            for worker in workers:
                worker.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            if self.log is not None:  # an answered row is never lost to a stop: its record is stored first
                await asyncio.to_thread(self.log.flush)
            self.progress.finish(summary(self.job))

    async def _work(self, todo: deque[int]) -> None:
        while todo:
            position = todo.popleft()
            if self.budget is not None and not self.budget.start(position):
                self.job.unrun[position] = self.budget.ran_out()
                continue
            result = await self._answer(self.job.requests[position])
            if self.budget is not None:
                self.budget.settle(position, result)
            self.job.settle(position, result)
            self.progress.add(self.job.label(position), result)
            if self.log is not None:  # stored at once by the log's writer thread, with any other rows waiting
                self.log.write_async(record_from(result, self.job.requests[position], group_id=self.job.id,
                                                 group_kind=self.job.kind, cache_key=self.job.keys[position],
                                                 **self.context))

    async def _answer(self, request: Request) -> Result:
        """The row's result; a stop (the worker cancelled) propagates."""
        slot = _Slot(self.throttle, self.progress)
        await slot.take()
        retry_pause.set(slot.pause)  # this worker's context: the row's retries wait under the throttle
        result = Result.for_request(request)
        try:
            await runner.drive(self.backend(request), _QUIET_RENDERER, result)
        finally:
            slot.give_up()
        if result.complete:
            self.throttle.succeeded()
        return result


# The outcome -------------------------------------------------------------------------------------

def state_of(result: Result | None) -> str:
    return "not run" if result is None else "complete" if result.complete else "failed"


def summary(job: Job) -> str:
    """The end line: ``2,000 rows: 1,987 answered, 13 failed (rate limit x9, moderation x4): run the cell again ...``."""
    states = Counter(state_of(r) for r in job.outcomes)
    kinds = Counter(_KINDS.get(r.error_kind or "", r.error_kind or "error") for r in job.outcomes
                    if r is not None and not r.complete)
    parts = [f"{states['complete']:,} answered" + (f" ({len(job.recalled):,} from the run log)" if job.recalled else "")]
    if kinds:
        parts.append(f"{states['failed']:,} failed ({', '.join(f'{k} x{n}' for k, n in kinds.most_common())})")
    if states["not run"]:
        parts.append(f"{states['not run']:,} not run")
    if job.parse_errors:
        parts.append(f"{len(job.parse_errors):,} answers not valid JSON (see error)")
    line = f"{len(job):,} {job.noun}: {', '.join(parts)}"
    if states["failed"] or states["not run"]:
        line += ": run the cell again to " + ("retry the failed rows" if not states["not run"] else
                                              "send the rows not answered")
    return line


def outcome(job: Job) -> Any:
    """The input's rows (the job's), with the result columns: a DataFrame, or a list of dicts without pandas."""
    columns: dict[str, list[Any]] = {name: [] for name in RESULT_COLUMNS}
    for position, result in enumerate(job.outcomes):
        columns["answer"].append(result.text if result else None)
        columns["reasoning"].append(result.reasoning if result else None)
        columns["state"].append(state_of(result))
        columns["error"].append(job.parse_errors.get(position)
                                or (result.error if result else job.unrun.get(position)))
        usage = result.usage if result is not None else None
        columns["input_tokens"].append(usage.input if usage is not None else None)
        columns["output_tokens"].append(usage.output if usage is not None else None)
        columns["cost"].append(result.cost if result else None)
        columns["elapsed"].append(result.elapsed if result else None)
        columns["request_id"].append(result.request_id if result else None)
    if not any(columns["reasoning"]):
        del columns["reasoning"]
    columns.update(_parsed_columns(job))
    try:
        import pandas as pd
    except ImportError:
        return [{**row, **{name: values[i] for name, values in columns.items()}}
                for i, row in enumerate(job.rows.values[:len(job)])]
    source = job.rows.source
    if _is_pandas(source, "DataFrame"):
        frame = source.iloc[:len(job)].copy()
    elif _is_pandas(source, "Series"):
        frame = pd.DataFrame({"item": source.iloc[:len(job)]})
    else:
        frame = pd.DataFrame(job.rows.values[:len(job)], columns=job.rows.fields)
    for name, values in columns.items():
        frame[name] = values
    return frame


def _parsed_columns(job: Job) -> dict[str, list[Any]]:
    """The parsed answers' fields as columns (``data.NAME`` where NAME is taken), or one ``data`` column."""
    if not job.parsed:
        return {}
    plain = {i: (value.model_dump() if hasattr(value, "model_dump") else value) for i, value in job.parsed.items()}
    if not all(isinstance(value, dict) for value in plain.values()):
        return {"data": [plain.get(i) for i in range(len(job))]}
    taken = {*job.rows.fields, *RESULT_COLUMNS}
    names = dict.fromkeys(k for value in plain.values() for k in value)
    return {(f"data.{k}" if k in taken else k): [plain[i].get(k) if i in plain else None for i in range(len(job))]
            for k in names}

