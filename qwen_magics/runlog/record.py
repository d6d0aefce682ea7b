"""One logged run as plain data, built from a request and its result, with media and keys taken out.

:func:`record_from` reads a :class:`~qwen_magics.result.Result` and a
:class:`~qwen_magics.request.Request` by their attributes only, so it imports
neither.  Inline media (``data:`` URLs) become a short reference naming the type,
size and SHA-256 of the bytes; every text passes through
:func:`~qwen_magics.errors.redact`.  :func:`cache_key_of` hashes what decides an
answer (endpoint, protocol, model, messages, every parameter), never the key.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import json
import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable
from urllib.parse import urlsplit, urlunsplit

from ..errors import redactor

_DATA_URL = re.compile(r"data:([\w.+-]+/[\w.+-]+);base64,([A-Za-z0-9+/=]+)")


@dataclass
class Record:
    """What the log keeps of one run; JSON columns hold Python lists and dicts here."""

    model: str = ""
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    started: str = field(default_factory=lambda: utc_iso(datetime.now(timezone.utc)))
    protocol: str = ""
    endpoint: str = ""
    messages: list[dict[str, Any]] = field(default_factory=list)
    parameters: dict[str, Any] = field(default_factory=dict)
    answer: str = ""
    reasoning: str = ""
    tool_runs: list[Any] = field(default_factory=list)
    finish_reason: str | None = None
    state: str = "complete"
    error: str | None = None
    input_tokens: int | None = 0
    """None (all four) when the server reported no token counts."""
    output_tokens: int | None = 0
    reasoning_tokens: int | None = 0
    cached_tokens: int | None = 0
    ttft: float | None = None
    elapsed: float | None = None
    request_id: str | None = None
    conversation: str | None = None
    group_id: str | None = None
    group_kind: str | None = None
    notebook: str | None = None
    kernel_id: str | None = None
    cost: float | None = None
    cache_key: str | None = None
    logprobs: list[Any] | None = field(default_factory=list)
    """``[token, logprob, [[alternative, logprob], ...], entropy]`` per generated token (--logprobs K);
    entropy in bits, None where only the top K were known.  None for a run logged before this column."""

    def __repr__(self) -> str:
        head = self.prompt.split("\n", 1)[0]
        head = head[:40] + ("…" if len(head) > 40 else "")
        return f"<Record {self.id[:8]} {self.started[:19]} {self.model} {self.state} prompt={head!r}>"

    @property
    def prompt(self) -> str:
        """The text of the last user message (what the run was asked)."""
        for message in reversed(self.messages):
            if message.get("role") == "user":
                return _text_of(message.get("content"))
        return ""


def utc_iso(moment: datetime) -> str:
    """``2025-01-31T12:00:00.000000+00:00``: one fixed width, so text order is time order."""
    return moment.astimezone(timezone.utc).isoformat(timespec="microseconds")


def record_from(result: Any, request: Any, **context: Any) -> Record:
    """The record of ``result``, answered for ``request``.

    ``context`` fills the rest: ``conversation``, ``group_id``, ``group_kind``,
    ``notebook``, ``kernel_id``, ``started`` (UTC ISO text; by default now
    less the run's elapsed time), and ``cache_key`` where the caller already
    has it (a map computes every row's key to resume).
    """
    endpoint = request.endpoint
    clean = redactor("DASHSCOPE_API_KEY", getattr(endpoint, "api_key_env", "DASHSCOPE_API_KEY"))
    usage = result.total_usage  # with --tools: every round's, as the cost is
    counted = usage is not None
    fields: dict[str, Any] = dict(
        model=result.model, protocol=request.protocol, endpoint=endpoint.region or _bare_url(endpoint.base_url),
        messages=without_media(list(result.messages or request.messages)), parameters=result.parameters,
        answer=result.text, reasoning=result.reasoning, tool_runs=[_plain(run) for run in result.tool_runs],
        finish_reason=result.finish_reason, state=result.state, error=result.error,
        input_tokens=usage.input if counted else None, output_tokens=usage.output if counted else None,
        reasoning_tokens=usage.reasoning if counted else None, cached_tokens=usage.cached if counted else None,
        ttft=result.ttft, elapsed=result.elapsed, request_id=result.request_id,
        cost=result.cost, logprobs=[[e.token, e.logprob, [list(alt) for alt in e.top], getattr(e, "entropy", None)]
                                    for e in getattr(result, "logprobs", None) or ()])
    if "started" not in context:
        fields["started"] = utc_iso(datetime.now(timezone.utc) - timedelta(seconds=result.elapsed or 0))
    if "cache_key" not in context:
        fields["cache_key"] = cache_key_of(request)
    fields.update(context)
    return Record(**{name: _redacted(value, clean) for name, value in fields.items()})  # copies what it cleans


def cache_key_of(request: Any) -> str:
    """A SHA-256 of everything that decides the answer: same request, same key; any change, another key.

    Covers the endpoint (base URL and region), protocol, model, messages (media
    bytes included) and every parameter, seed too, plus the full response
    format and tool definitions, of which ``parameters()`` names only the kind.
    """
    endpoint = request.endpoint
    material = {
        "endpoint": [endpoint.base_url, endpoint.region], "protocol": request.protocol, "model": request.model,
        "messages": list(request.messages), "parameters": request.parameters(),
        "response_format": getattr(request, "response_format", None), "tools": getattr(request, "tools", None),
    }
    return hashlib.sha256(_KEY_TEXT(material).encode()).hexdigest()


def without_media(value: Any) -> Any:
    """``value`` with every base64 ``data:`` URL replaced by a reference to its bytes."""
    if isinstance(value, str):
        return _DATA_URL.sub(_reference, value) if "data:" in value else value
    if isinstance(value, dict):
        return {k: without_media(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [without_media(v) for v in value]
    return value


def _reference(match: re.Match[str]) -> str:
    try:
        data = base64.b64decode(match.group(2))
    except (binascii.Error, ValueError):
        return f"data:{match.group(1)};base64,… (undecodable)"
    return f"data:{match.group(1)};base64,… ({len(data):,} bytes, sha256 {hashlib.sha256(data).hexdigest()[:12]}…)"


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(part["text"] for part in content
                         if isinstance(part, dict) and isinstance(part.get("text"), str))
    return ""


def _bare_url(url: str) -> str:
    """The URL without user info, query or fragment (where a token could hide)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", "")) if parts.netloc else url


def _plain(value: Any) -> Any:
    """JSON-ready: dataclasses become dicts, anything else unknown its text."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, (dict, list, str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    if isinstance(value, tuple):
        return list(value)
    return str(value)


_KEY_TEXT = json.JSONEncoder(sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=_plain).encode
"""The text a cache key hashes (an encoder made once: ``json.dumps`` makes one per call)."""


def _redacted(value: Any, clean: Callable[[str], str]) -> Any:
    """``value`` with every text cleaned, in new lists and dicts (the result's own are left as they are)."""
    if isinstance(value, str):
        return clean(value)
    if isinstance(value, dict):
        return {k: _redacted(v, clean) for k, v in value.items()}
    if isinstance(value, list):
        return [_redacted(v, clean) for v in value]
    return value
