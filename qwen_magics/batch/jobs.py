"""Batch jobs on Model Studio through the official ``openai`` SDK: submit, status, wait, cancel, list.

Each call goes through the endpoint's one ``AsyncOpenAI`` client, so the
SDK's retries (429 with ``Retry-After``, server errors) cover uploads,
creation and polling, and every error that remains becomes one
:class:`~qwen_magics.errors.QwenMagicsError` line.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Sequence

from ..errors import InvalidInput, QwenMagicsError
from ..request import Endpoint, Request
from .lines import MAX_FILE_BYTES, MAX_LINES, check_batchable, jsonl_lines, split_files

#: Statuses after which a job changes no more.
FINISHED = frozenset({"completed", "failed", "expired", "cancelled"})
SOURCE = "qwen-magics"  # ``metadata.source`` of the jobs this package creates
_SHOWN_ERRORS = 3


@dataclass(frozen=True)
class JobStatus:
    """One job as the service last reported it."""

    id: str
    status: str
    total: int = 0
    completed: int = 0
    failed: int = 0
    errors: tuple[str, ...] = ()
    """Why validation failed, one ``line N: message (code)`` each."""
    output_file_id: str | None = None
    error_file_id: str | None = None
    input_file_id: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    created_at: int = 0

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    def line(self) -> str:
        """The job in one line, e.g. ``batch_1: in_progress, 40 of 100 done (2 failed)``."""
        if self.status == "failed":
            shown = "; ".join(self.errors[:_SHOWN_ERRORS]) or "no reason given"
            more = f" (and {len(self.errors) - _SHOWN_ERRORS} more)" if len(self.errors) > _SHOWN_ERRORS else ""
            return f"Batch job {self.id} failed validation: {shown}{more}"
        failed = f" ({self.failed} failed)" if self.failed else ""
        return f"{self.id}: {self.status}, {self.completed + self.failed} of {self.total} done{failed}"


async def submit_async(endpoint: Endpoint, requests: Sequence[Request], custom_ids: Sequence[str],
                       metadata: Mapping[str, str] | None = None, *, max_lines: int = MAX_LINES,
                       max_bytes: int = MAX_FILE_BYTES) -> list[str]:
    """Upload the requests as JSONL files and create one job per file; their ids.

    Checked before anything is uploaded (see
    :func:`~qwen_magics.batch.lines.check_batchable`).  ``metadata`` (string
    values, e.g. the run log's job key) goes on every job, with ``source`` and
    ``part`` ("2/3").  All or nothing: if an upload or a creation fails, the
    jobs already created are cancelled and the files deleted before the error
    is raised.
    """
    check_batchable(requests)
    files = split_files(jsonl_lines(requests, custom_ids), max_lines, max_bytes)
    client = _client(endpoint)
    uploaded: list[str] = []
    created: list[str] = []
    try:
        with _translated(endpoint, "The batch upload"):
            for i, lines in enumerate(files, 1):
                data = ("\n".join(lines) + "\n").encode()
                uploaded.append((await client.files.create(file=(f"qwen-magics-{i}.jsonl", data),
                                                           purpose="batch")).id)
            for i, (file_id, lines) in enumerate(zip(uploaded, files), 1):
                tags = {**{k: str(v) for k, v in (metadata or {}).items()}, "source": SOURCE,
                        "part": f"{i}/{len(files)}"}
                job = await client.batches.create(input_file_id=file_id, endpoint=json.loads(lines[0])["url"],
                                                  completion_window="24h", metadata=tags)
                created.append(job.id)
    except BaseException:
        for job_id in created:
            with contextlib.suppress(Exception):
                await client.batches.cancel(job_id)
        for file_id in uploaded:
            with contextlib.suppress(Exception):
                await client.files.delete(file_id)
        raise
    return created


async def status_async(endpoint: Endpoint, job_id: str) -> JobStatus:
    """The job as it is now."""
    with _translated(endpoint, f"Batch job {job_id!r}"):
        return _status(await _client(endpoint).batches.retrieve(job_id))


async def wait_async(endpoint: Endpoint, job_ids: Sequence[str],
                     on_progress: Callable[[list[JobStatus]], Any] | None = None,
                     poll_seconds: float = 5.0, max_poll_seconds: float | None = None) -> list[JobStatus]:
    """Poll until every job has finished; ``on_progress`` gets each round's statuses.

    The pause between rounds is ``poll_seconds``; with ``max_poll_seconds``
    it grows by half each round up to that, so a short job is seen finishing
    soon and a long one is not polled thousands of times.  Cancelling the
    wait (Ctrl-C in :func:`wait`) stops only the waiting: the jobs go on at
    the service, to be waited for or collected later.
    """
    pause = poll_seconds
    while True:
        statuses = [await status_async(endpoint, job_id) for job_id in job_ids]
        if on_progress is not None:
            on_progress(statuses)
        if all(s.finished for s in statuses):
            return statuses
        await asyncio.sleep(pause)
        pause = min(max_poll_seconds, pause * 1.5) if max_poll_seconds is not None else pause


async def cancel_async(endpoint: Endpoint, job_id: str) -> JobStatus:
    """Ask the service to cancel a job (requests already finished stay billed and are kept)."""
    with _translated(endpoint, f"Batch job {job_id!r}"):
        return _status(await _client(endpoint).batches.cancel(job_id))


async def list_jobs_async(endpoint: Endpoint, limit: int = 20) -> list[JobStatus]:
    """The account's most recent jobs, newest first (every job, not only this package's)."""
    with _translated(endpoint, "The batch list"):
        page = await _client(endpoint).batches.list(limit=limit)
    return [_status(batch) for batch in page.data]


def _status(batch: Any) -> JobStatus:
    counts = batch.request_counts
    errors = getattr(batch.errors, "data", None) or ()
    return JobStatus(
        id=batch.id, status=batch.status,
        total=counts.total if counts else 0, completed=counts.completed if counts else 0,
        failed=counts.failed if counts else 0,
        errors=tuple(f"{f'line {e.line}: ' if e.line else ''}{e.message}{f' ({e.code})' if e.code else ''}"
                     for e in errors),
        output_file_id=batch.output_file_id, error_file_id=batch.error_file_id,
        input_file_id=batch.input_file_id, metadata=dict(batch.metadata or {}), created_at=batch.created_at)


def _client(endpoint: Endpoint):
    from ..backends.openai_chat import client_for

    return client_for(endpoint)


@contextlib.contextmanager
def _translated(endpoint: Endpoint, what: str) -> Iterator[None]:
    """SDK errors as one line; a 404 names ``what`` (a job or file id), not a model."""
    try:
        yield
    except QwenMagicsError:
        raise
    except Exception as err:  # noqa: BLE001 - every SDK/transport error becomes one clear line
        import openai

        from ..backends.errors import translate

        if isinstance(err, openai.NotFoundError):
            where = endpoint.region or endpoint.base_url
            raise InvalidInput(f"{what} was not found at {where} (404)",
                               "check the id against the job list (list_jobs, %qwen_batch list); "
                               "a server without the Batch API has no such routes") from err
        raise translate(err, Request(messages=(), model="Batch API", endpoint=endpoint)) from err
