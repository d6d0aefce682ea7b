"""What a finished batch job answered, per request: read from its output and error files.

Answers come back in any order and are matched by ``custom_id``.  A failed
line reads like a failed live request (the same one-line errors, e.g.
"Content moderation refused the input ..."), whichever of the two error shapes
the service used; a request in neither file (the job expired, was cancelled or
failed validation) is ``not run``, with the reason.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any, Iterator, Literal, Sequence

from ..backends.common import detail
from ..backends.errors import from_status
from ..errors import InvalidInput
from ..events import Usage
from ..request import Endpoint, Request
from .jobs import JobStatus, _client, _translated, status_async

State = Literal["complete", "failed", "not run"]


@dataclass(frozen=True)
class Outcome:
    """One request's result in a finished job."""

    custom_id: str
    state: State
    answer: str = ""
    reasoning: str = ""
    usage: Usage | None = None
    finish_reason: str | None = None
    request_id: str | None = None
    error: str = ""
    """The one-line error of a failed or not-run request."""
    kind: str = ""
    """The error's class (``ContentBlocked``, ``RateLimited``, ``ServerError``...), for counting failures by cause."""
    job_id: str = ""
    messages: tuple[dict[str, Any], ...] = ()
    """The messages of the request, as its line in the input file sent them."""


async def collect_async(endpoint: Endpoint, job_ids: Sequence[str]) -> dict[str, Outcome]:
    """Every request of the jobs, by custom id, in input order; a job still running is refused in one line."""
    outcomes: dict[str, Outcome] = {}
    for job_id in job_ids:
        job = await status_async(endpoint, job_id)
        if not job.finished:
            raise InvalidInput(f"Batch job {job_id} is still {job.status} "
                               f"({job.completed + job.failed} of {job.total} done)",
                               "wait for it to finish (wait, %qwen_batch wait), then collect")
        bodies = {row["custom_id"]: row.get("body") if isinstance(row.get("body"), dict) else {}
                  for row in _rows(await _download(endpoint, job.input_file_id))}
        found: dict[str, Outcome] = {}
        for file_id in (job.output_file_id, job.error_file_id):
            for row in _rows(await _download(endpoint, file_id)) if file_id else ():
                cid = row["custom_id"]
                if cid in bodies:
                    found[cid] = _outcome(row, _line_request(endpoint, str(bodies[cid].get("model", ""))), job_id)
        for cid, body in bodies.items():
            messages = body.get("messages")
            outcomes[cid] = replace(found.get(cid) or _not_run(cid, job),
                                    messages=tuple(m for m in messages if isinstance(m, dict))
                                    if isinstance(messages, list) else ())
    return outcomes


async def _download(endpoint: Endpoint, file_id: str) -> str:
    with _translated(endpoint, f"Batch file {file_id!r}"):
        return (await _client(endpoint).files.content(file_id)).text


def _rows(text: str) -> Iterator[dict]:
    """A JSONL file's objects; a line that is not one is skipped (its request, if any, stays ``not run``)."""
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and isinstance(row.get("custom_id"), str):
            yield row


def _line_request(endpoint: Endpoint, model: str) -> Request:
    """A request standing for one batch line when its error is worded: no retries, as the service ran it once."""
    return Request(messages=(), model=model, endpoint=replace(endpoint, max_retries=0))


def _outcome(row: dict, request: Request, job_id: str) -> Outcome:
    cid = str(row["custom_id"])
    response = row.get("response") if isinstance(row.get("response"), dict) else {}
    status = response.get("status_code")
    body = response.get("body") if isinstance(response.get("body"), dict) else {}
    error = row.get("error")
    if error or (isinstance(status, int) and status >= 400):
        inner = error if isinstance(error, dict) else body.get("error", body)
        inner = inner if isinstance(inner, dict) else {}
        code = _text(inner.get("code")) or None
        failure = from_status(status if isinstance(status, int) else None, code, _text(inner.get("message")), request)
        return Outcome(cid, "failed", error=failure.line(), kind=type(failure).__name__,
                       request_id=_text(response.get("request_id")) or None, job_id=job_id)
    choices = body.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    message = choice.get("message") if isinstance(choice.get("message"), dict) else {}
    if not message:
        return Outcome(cid, "failed", error="The service returned no answer for this request. Run it again.",
                       kind="ServerError", job_id=job_id)
    usage = body.get("usage") if isinstance(body.get("usage"), dict) else {}
    return Outcome(
        cid, "complete", answer=_text(message.get("content")), reasoning=_text(message.get("reasoning_content")),
        usage=Usage(input=usage.get("prompt_tokens") or 0, output=usage.get("completion_tokens") or 0,
                    reasoning=detail(usage.get("completion_tokens_details"), "reasoning_tokens"),
                    cached=detail(usage.get("prompt_tokens_details"), "cached_tokens")),
        finish_reason=_text(choice.get("finish_reason")) or None,
        request_id=_text(response.get("request_id") or body.get("id")) or None, job_id=job_id)


def _not_run(cid: str, job: JobStatus) -> Outcome:
    again = "submit the rows that were not run again"
    reason, hint = {"failed": (job.line(), "fix those lines and submit again"),
                    "expired": (f"Not run: batch job {job.id} expired before this request ran", again),
                    "cancelled": (f"Not run: batch job {job.id} was cancelled before this request ran", again),
                    }.get(job.status, (f"Not run: batch job {job.id} returned no result for this request", again))
    return Outcome(cid, "not run", error=f"{reason}. {hint[0].upper()}{hint[1:]}.", kind="NotRun", job_id=job.id)


def _text(value: Any) -> str:
    """A field of the service's JSON as text (model output is untrusted: never assumed to be a string)."""
    return value if isinstance(value, str) else "" if value is None else str(value)
