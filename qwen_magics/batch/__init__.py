"""Many requests as Model Studio Batch jobs: half the price, answered within 24 hours.

The flow: :func:`check_batchable` refuses what the Batch API cannot run
before anything is sent; :func:`submit` builds the JSONL (one line per
request, matched back by its custom id), splits it into files of at most
50,000 lines and under 100 MB (one model each), uploads them and creates one
job per file; :func:`status` / :func:`wait` follow the jobs;
:func:`collect` reads their output and error files into one
:class:`Outcome` per request; :func:`cancel` and :func:`list_jobs` manage them.

Each has an ``*_async`` form for the package's event loop; the plain forms
block the caller (a cell) and stop waiting on Ctrl-C.  A job lives at the
service, not in the kernel: interrupting a wait, or losing the kernel, leaves
it running, to be collected later by its id.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

from ..request import Endpoint, Request
from .jobs import FINISHED, JobStatus, cancel_async, list_jobs_async, status_async, submit_async, wait_async
from .lines import (
    BATCH_REGIONS,
    MAX_FILE_BYTES,
    MAX_LINES,
    TEST_MODEL,
    batch_price,
    check_batchable,
    jsonl_lines,
    split_files,
)
from .outcomes import Outcome, collect_async

__all__ = ["BATCH_REGIONS", "FINISHED", "MAX_FILE_BYTES", "MAX_LINES", "TEST_MODEL", "JobStatus", "Outcome",
           "batch_price", "cancel", "cancel_async", "check_batchable", "collect", "collect_async", "jsonl_lines",
           "list_jobs", "list_jobs_async", "split_files", "status", "status_async", "submit", "submit_async",
           "wait", "wait_async"]


def _call(coroutine) -> Any:
    from ..runner import call

    return call(coroutine)


def submit(endpoint: Endpoint, requests: Sequence[Request], custom_ids: Sequence[str],
           metadata: Mapping[str, str] | None = None, *, max_lines: int = MAX_LINES,
           max_bytes: int = MAX_FILE_BYTES) -> list[str]:
    """Blocking :func:`submit_async`: the ids of the jobs created."""
    return _call(submit_async(endpoint, requests, custom_ids, metadata, max_lines=max_lines, max_bytes=max_bytes))


def status(endpoint: Endpoint, job_id: str) -> JobStatus:
    """Blocking :func:`status_async`."""
    return _call(status_async(endpoint, job_id))


def wait(endpoint: Endpoint, job_ids: Sequence[str], on_progress: Callable[[list[JobStatus]], Any] | None = None,
         poll_seconds: float = 5.0, max_poll_seconds: float | None = None) -> list[JobStatus]:
    """Blocking :func:`wait_async`; Ctrl-C stops waiting (``KeyboardInterrupt``), the jobs go on.

    ``on_progress`` runs on the package's event loop thread.
    """
    return _call(wait_async(endpoint, job_ids, on_progress, poll_seconds, max_poll_seconds))


def collect(endpoint: Endpoint, job_ids: Sequence[str]) -> dict[str, Outcome]:
    """Blocking :func:`collect_async`."""
    return _call(collect_async(endpoint, job_ids))


def cancel(endpoint: Endpoint, job_id: str) -> JobStatus:
    """Blocking :func:`cancel_async`."""
    return _call(cancel_async(endpoint, job_id))


def list_jobs(endpoint: Endpoint, limit: int = 20) -> list[JobStatus]:
    """Blocking :func:`list_jobs_async`."""
    return _call(list_jobs_async(endpoint, limit))
