"""The input files of a Model Studio Batch job: which requests may go, their JSONL lines, the split.

Everything here runs before anything is uploaded, so a request the Batch API
cannot take is refused in one line while nothing has been sent.
"""

from __future__ import annotations

import json
from typing import Any, Sequence

from ..errors import InvalidInput
from ..models import is_local
from ..request import Request
from ..tokens.prices import Price

#: The regions whose hosts offer the Batch API.
BATCH_REGIONS = ("singapore", "beijing")
#: The models Singapore runs as batches (Beijing offers many more, and reports an unknown one at validation).
SINGAPORE_MODELS = ("qwen-max", "qwen-plus", "qwen-flash", "qwen-turbo")
#: The free test model: runs the whole flow without inference, on its own URL.
TEST_MODEL = "batch-test-model"
CHAT_URL = "/v1/chat/completions"
TEST_URL = "/v1/chat/ds-test"
MAX_LINES = 50_000
MAX_FILE_BYTES = 100_000_000  # the service allows more; an older page says 100 MB, so files stay under it
MAX_LINE_BYTES = 6_000_000


def check_batchable(requests: Sequence[Request]) -> None:
    """Refuse, in one line, requests the Batch API cannot run: local, another protocol, region or model.

    A ``--base-url`` server (no region) is allowed: OpenAI-compatible servers
    may offer the same ``/files`` and ``/batches`` routes, and one that does
    not answers the upload with a 404, reported in one line.  ``stream`` is
    not refused: batch lines are built with streaming off.
    """
    if not requests:
        raise InvalidInput("Nothing to send as a batch: there are no requests", "give at least one row")
    if len({r.endpoint for r in requests}) > 1:
        raise InvalidInput("A batch goes to one endpoint, but these requests name several",
                           "give every row the same --region / --base-url")
    for model, protocol, region in {(r.model, r.protocol, r.endpoint.region) for r in requests}:
        if is_local(model) or protocol == "local":
            raise InvalidInput("The local model has no batch mode",
                               "drop --batch to map the rows locally, or pick a Model Studio model with -m")
        if protocol != "chat":
            raise InvalidInput(f"--api {protocol} has no batch mode", "use --api chat (the default) with --batch")
        if region is not None and region not in BATCH_REGIONS:
            raise InvalidInput(f"Model Studio offers no Batch API in the {region} region",
                               "use --region singapore or --region beijing, with a key from that region")
        if region == "singapore" and not _in_singapore(model):
            raise InvalidInput(f"Model {model!r} has no batch mode in singapore",
                               f"use {', '.join(SINGAPORE_MODELS)} (or {TEST_MODEL} to try the flow for free), "
                               "or --region beijing, which offers more models")


def _in_singapore(model: str) -> bool:
    """A listed model, or one of its snapshots (``qwen-plus-latest``, ``qwen-plus-2025-07-28``)."""
    return model == TEST_MODEL or any(model == m or model.startswith(m + "-") for m in SINGAPORE_MODELS)


def jsonl_lines(requests: Sequence[Request], custom_ids: Sequence[str]) -> list[str]:
    """One JSONL line per request (without the newline), matched back by its custom id.

    The body is the Chat Completions body with streaming off and DashScope's
    own fields (``enable_thinking``, ``top_k``...) at its top level, since a
    file has no ``extra_body``.  ``batch-test-model`` lines use the test URL.
    """
    from ..backends.openai_chat import build_body  # the SDK's module: imported when a batch is built

    if len(custom_ids) != len(requests):
        raise InvalidInput(f"{len(custom_ids)} custom ids for {len(requests)} requests", "give one id per request")
    seen: set[str] = set()
    lines = []
    for request, cid in zip(requests, map(str, custom_ids)):
        if cid in seen:
            raise InvalidInput(f"The custom id {cid!r} is used twice", "give every row its own key")
        seen.add(cid)
        body: dict[str, Any] = build_body(request)  # the stream fields are dropped: a file may not set them
        body.pop("stream", None)
        body.pop("stream_options", None)
        body.update(body.pop("extra_body", {}))
        url = TEST_URL if request.model == TEST_MODEL else CHAT_URL
        line = json.dumps({"custom_id": cid, "method": "POST", "url": url, "body": body},
                          ensure_ascii=False, separators=(",", ":"))
        size = len(line.encode())
        if size > MAX_LINE_BYTES:
            raise InvalidInput(f"The request for {cid!r} is {size / 1e6:.1f} MB; a batch line may be at most 6 MB",
                               "shorten that row's prompt (or its images), or run it without --batch")
        lines.append(line)
    return lines


def split_files(lines: Sequence[str], max_lines: int = MAX_LINES,
                max_bytes: int = MAX_FILE_BYTES) -> list[list[str]]:
    """The lines in files of at most ``max_lines`` lines and under ``max_bytes`` bytes, one model each.

    A file holds one model, one thinking mode and one URL (the service fails
    a mixed file), so mixed requests become one file per kind, in the order
    each kind first appears.
    """
    groups: dict[tuple, list[str]] = {}
    for line in lines:
        parsed = json.loads(line)
        body = parsed["body"]
        groups.setdefault((parsed["url"], body.get("model"), body.get("enable_thinking")), []).append(line)
    files: list[list[str]] = []
    for group in groups.values():
        current: list[str] = []
        size = 0
        for line in group:
            n = len(line.encode()) + 1
            if current and (len(current) >= max_lines or size + n >= max_bytes):
                files.append(current)
                current, size = [], 0
            current.append(line)
            size += n
        files.append(current)
    return files


def batch_price(price: Price | None) -> Price | None:
    """The price of a batch request: half the live one, without the cache discount."""
    return None if price is None else price.halved()
