"""A dataset map sent as Batch jobs: its rows' custom ids, the jobs kept in the run log, the answers settled back.

The requests are the map's own (:func:`~qwen_magics.datamap.run.plan`); row
``p`` goes as custom id ``row-p``.  Submitting writes one record to the run
log (``group_kind`` ``"batch"``, ``group_id`` the map's job key, ``state``
``"submitted"``) whose parameters hold the job ids and what another kernel
needs to give the answers the input's shape: the rows' labels, fields and
values, each row's cache key, the requests' parameters and live price.
Collecting folds each row's outcome into a :class:`~qwen_magics.result.Result`
through the same events a live run produces, settles it into the map, writes
the rows to the log as a live map does (a later live run of the cell takes
them from there), and writes a second record (``state`` ``"collected"``), so
running the cell again submits the rows still unanswered instead of
collecting the old jobs again.
"""

from __future__ import annotations

import sqlite3
from typing import Any, Mapping, Sequence

from .. import events as ev
from .. import runner
from ..request import Endpoint, Request
from ..result import Result
from ..runlog import Record, RunLog, record_from
from .jobs import JobStatus, wait_async
from .lines import batch_price
from .outcomes import Outcome

FIRST_POLL, MOST_POLL = 0.5, 30.0  # seconds between polls: soon at first, then growing to this
SUBMITTED, COLLECTED = "submitted", "collected"
_LOG_WAIT = 30.0  # seconds to wait for the collected rows to be stored
_UNSEEN = "Not run: no batch job returned this row. Run the cell again to send it."


def custom_id(position: int) -> str:
    return f"row-{position}"


def submit_map(job: Any, positions: Sequence[int], log: RunLog | None, template: str,
               context: Mapping[str, Any]) -> list[str]:
    """Submit the rows at ``positions`` as Batch jobs and remember them in the log; the job ids."""
    from . import submit

    requests = [job.requests[p] for p in positions]
    first = requests[0]
    ids = submit(first.endpoint, requests, [custom_id(p) for p in positions], {"map": job.id})
    if log is not None:
        payload = {"batch_jobs": ids, "positions": list(positions), "keys": job.keys,
                   "labels": [_plain(label) for label in job.rows.labels[:len(job)]], "fields": job.rows.fields,
                   "values": [[_plain(row.get(f)) for f in job.rows.fields] for row in job.rows.values[:len(job)]],
                   "format": job.fmt, "parameters": first.parameters(), "price": first.price}
        log.write(_marker(first, job.id, SUBMITTED, payload, submitted_line(ids, len(positions)), template, context))
    return ids


def submitted_line(job_ids: Sequence[str], rows: int) -> str:
    return (f"{rows:,} rows submitted as batch job(s) {', '.join(job_ids)} (half price; done within 24 hours): "
            f"collect with %qwen_batch collect {job_ids[0]} -o NAME, or run this cell again")


def stopped_line(job_ids: Sequence[str]) -> str:
    return (f"Stopped waiting; batch job(s) {', '.join(job_ids)} keep running at the service: "
            f"%qwen_batch wait {job_ids[0]} follows it, %qwen_batch collect {job_ids[0]} -o NAME collects it")


def pending(log: RunLog | None, map_key: str) -> Record | None:
    """The map's submitted record whose jobs have not been collected yet, if any."""
    found = _ids(log, "SELECT id, state FROM runs WHERE group_kind = 'batch' AND group_id = ? "
                      "ORDER BY seq DESC LIMIT 1", (map_key,))
    return log.get(found[0][0]) if found and found[0][1] == SUBMITTED else None


def remembered(log: RunLog | None, job_id: str) -> tuple[Record | None, bool]:
    """The submitted record naming this job (None if the log has none), and whether its jobs were collected."""
    submitted: Record | None = None
    collected = False
    for run_id, state in _ids(log, "SELECT id, state FROM runs WHERE group_kind = 'batch' AND parameters LIKE ? "
                                   "ORDER BY seq DESC", (f'%"{job_id}"%',)):
        record = log.get(run_id)
        if record is None or job_id not in record.parameters.get("batch_jobs", ()):
            continue
        collected = collected or state == COLLECTED
        if state == SUBMITTED:
            submitted = record
            break
    return submitted, collected


def watch(endpoint: Endpoint, job_ids: Sequence[str], progress: Any) -> list[JobStatus]:
    """Wait for the jobs, their counts shown in ``progress``; Ctrl-C raises ``KeyboardInterrupt``, the jobs go on."""
    def shown(statuses: list[JobStatus]) -> None:
        running = [s for s in statuses if not s.finished]
        progress.batch((running or statuses)[0].status, sum(s.completed for s in statuses),
                       sum(s.failed for s in statuses))

    return runner.call(wait_async(endpoint, job_ids, shown, FIRST_POLL, MOST_POLL))


def finish(progress: Any, rows: list[tuple[Any, Result]], line: str) -> None:
    """Fold the collected rows into the view and end it, on the loop that ran its refreshes."""
    async def ended() -> None:
        progress.collected(rows)
        progress.finish(line)

    runner.call(ended())


def rebuild(record: Record, outcomes: Mapping[str, Outcome], endpoint: Endpoint) -> Any:
    """The map a submitted record describes, with the rows as they were and stand-in requests.

    A stand-in carries what the log and the result need (messages as the
    batch line sent them, model, protocol, live price); each row keeps its
    original cache key, so a later live run of the cell finds it.
    """
    from ..datamap.run import Job, Rows, rows_of

    p = record.parameters
    values = [dict(zip(p["fields"], row)) for row in p["values"]]
    try:
        import pandas as pd

        rows = rows_of(pd.DataFrame(values, index=p["labels"], columns=p["fields"]))
    except ImportError:
        rows = Rows(values, values, list(p["fields"]), list(p["labels"]))
    price = tuple(p["price"]) if p.get("price") else None
    requests = [Request(messages=outcomes[custom_id(i)].messages if custom_id(i) in outcomes else (),
                        model=record.model, endpoint=endpoint, protocol=record.protocol or "chat", price=price)
                for i in range(len(values))]
    return Job(rows, requests, [""] * len(values), list(p["keys"]), record.group_id or "", p.get("format", "text"),
               outcomes=[None] * len(values))


def settle(job: Any, outcomes: Mapping[str, Outcome], positions: Sequence[int], log: RunLog | None,
           context: Mapping[str, Any], *, parameters: Mapping[str, Any] | None = None,
           write: bool = True) -> list[tuple[Any, Result]]:
    """Each row's outcome into the map (a ``not run`` row keeps its reason); the rows written to the log.

    ``parameters`` replace the stand-in requests' in the results (what the
    original requests sent); ``write`` is False when the rows were stored by
    an earlier collection.
    """
    settled = []
    for position in positions:
        found = outcomes.get(custom_id(position))
        if found is None or found.state == "not run":
            job.unrun[position] = found.error if found else _UNSEEN
            continue
        request = job.requests[position]
        result = result_of(found, request, parameters)
        job.settle(position, result)
        settled.append((job.label(position), result))
        if log is not None and write:
            log.write_async(record_from(result, request, group_id=job.id, group_kind=job.kind,
                                        cache_key=job.keys[position], **context))
    if log is not None and write:
        log.flush(_LOG_WAIT)
    return settled


def mark_collected(job: Any, job_ids: Sequence[str], log: RunLog | None, line: str,
                   context: Mapping[str, Any]) -> None:
    """Note in the log that these jobs were collected (running the cell again then submits anew)."""
    if log is not None and job.requests:
        log.write(_marker(job.requests[0], job.id, COLLECTED, {"batch_jobs": list(job_ids)}, line, "", context))


def result_of(outcome: Outcome, request: Request, parameters: Mapping[str, Any] | None = None) -> Result:
    """A batch line's outcome as the result of its request: the same fold of events as a live run, at half price.

    The service reports no timings for a line, so ``ttft`` and ``elapsed`` stay unknown.
    """
    result = Result.for_request(request)
    result.price = batch_price(request.price)
    if parameters is not None:
        result.parameters = dict(parameters)
    events: list[ev.Event] = [ev.Started(request_id=outcome.request_id)]
    events += [ev.ReasoningDelta(outcome.reasoning)] if outcome.reasoning else []
    events += [ev.TextDelta(outcome.answer)] if outcome.answer else []
    events += [outcome.usage] if outcome.usage is not None else []
    events += [ev.Finished(outcome.finish_reason)] if outcome.finish_reason else []
    events += [ev.Failed(outcome.error, kind=outcome.kind)] if outcome.state == "failed" else []
    for event in events:
        result.apply(event, at=result.started)
    result.close(at=result.started)
    result.ttft = result.elapsed = None
    return result


def plain_frame(outcomes: Mapping[str, Outcome]) -> Any:
    """Outcomes of jobs the log knows nothing about: one row per custom id (a list of dicts without pandas)."""
    rows = [{"custom_id": o.custom_id, "answer": o.answer if o.state == "complete" else None, "state": o.state,
             "error": o.error or None, "input_tokens": o.usage.input if o.usage else None,
             "output_tokens": o.usage.output if o.usage else None, "request_id": o.request_id}
            for o in outcomes.values()]
    try:
        import pandas as pd
    except ImportError:
        return rows
    return pd.DataFrame(rows, columns=["custom_id", "answer", "state", "error", "input_tokens", "output_tokens",
                                       "request_id"])


def _marker(request: Request, map_key: str, state: str, payload: dict[str, Any], line: str, template: str,
            context: Mapping[str, Any]) -> Record:
    """A ``batch`` record of the map: its jobs' submission or collection (no tokens, no cache key)."""
    return record_from(Result.for_request(request), request, group_id=map_key, group_kind="batch", state=state,
                       parameters=payload, answer=line, cache_key=None, cost=None,
                       messages=[{"role": "user", "content": template}] if template else [], **context)


def _ids(log: RunLog | None, sql: str, args: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    """Rows of a query on the log's file; none if there is no log (yet) or it cannot be read."""
    if log is None or not log.path.exists():
        return []
    log.flush(_LOG_WAIT)
    try:
        conn = log.connect()
    except sqlite3.Error:
        return []
    try:
        return conn.execute(sql, args).fetchall()
    except sqlite3.Error:
        return []
    finally:
        conn.close()


def _plain(value: Any) -> Any:
    """A row's value as JSON keeps it: numbers, text, booleans and None as they are, numpy scalars unwrapped."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    item = getattr(value, "item", None)
    if callable(item):
        try:
            value = item()
        except (TypeError, ValueError):
            return str(value)
        return value if value is None or isinstance(value, (str, int, float, bool)) else str(value)
    return str(value)
