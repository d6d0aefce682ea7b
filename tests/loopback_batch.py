"""The loopback server's Batch API: files and batch jobs, as Model Studio's OpenAI-compatible Batch.

:mod:`loopback` routes ``/compatible-mode/v1/files`` and ``/compatible-mode/v1/batches`` here.  Every
route needs the key (a wrong one is the chat route's 401).

* ``POST /files`` (multipart ``file`` + ``purpose=batch``) stores a file, id ``file-batch-…``;
  ``GET /files/{id}``, ``GET /files/{id}/content``, ``DELETE /files/{id}``.
* ``POST /batches`` ``{"input_file_id", "endpoint", "completion_window": "24h", "metadata"}``;
  ``GET /batches/{id}``, ``GET /batches`` (``limit``, ``after``; newest first),
  ``POST /batches/{id}/cancel``.

A job advances with time, worked out whenever it is looked at (no thread), by the
:class:`BatchTiming` the server had when the job was created: ``validating`` for ``validate`` s,
then ``in_progress`` running one line every ``per_line`` s in a shuffled order (so answers come
back in any order, ``request_counts`` growing), then ``finalizing`` for ``finalize`` s, then
``completed`` with an output file and, when any line failed, an error file.  ``expire_after`` s
into the run the job ends ``expired``; a cancel makes it ``cancelling`` for ``finalize`` s, then
``cancelled``.  Both keep the lines finished by then, in their files; the others are in neither.

Validation fails the job (``failed``, ``errors.data[]`` of ``{"code", "message", "line"}``, lines
counted from 1) for: a line that is not a JSON object, a missing or repeated ``custom_id``, a
method other than POST, a ``url`` other than the job's endpoint, ``stream`` set, a model other
than line 1's, a line over 6 MB, more than 50,000 lines; on ``/v1/chat/ds-test`` a model other
than ``batch-test-model`` or more than 100 lines / 1 MB.

Each valid line is answered as the chat route would answer it without streaming (its checks,
``[[blocked]]`` moderation, default texts), taking ``Batches.scripts[custom_id]`` when there is
one (``Script(status=500)``, ``Script(status=429)``, ``Script(fault="moderation_mid")`` for a
refused answer, or any text/usage).  A failed line goes to the error file in one of the two
shapes the reference allows, chosen by ``Batches.error_shape``: ``"response"`` (``response``
with ``status_code`` >= 400 and an error body) or ``"error"`` (``response`` null and
``error: {"code", "message"}``).  ``batch-test-model`` lines get a fixed test answer, no usage.
"""

from __future__ import annotations

import json
import math
import random
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal, Optional
from urllib.parse import parse_qs, urlsplit

if __package__:
    from .loopback import (BATCHES_PATH, FILES_PATH, Script, _dumps, _error_body, _STATUS_CODES, chat_answer,
                           check_chat_body, completion_object)
else:
    from loopback import (BATCHES_PATH, FILES_PATH, Script, _dumps, _error_body, _STATUS_CODES, chat_answer,
                          check_chat_body, completion_object)

CHAT_URL = "/v1/chat/completions"
TEST_URL = "/v1/chat/ds-test"
TEST_MODEL = "batch-test-model"
TEST_ANSWER = "This is a test result."
MAX_LINES, MAX_LINE_BYTES = 50_000, 6 * 1024 * 1024
TEST_MAX_LINES, TEST_MAX_BYTES = 100, 1024 * 1024
_TERMINAL = {"completed", "failed", "expired", "cancelled"}


@dataclass(frozen=True)
class BatchTiming:
    """How fast a job moves (seconds); ``expire_after`` counts from the end of validation."""

    validate: float = 0.05
    per_line: float = 0.001
    finalize: float = 0.05
    expire_after: Optional[float] = None


@dataclass
class _File:
    id: str
    filename: str
    purpose: str
    data: bytes
    created_at: int = field(default_factory=lambda: int(time.time()))

    def obj(self) -> dict:
        return {"id": self.id, "object": "file", "bytes": len(self.data), "created_at": self.created_at,
                "filename": self.filename, "purpose": self.purpose, "status": "processed"}


@dataclass
class _Job:
    id: str
    input_file_id: str
    endpoint: str
    metadata: Optional[dict]
    timing: BatchTiming
    lines: list[tuple[int, dict]]  # (line number, parsed line) of a valid file
    errors: list[dict]  # validation errors: the job fails
    started: float = field(default_factory=time.monotonic)
    created_at: int = field(default_factory=lambda: int(time.time()))
    order: list[int] = field(default_factory=list)  # the order the lines run in
    outcomes: list[dict] = field(default_factory=list)  # output/error-file line per entry of ``lines``
    cancel_at: Optional[float] = None
    output_file_id: Optional[str] = None
    error_file_id: Optional[str] = None
    written: bool = False


class Batches:
    """Files and jobs of one server, and the knobs tests turn."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.timing = BatchTiming()
        self.scripts: dict[str, Script] = {}
        self.error_shape: Literal["response", "error"] = "response"
        self.files: dict[str, _File] = {}
        self.jobs: dict[str, _Job] = {}

    def clear(self) -> None:
        with self.lock:
            self.timing = BatchTiming()
            self.scripts.clear()
            self.error_shape = "response"
            self.files.clear()
            self.jobs.clear()

    def uploads(self) -> list[bytes]:
        """The contents of every file a client uploaded (not the output files)."""
        with self.lock:
            return [f.data for f in self.files.values() if f.purpose == "batch"]


# ---------------------------------------------------------------- routes

def serve(h, route: str, body: Any) -> None:
    """Answer one files or batches request on handler ``h``."""
    rid = str(uuid.uuid4())
    owner = h.server.owner
    if not owner._authorized(h.headers.get("Authorization")):
        h._send_error(401, _error_body("invalid_api_key", None, rid), rid)
        return
    store: Batches = owner.batches
    method = h.command
    base = FILES_PATH if route.startswith(FILES_PATH) else BATCHES_PATH
    parts = [p for p in route[len(base):].split("/") if p]
    with store.lock:
        if base == FILES_PATH:
            answer = _files(h, store, method, parts, rid)
        else:
            answer = _batches(store, owner.models, method, parts, body, urlsplit(h.path).query, rid)
    if answer is None:
        answer = 404, _error_body("not_found", f"Not found: {method} {route}", rid)
    status, payload = answer
    if isinstance(payload, bytes):
        h._start(status, "application/octet-stream", rid, None, len(payload))
        h.wfile.write(payload)
    elif status >= 400:
        h._send_error(status, payload, rid)
    else:
        h._send_json(status, payload, rid)


def _files(h, store: Batches, method: str, parts: list[str], rid: str) -> Optional[tuple[int, Any]]:
    if method == "POST" and not parts:
        fields = _multipart(h.headers.get("Content-Type", ""), h._raw)
        upload, purpose = fields.get("file"), fields.get("purpose", (None, b""))[1].decode()
        if purpose != "batch":
            return 400, _error_body("invalid_parameter_error", f"purpose must be 'batch', not {purpose!r}", rid)
        if upload is None or not upload[1].strip():
            return 400, _error_body("invalid_parameter_error", "The file is missing or empty.", rid)
        new = _File(f"file-batch-{uuid.uuid4().hex}", upload[0] or "upload.jsonl", "batch", upload[1])
        store.files[new.id] = new
        return 200, new.obj()
    found = store.files.get(parts[0]) if parts else None
    if found is None:
        return (404, _error_body("not_found", f"No such file: {parts[0]}", rid)) if parts else None
    if method == "GET" and len(parts) == 1:
        return 200, found.obj()
    if method == "GET" and parts[1:] == ["content"]:
        return 200, found.data
    if method == "DELETE" and len(parts) == 1:
        del store.files[found.id]
        return 200, {"id": found.id, "object": "file", "deleted": True}
    return None


def _batches(store: Batches, models: set[str], method: str, parts: list[str], body: Any, query: str,
             rid: str) -> Optional[tuple[int, Any]]:
    if method == "POST" and not parts:
        return _create(store, models, body, rid)
    if method == "GET" and not parts:
        args = parse_qs(query)
        jobs = sorted(store.jobs.values(), key=lambda j: j.started, reverse=True)
        after = (args.get("after") or [None])[0]
        if after in store.jobs:
            jobs = jobs[[j.id for j in jobs].index(after) + 1:]
        limit = int((args.get("limit") or ["20"])[0])
        page = [_look(store, job) for job in jobs[:limit]]
        return 200, {"object": "list", "data": page, "first_id": page[0]["id"] if page else None,
                     "last_id": page[-1]["id"] if page else None, "has_more": len(jobs) > limit}
    job = store.jobs.get(parts[0]) if parts else None
    if job is None:
        return (404, _error_body("not_found", f"No such batch: {parts[0]}", rid)) if parts else None
    if method == "GET" and len(parts) == 1:
        return 200, _look(store, job)
    if method == "POST" and parts[1:] == ["cancel"]:
        if _state(job, time.monotonic())[0] not in _TERMINAL and job.cancel_at is None:
            job.cancel_at = time.monotonic()
        return 200, _look(store, job)
    return None


def _create(store: Batches, models: set[str], body: Any, rid: str) -> tuple[int, dict]:
    body = body if isinstance(body, dict) else {}
    source = store.files.get(str(body.get("input_file_id")))
    endpoint = body.get("endpoint")
    if source is None or source.purpose != "batch":
        return 400, _error_body("invalid_parameter_error", f"input_file_id {body.get('input_file_id')!r} is not "
                                "an uploaded batch file", rid, param="input_file_id")
    if endpoint not in (CHAT_URL, TEST_URL):
        return 400, _error_body("invalid_parameter_error", f"endpoint must be {CHAT_URL} or {TEST_URL}", rid,
                                param="endpoint")
    if body.get("completion_window") != "24h":
        return 400, _error_body("invalid_parameter_error", "completion_window must be '24h'", rid,
                                param="completion_window")
    lines, errors = _validate(source.data, endpoint)
    job = _Job(f"batch_{uuid.uuid4()}", source.id, endpoint, body.get("metadata"), store.timing, lines, errors)
    job.order = random.Random(job.id).sample(range(len(lines)), len(lines))
    job.outcomes = [_answer(store, models, endpoint, line) for _, line in lines]
    store.jobs[job.id] = job
    return 200, _look(store, job)


# ---------------------------------------------------------------- validation and answers

def _validate(data: bytes, endpoint: str) -> tuple[list[tuple[int, dict]], list[dict]]:
    """The file's lines, and the errors that fail the job (empty when it is valid)."""
    lines: list[tuple[int, dict]] = []
    errors: list[dict] = []
    seen: set[str] = set()
    first_model: Optional[str] = None
    raw_lines = [(n, raw) for n, raw in enumerate(data.split(b"\n"), 1) if raw.strip()]

    def bad(code: str, message: str, line: Optional[int]) -> None:
        errors.append({"code": code, "message": message, "param": None, "line": line})

    limit = TEST_MAX_LINES if endpoint == TEST_URL else MAX_LINES
    if len(raw_lines) > limit:
        bad("too_many_lines", f"The file has {len(raw_lines)} lines; at most {limit} are allowed.", None)
    if endpoint == TEST_URL and len(data) > TEST_MAX_BYTES:
        bad("file_too_large", f"Files for {TEST_MODEL} are limited to 1 MB.", None)
    for n, raw in raw_lines:
        try:
            line = json.loads(raw)
        except ValueError:
            line = None
        if not isinstance(line, dict) or not isinstance(line.get("body"), dict):
            bad("invalid_json_line", "The line is not a JSON object with a body.", n)
            continue
        body, cid = line["body"], line.get("custom_id")
        if len(raw) > MAX_LINE_BYTES:
            bad("line_too_large", "The line is larger than 6 MB.", n)
        elif not isinstance(cid, str) or not cid or cid in seen:
            bad("duplicate_custom_id" if cid in seen else "missing_custom_id",
                f"custom_id {cid!r} is missing or not unique.", n)
        elif line.get("method") != "POST":
            bad("invalid_method", "method must be POST.", n)
        elif line.get("url") != endpoint:
            bad("invalid_url", f"url {line.get('url')!r} differs from the batch's endpoint {endpoint}.", n)
        elif "stream" in body or "stream_options" in body:
            bad("invalid_body", "stream must not be set in a batch line.", n)
        elif first_model is not None and body.get("model") != first_model:
            bad("mixed_model", f"model {body.get('model')!r} differs from line 1's {first_model!r}: "
                "one model per file.", n)
        elif endpoint == TEST_URL and body.get("model") != TEST_MODEL:
            bad("invalid_model", f"{TEST_URL} takes model {TEST_MODEL}.", n)
        else:
            first_model = first_model or body.get("model")
            seen.add(cid)
            lines.append((n, line))
    return lines, errors


def _answer(store: Batches, models: set[str], endpoint: str, line: dict) -> dict:
    """The output- or error-file line for one valid input line."""
    body, cid = line["body"], line["custom_id"]
    rid = str(uuid.uuid4())
    out = {"id": f"batch_req_{uuid.uuid4().hex}", "custom_id": cid}
    if endpoint == TEST_URL:
        script = Script(text=TEST_ANSWER, reasoning="", usage={"prompt_tokens": 0, "completion_tokens": 0,
                                                                "total_tokens": 0})
        return {**out, "response": {"status_code": 200, "request_id": rid, "body": _completion(body, script)},
                "error": None}
    script = store.scripts.get(cid) or Script()
    rid = script.request_id or rid
    refusal = check_chat_body(body, models, rid)
    if refusal is None and script.status is not None and script.status >= 400:
        code = script.error_code or _STATUS_CODES.get(script.status, "internal_error")
        refusal = script.status, _error_body(code, script.error_message, rid, type_=script.error_type)
    if refusal is None and script.fault == "moderation_mid":
        refusal = 400, _error_body("data_inspection_failed", "Output data may contain inappropriate content.", rid)
    if refusal is None:
        return {**out, "response": {"status_code": 200, "request_id": rid, "body": _completion(body, script)},
                "error": None}
    status, err = refusal
    if store.error_shape == "error":
        return {**out, "response": None, "error": {"code": err["error"]["code"], "message": err["error"]["message"]}}
    return {**out, "response": {"status_code": status, "request_id": rid, "body": err}, "error": None}


def _completion(body: dict, script: Script) -> dict:
    pieces, finish, usage = chat_answer(body, script)
    return completion_object(body, script, f"chatcmpl-{uuid.uuid4()}", pieces, finish, usage)


# ---------------------------------------------------------------- time

def _state(job: _Job, now: float) -> tuple[str, int, dict[str, float]]:
    """The job's status at ``now``, how many lines (of ``job.order``) have run, and when each phase began."""
    t = job.timing
    begun = job.started + t.validate
    marks = {"created": job.started}
    stop_cancel = job.cancel_at if job.cancel_at is not None else math.inf
    if now < begun and stop_cancel > now:
        return "validating", 0, marks
    if job.errors and stop_cancel >= begun:
        return "failed", 0, {**marks, "failed": begun}
    marks["in_progress"] = begun
    run_end = begun + len(job.lines) * t.per_line
    expiry = begun + t.expire_after if t.expire_after is not None else math.inf
    stop = min(run_end, expiry, max(stop_cancel, begun) if job.cancel_at is not None else math.inf)
    done = len(job.lines) if t.per_line <= 0 else int(min(len(job.lines), (min(now, stop) - begun) / t.per_line + 1e-9))
    if stop_cancel < run_end:
        if now < job.cancel_at + t.finalize:
            return "cancelling", done, {**marks, "cancelling": job.cancel_at}
        return "cancelled", done, {**marks, "cancelling": job.cancel_at, "cancelled": job.cancel_at + t.finalize}
    if now < stop:
        return "in_progress", done, marks
    if stop == expiry and expiry < run_end:
        return "expired", done, {**marks, "expired": expiry}
    if now < run_end + t.finalize:
        return "finalizing", done, {**marks, "finalizing": run_end}
    return "completed", done, {**marks, "finalizing": run_end, "completed": run_end + t.finalize}


def _look(store: Batches, job: _Job) -> dict:
    """The batch object as of now, writing its output and error files once it has ended (lock held)."""
    status, done, marks = _state(job, time.monotonic())
    finished = [job.outcomes[i] for i in job.order[:done]]
    failed = sum(1 for o in finished if o["error"] is not None or o["response"]["status_code"] >= 400)
    if status in _TERMINAL and status != "failed" and not job.written:
        job.written = True
        good = [o for o in finished if o["error"] is None and o["response"]["status_code"] < 400]
        bad = [o for o in finished if o not in good]
        job.output_file_id = _output_file(store, job, "output", good)
        job.error_file_id = _output_file(store, job, "error", bad) if bad else None
    wall = time.time() - time.monotonic()  # monotonic -> epoch
    stamps = {f"{k}_at": int(wall + v) for k, v in marks.items() if k != "created"}
    return {"id": job.id, "object": "batch", "endpoint": job.endpoint, "input_file_id": job.input_file_id,
            "completion_window": "24h", "status": status, "output_file_id": job.output_file_id,
            "error_file_id": job.error_file_id, "created_at": job.created_at,
            "expires_at": job.created_at + 86_400, "metadata": job.metadata,
            "errors": {"object": "list", "data": job.errors} if status == "failed" else None,
            "request_counts": {"total": len(job.lines), "completed": done - failed, "failed": failed},
            **stamps}


def _output_file(store: Batches, job: _Job, kind: str, rows: list[dict]) -> str:
    data = b"".join(_dumps(row) + b"\n" for row in rows)
    new = _File(f"file-batch_{kind}-{uuid.uuid4().hex}", f"{job.id}_{kind}.jsonl", "batch_output", data)
    store.files[new.id] = new
    return new.id


def _multipart(content_type: str, raw: bytes) -> dict[str, tuple[Optional[str], bytes]]:
    """The fields of a multipart/form-data body: name -> (filename, value)."""
    boundary = next((p.split("=", 1)[1].strip('"') for p in content_type.split(";")
                     if p.strip().startswith("boundary=")), None)
    if boundary is None:
        return {}
    fields: dict[str, tuple[Optional[str], bytes]] = {}
    for part in raw.split(b"--" + boundary.encode())[1:]:
        head, _, value = part.partition(b"\r\n\r\n")
        disposition = next((line for line in head.decode("utf-8", "replace").split("\r\n")
                            if line.lower().startswith("content-disposition")), "")
        params = dict(p.strip().split("=", 1) for p in disposition.split(";")[1:] if "=" in p)
        if "name" in params:
            filename = params.get("filename")
            fields[params["name"].strip('"')] = (filename.strip('"') if filename else None, value[:-2])
    return fields
