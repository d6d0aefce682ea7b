"""A loopback Model Studio (DashScope) server speaking its three wires: chat, Responses, native.

Stdlib only.  Tests point the real ``openai`` SDK at it::

    with LoopbackServer() as server:
        client = openai.AsyncOpenAI(base_url=server.url + "/compatible-mode/v1",
                                    api_key=VALID_KEY, max_retries=0)
        server.enqueue(Script(text="hi", fault="cut", fault_after=1))

Routes: ``POST /compatible-mode/v1/chat/completions`` and
``GET /compatible-mode/v1/models`` here; the Batch API's files and batches
(``/compatible-mode/v1/files``, ``/compatible-mode/v1/batches``) in
:mod:`loopback_batch`; the Responses API (``POST
/api/v2/apps/protocols/compatible-mode/v1/responses``, also
``/compatible-mode/v1/responses``) and native DashScope (``POST
/api/v1/services/aigc/{text,multimodal}-generation/generation``) in
:mod:`loopback_protocols`, sharing the checks, scripts and recorded requests
described below; anything else is a 404 with a DashScope-compatible error
body.  Requests are checked in the service's order (key -> model -> parameter
ranges -> input moderation); a request that fails a check is answered like the
service would and does *not* consume a queued :class:`Script`.  Requests that
pass take the next script (FIFO), or a deterministic default reply when the
queue is empty.

Streams are ``text/event-stream`` bodies sent with ``Transfer-Encoding:
chunked``; every SSE frame is one HTTP chunk written (and, with TCP_NODELAY,
sent) as soon as it is produced.

How the ``openai`` SDK (3.57, httpx2 transport) reacts to each fault -- pinned
by ``tests/test_loopback.py``:

* ``"cut"``: the server ends the chunked body cleanly (zero-length chunk), with
  no finish chunk, usage or ``[DONE]``, then closes the connection.  The SDK's
  iteration **ends quietly**; only the missing ``finish_reason`` shows the cut.
* ``"reset"`` (extra): the socket is closed mid-body without the terminating
  chunk.  The SDK **raises** ``openai.APIConnectionError`` (cause: httpx2
  ``RemoteProtocolError``, incomplete chunked read).
* ``"no_finish"``: frames and ``[DONE]`` arrive, never a ``finish_reason``;
  iteration ends quietly.
* ``"malformed"``: ``data: {not json`` makes the SDK raise a bare
  ``json.JSONDecodeError`` (not an ``openai`` error class).
* ``"empty"``: only ``data: [DONE]``; iteration yields nothing.
* ``"moderation_mid"``: an in-band ``{"error": ...}`` frame; the SDK raises
  ``openai.APIError`` (not ``APIStatusError``: no ``status_code``) whose
  ``.code`` is ``"data_inspection_failed"``.
* ``"stall"``: the server sleeps ``stall_seconds``; a client read timeout
  shorter than that raises ``openai.APITimeoutError``.
* ``"split_utf8"``: each frame goes out as two HTTP chunks split inside a
  multi-byte character; the SDK reassembles lines before decoding, so the text
  is intact.
"""

from __future__ import annotations

import json
import logging
import random
import re
import socket
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterable, Literal, Optional
from urllib.parse import urlsplit

__all__ = ["LoopbackServer", "Script", "Recorded", "DEFAULT_KEY", "DEFAULT_MODELS", "tool_call_wire",
           "CHAT_PATH", "MODELS_PATH", "RESPONSES_PATH", "RESPONSES_PATHS", "NATIVE_TEXT_PATH",
           "NATIVE_MULTIMODAL_PATH", "FILES_PATH", "BATCHES_PATH", "default_reasoning", "default_answer"]

log = logging.getLogger("qwen_magics.tests.loopback")

DEFAULT_KEY = "sk-test-0123456789abcdef"
DEFAULT_MODELS = frozenset({
    "qwen3.5-plus", "qwen3.5-flash", "qwen-plus", "qwen-flash", "qwen-max",
    "qwen3-max", "qwen3-32b", "qwen2.5-7b-instruct",
})
CHAT_PATH = "/compatible-mode/v1/chat/completions"
MODELS_PATH = "/compatible-mode/v1/models"
# The Responses API: the documented (legacy) path and the newer one; served by loopback_protocols.
RESPONSES_PATH = "/api/v2/apps/protocols/compatible-mode/v1/responses"
RESPONSES_PATHS = frozenset({RESPONSES_PATH, "/compatible-mode/v1/responses"})
NATIVE_TEXT_PATH = "/api/v1/services/aigc/text-generation/generation"
NATIVE_MULTIMODAL_PATH = "/api/v1/services/aigc/multimodal-generation/generation"
FILES_PATH = "/compatible-mode/v1/files"  # the Batch API's routes, served by loopback_batch
BATCHES_PATH = "/compatible-mode/v1/batches"
BLOCK_MARKER = "[[blocked]]"
_LONG = re.compile(r"\[\[long:(\d+)\]\]")
_CREATED = 1_735_689_600  # fixed "created" for the models list

Fault = Optional[Literal["cut", "reset", "no_finish", "malformed", "empty",
                         "moderation_mid", "stall", "split_utf8"]]

# code -> (type, default message), as the compatible-mode endpoint answers them.
_ERRORS: dict[str, tuple[str, str]] = {
    "invalid_parameter_error": ("invalid_request_error", "The request parameter is invalid."),
    "data_inspection_failed": ("data_inspection_failed", "Input data may contain inappropriate content."),
    "invalid_api_key": ("invalid_request_error", "Incorrect API key provided. "),
    "access_denied": ("access_denied", "Access denied."),
    "model_not_found": ("invalid_request_error", "The model does not exist or you do not have access to it."),
    "not_found": ("invalid_request_error", "Not found."),
    "limit_requests": ("limit_requests", "Requests rate limit exceeded, please try again later."),
    "insufficient_quota": ("insufficient_quota",
                           "You exceeded your current quota, please check your plan and billing details."),
    "internal_error": ("internal_error", "An internal error has occured, please try again later."),
}
_STATUS_CODES = {400: "invalid_parameter_error", 401: "invalid_api_key", 403: "access_denied",
                 404: "model_not_found", 429: "limit_requests"}


@dataclass
class Script:
    """What the next chat request(s) get instead of the default reply.

    ``reasoning``/``text`` of None keep the default texts (``reasoning=""`` turns
    reasoning off); ``chunks`` replaces both.  ``status`` >= 400 answers with that
    HTTP error (``error_code`` defaults by status: 400 invalid_parameter_error, 401
    invalid_api_key, 403 access_denied, 404 model_not_found, 429 limit_requests,
    else internal_error).  ``fault_after`` counts reasoning/text deltas, not the
    lead chunk.  Non-stream requests honour "moderation_mid" (HTTP 400
    data_inspection_failed), "malformed" (body ``{not json``), "cut"/"reset"
    (half the body, then the socket closes), "stall" (before the body),
    "no_finish" (finish_reason null) and "empty" (``choices: []``).

    The same scripts drive the Responses and native routes (see
    :mod:`loopback_protocols`): ``usage`` is then sent as given, so give it in
    that protocol's shape; native error bodies map ``error_code`` to the native
    code (``limit_requests`` -> ``Throttling.RateQuota`` ...; unknown codes
    verbatim); ``lead_chunk`` is chat-only and ``error_event`` Responses-only.
    """

    reasoning: Optional[str] = None
    text: Optional[str] = None
    chunks: Optional[list[tuple[str, str]]] = None  # ("reasoning" | "text", piece)
    chunk_chars: int = 4
    finish_reason: str = "stop"
    usage: Optional[dict] = None
    request_id: Optional[str] = None
    chunk_delay: float = 0.0
    first_byte_delay: float = 0.0
    status: Optional[int] = None
    error_code: Optional[str] = None
    error_message: Optional[str] = None
    error_type: Optional[str] = None
    retry_after: Optional[str] = None
    headers: Optional[dict[str, str]] = None  # extra response headers (e.g. retry-after-ms)
    repeat: int = 1
    fault: Fault = None
    fault_after: int = 2
    stall_seconds: float = 1.0
    lead_chunk: bool = True  # the service's first frame: role, empty content/reasoning
    # Responses API only: how "moderation_mid" shows in a stream ("error" event or "response.failed")
    error_event: Literal["error", "response.failed"] = "error"
    # The answer calls these tools: [{"name": ..., "arguments": {...} or "raw text", "id": optional}]; the text
    # defaults to "" and finish_reason to "tool_calls".  Arguments stream in pieces of chunk_chars.
    tool_calls: Optional[list[dict]] = None
    # Web search (chat and native with enable_search and search_options.enable_source; Responses with the
    # web_search tool): the pages the answer cites, [{"title", "url"}]; None: DEFAULT_SOURCES.
    sources: Optional[list[dict]] = None

    def __post_init__(self) -> None:
        if self.tool_calls is not None:
            if self.text is None:
                self.text = ""
            if self.finish_reason == "stop":
                self.finish_reason = "tool_calls"


@dataclass
class Recorded:
    """One request as the server saw it (kept even when it was refused)."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    started: float
    finished: Optional[float] = None
    status: Optional[int] = None
    request_id: Optional[str] = None
    client_port: Optional[int] = None


class _Abort(Exception):
    """The server is stopping (or the fault closes the connection): drop it."""


# ---------------------------------------------------------------- defaults

def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(p.get("text", "") for p in content
                         if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def _last_user(body: dict) -> str:
    for msg in reversed(body.get("messages") or []):
        if isinstance(msg, dict) and msg.get("role") == "user":
            return _text_of(msg.get("content"))
    return ""


def _trailing_tool_outputs(body: dict) -> list[str]:
    """The outputs of the tool messages that end the conversation (chat and native shapes; Responses items)."""
    out: list[str] = []
    for msg in reversed(body.get("messages") or body.get("input") or []):
        if not isinstance(msg, dict):
            break
        if msg.get("role") == "tool":
            out.append(_text_of(msg.get("content")))
        elif msg.get("type") == "function_call_output":
            out.append(str(msg.get("output")))
        else:
            break
    return out[::-1]


def tool_call_wire(calls: list[dict], prefix: str = "call_") -> list[dict]:
    """Scripted calls with ids and JSON-text arguments, as every protocol sends them."""
    out = []
    for i, call in enumerate(calls):
        args = call.get("arguments", {})
        out.append({"id": call.get("id") or f"{prefix}{i}_{uuid.uuid4().hex[:8]}", "name": call["name"],
                    "arguments": args if isinstance(args, str) else json.dumps(args, ensure_ascii=False)})
    return out


def check_tool_messages(messages: list) -> Optional[str]:
    """The service's check: a tool message must answer a call of an earlier assistant message."""
    ids: set[str] = set()
    for msg in messages:
        if not isinstance(msg, dict):
            continue
        for call in msg.get("tool_calls") or ():
            if isinstance(call, dict):
                ids.add(call.get("id"))
        if msg.get("role") == "tool" and msg.get("tool_call_id") not in ids:
            return ("messages with role 'tool' must be a response to a preceding message with 'tool_calls' "
                    f"(tool_call_id {msg.get('tool_call_id')!r} is unknown)")
    return None


def check_tools(tools: Any) -> Optional[str]:
    """The shape of ``tools``: [{"type": "function", "function": {"name", "parameters"}}] (chat and native)."""
    if tools is None:
        return None
    if not isinstance(tools, list):
        return "tools must be a list"
    for tool in tools:
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not (isinstance(tool, dict) and tool.get("type") == "function" and isinstance(fn, dict)
                and isinstance(fn.get("name"), str) and isinstance(fn.get("parameters", {}), dict)):
            return f"invalid tool definition: {json.dumps(tool)[:80]}"
    return None


def _thinks(body: dict) -> bool:
    flag = body.get("enable_thinking")
    if flag is not None:
        return bool(flag)
    model = str(body.get("model", ""))
    return model.startswith("qwen3.5") or model.startswith("qwen3-")


def default_reasoning(body: dict) -> Optional[str]:
    """The default reply's reasoning text, or None when the request does not think."""
    if not _thinks(body):
        return None
    return f"Let me think about this. The user asks: {_last_user(body)[:60]}. I will answer briefly."


def default_answer(body: dict) -> str:
    """The default reply's answer text (after tool outputs: what the tools returned)."""
    tool_outputs = _trailing_tool_outputs(body)
    if tool_outputs:
        return "The tools returned: " + "; ".join(tool_outputs)
    user = _last_user(body)
    long = _LONG.search(user)
    if long:
        words = [f"word{i}" for i in range(int(long.group(1)))]
        return "\n\n".join(" ".join(words[i:i + 50]) for i in range(0, len(words), 50))
    fmt = body.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_object":
        return json.dumps({"answer": user[:40], "ok": True}, ensure_ascii=False)
    system = " ".join(_text_of(m.get("content")) for m in body.get("messages") or []
                      if isinstance(m, dict) and m.get("role") == "system")
    if "fenced code block" in system:
        return f"```python\n# {user.splitlines()[0][:60] if user else ''}\nprint('hello')\n```"
    first = user.splitlines()[0] if user else ""
    return f"**Echo:** {first[:80]}\n\n- first point\n- second point\n\nDone."


def token_logprobs(piece: str, i: int, k: int) -> dict:
    """Deterministic OpenAI-shaped logprobs for one streamed piece: the piece, then k-1 weaker alternatives."""
    chosen = -0.05 * (i % 7) - 0.01
    alternatives = [(piece, chosen)] + [(f"{piece}~{j}", chosen - 1.0 - j) for j in range(1, k)]
    return {"content": [{"token": piece, "logprob": chosen, "bytes": list(piece.encode()),
                         "top_logprobs": [{"token": t, "logprob": lp, "bytes": list(t.encode())}
                                          for t, lp in alternatives[:k]]}]}


def _split(text: str, size: int) -> list[str]:
    size = max(1, size)
    return [text[i:i + size] for i in range(0, len(text), size)]


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _error_body(code: str, message: Optional[str], rid: str, *, param: Optional[str] = None,
                type_: Optional[str] = None) -> dict:
    dtype, dmsg = _ERRORS.get(code, ("invalid_request_error", code))
    return {"error": {"message": message if message is not None else dmsg, "type": type_ or dtype,
                      "param": param, "code": code}, "request_id": rid}


def _check_number(body: dict, name: str, ok, rng: str) -> Optional[tuple[int, dict]]:
    if name not in body or body[name] is None:
        return None
    value = body[name]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not ok(value):
        return 400, {"code": "invalid_parameter_error", "param": name,
                     "message": f"Range of {name} should be {rng}"}
    return None


def check_chat_body(body: Any, models: set[str], rid: str) -> Optional[tuple[int, dict]]:
    """The chat route's checks after the key (model -> parameter ranges -> tools -> input moderation):
    the refusal's status and body, or None."""
    if not isinstance(body, dict):
        return 400, _error_body("invalid_parameter_error", "The request body is not valid JSON.", rid)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return 400, _error_body("invalid_parameter_error", "The parameter `model` is required.", rid,
                                param="model")
    if model not in models:
        return 404, _error_body("model_not_found",
                                f"The model `{model}` does not exist or you do not have access to it.", rid)
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        return 400, _error_body("invalid_parameter_error", "The parameter `messages` must be a non-empty list.",
                                rid, param="messages")
    for bad in (_check_number(body, "temperature", lambda v: 0 <= v < 2, "[0.0, 2.0)"),
                _check_number(body, "top_p", lambda v: 0 < v <= 1, "(0.0, 1.0]"),
                _check_number(body, "max_tokens", lambda v: isinstance(v, int) and v >= 1, "[1, inf)")):
        if bad:
            err = bad[1]
            return bad[0], _error_body(err["code"], err["message"], rid, param=err["param"])
    for problem in (check_tools(body.get("tools")), check_tool_messages(msgs)):
        if problem:
            return 400, _error_body("invalid_parameter_error", problem, rid)
    for msg in msgs:
        if isinstance(msg, dict) and msg.get("role") == "user" and BLOCK_MARKER in _text_of(msg.get("content")):
            return 400, _error_body("data_inspection_failed", None, rid)
    return None


DEFAULT_SOURCES = [{"title": "Entropy - a reference", "url": "https://example.org/entropy"},
                   {"title": "Sampling explained", "url": "https://example.org/sampling"}]


def sources_of(script: Script) -> list[dict]:
    return DEFAULT_SOURCES if script.sources is None else script.sources


def search_info(script: Script) -> dict:
    """DashScope's ``search_info``: the pages a web search found."""
    return {"search_results": [{"index": i, "title": s["title"], "url": s["url"], "site_name": "", "icon": ""}
                               for i, s in enumerate(sources_of(script), start=1)]}


def wants_sources(options: dict) -> bool:
    """Chat body or native parameters asking for search with its sources returned."""
    return options.get("enable_search") is True and (options.get("search_options") or {}).get("enable_source") is True


def other_choices(body: dict, pieces: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    """With ``n`` > 1: the pieces of answers 2..n, each the first answer marked with its number."""
    n = body.get("n") if isinstance(body.get("n"), int) else 1
    return [[("text", f"({k}) ")] + [(kind, p) for kind, p in pieces if kind == "text"] for k in range(2, n + 1)]


def answer_pieces(body: dict, script: Script) -> list[tuple[str, str]]:
    """The reply as ("reasoning" | "text", piece) pairs: the script's, else the defaults for this body."""
    if script.chunks is not None:
        return [(kind, piece) for kind, piece in script.chunks]
    reasoning = script.reasoning if script.reasoning is not None else default_reasoning(body)
    text = script.text if script.text is not None else default_answer(body)
    out = [("reasoning", p) for p in _split(reasoning or "", script.chunk_chars)]
    return out + [("text", p) for p in _split(text, script.chunk_chars)]


def chat_answer(body: dict, script: Script) -> tuple[list[tuple[str, str]], str, dict]:
    """A checked chat body's reply: its pieces (cut at ``max_tokens``), finish reason and usage."""
    pieces = answer_pieces(body, script)
    finish = script.finish_reason
    max_tokens = body.get("max_tokens")
    if isinstance(max_tokens, int) and max_tokens < len(pieces):
        pieces, finish = pieces[:max_tokens], "length"
    n_reason = sum(1 for kind, _ in pieces if kind == "reasoning")
    words = sum(len(_text_of(m.get("content")).split()) for m in body["messages"] if isinstance(m, dict))
    usage = script.usage or {
        "prompt_tokens": words + 10, "completion_tokens": len(pieces), "total_tokens": words + 10 + len(pieces),
        "completion_tokens_details": {"reasoning_tokens": n_reason},
        "prompt_tokens_details": {"cached_tokens": 0},
    }
    return pieces, finish, usage


def completion_object(body: dict, script: Script, cid: str, pieces: list[tuple[str, str]], finish: str,
                      usage: dict) -> dict:
    """The non-stream ``chat.completion`` object for a reply (faults not applied)."""
    reasoning = "".join(p for k, p in pieces if k == "reasoning")
    message: dict[str, Any] = {"role": "assistant", "content": "".join(p for k, p in pieces if k == "text")}
    if any(k == "reasoning" for k, _ in pieces):
        message["reasoning_content"] = reasoning
    if script.tool_calls:
        message["tool_calls"] = [{"id": c["id"], "type": "function", "index": i,
                                  "function": {"name": c["name"], "arguments": c["arguments"]}}
                                 for i, c in enumerate(tool_call_wire(script.tool_calls))]
    others = [{"index": k, "message": {"role": "assistant", "content": "".join(p for _, p in extra)},
               "finish_reason": finish, "logprobs": None}
              for k, extra in enumerate(other_choices(body, pieces), start=1)]
    obj = {"id": cid, "object": "chat.completion", "created": int(time.time()), "model": body["model"],
           "system_fingerprint": None,
           "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}, *others],
           "usage": usage}
    if wants_sources(body):
        obj["search_info"] = search_info(script)
    return obj


# ---------------------------------------------------------------- server

class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # stop() joins handler threads itself, with a deadline
    request_queue_size = 128

    def __init__(self, addr, handler, owner: "LoopbackServer") -> None:
        self.owner = owner
        super().__init__(addr, handler)

    def process_request(self, request, client_address):  # track threads and sockets
        t = threading.Thread(target=self._run, args=(request, client_address), daemon=True,
                             name=f"loopback-{self.server_address[1]}-conn-{client_address[1]}")
        with self.owner._lock:
            self.owner._threads.add(t)
            self.owner._conns.add(request)
        t.start()

    def _run(self, request, client_address):
        try:
            self.process_request_thread(request, client_address)
        finally:
            with self.owner._lock:
                self.owner._threads.discard(threading.current_thread())
                self.owner._conns.discard(request)

    def handle_error(self, request, client_address):  # never print tracebacks to stdout
        log.exception("loopback: error while handling a request from %s", client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "loopback-dashscope/1.0"
    sys_version = ""
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        try:
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass

    def handle(self) -> None:
        try:
            super().handle()
        except OSError as exc:  # reset by the client or by stop(): not an error of ours
            log.debug("loopback: connection dropped: %r", exc)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("loopback: " + format, *args)

    # Every method goes through one dispatcher; unknown routes get a 404.
    def do_GET(self) -> None:
        self._dispatch()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_GET

    # -- plumbing
    def _dispatch(self) -> None:
        owner = self.server.owner
        started = time.monotonic()
        raw = self._read_body()
        self._raw = raw  # the batch routes' multipart uploads are not JSON
        body: Any = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
        headers: dict[str, str] = {}
        for k, v in self.headers.items():
            k = k.lower()
            headers[k] = f"{headers[k]}, {v}" if k in headers else v
        rec = Recorded(method=self.command, path=self.path, headers=headers, body=body,
                       started=started, client_port=self.client_address[1])
        with owner._lock:
            owner._requests.append(rec)
        self._rec = rec
        try:
            route = urlsplit(self.path).path
            if route == CHAT_PATH and self.command == "POST":
                self._chat(body)
            elif route == MODELS_PATH and self.command == "GET":
                self._models()
            elif route in _PROTOCOL_ROUTES and self.command == "POST":
                _protocols.serve(self, route, body)
            elif route.startswith(_BATCH_ROUTES):
                _batch.serve(self, route, body)
            else:
                rid = str(uuid.uuid4())
                self._send_error(404, _error_body("not_found", f"Not found: {self.command} {route}", rid), rid)
        except _Abort:
            self.close_connection = True
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, socket.timeout) as exc:
            log.debug("loopback: client went away: %r", exc)
            self.close_connection = True
        finally:
            if rec.finished is None:
                rec.finished = time.monotonic()

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            out = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _sleep(self, seconds: float) -> None:
        if seconds > 0 and self.server.owner._stopping.wait(seconds):
            raise _Abort()

    def _start(self, status: int, ctype: str, rid: str, extra: Optional[dict] = None,
               length: Optional[int] = None) -> None:
        self._rec.status = status
        self._rec.request_id = rid
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("x-request-id", rid)
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        if length is None:
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("Cache-Control", "no-cache")
        else:
            self.send_header("Content-Length", str(length))
        self.end_headers()

    def _send_json(self, status: int, obj: Any, rid: str, extra: Optional[dict] = None) -> None:
        data = _dumps(obj)
        self._start(status, "application/json", rid, extra, len(data))
        self.wfile.write(data)
        self._rec.finished = time.monotonic()

    def _send_error(self, status: int, body: dict, rid: str, retry_after: Optional[str] = None,
                    extra: Optional[dict] = None) -> None:
        headers = dict(extra or {})
        if retry_after is not None:
            headers["Retry-After"] = retry_after
        self._send_json(status, body, rid, headers)

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def _frame(self, payload: bytes, split_utf8: bool = False) -> None:
        self._raw_frame(b"data: " + payload + b"\n\n", split_utf8)

    def _raw_frame(self, frame: bytes, split_utf8: bool = False) -> None:
        """One whole SSE frame as one HTTP chunk (two, split inside a multi-byte character, with split_utf8)."""
        if split_utf8:
            cut = next((i + 1 for i, b in enumerate(frame) if b >= 0xC0), len(frame) // 2)
            self._chunk(frame[:cut])
            time.sleep(0.002)  # let the first half leave as its own segment
            self._chunk(frame[cut:])
        else:
            self._chunk(frame)

    def _end_chunks(self) -> None:
        self.wfile.write(b"0\r\n\r\n")

    # -- routes
    def _models(self) -> None:
        owner = self.server.owner
        rid = str(uuid.uuid4())
        if not owner._authorized(self.headers.get("Authorization")):
            self._send_error(401, _error_body("invalid_api_key", None, rid), rid)
            return
        data = [{"id": m, "object": "model", "created": _CREATED, "owned_by": "system"}
                for m in sorted(owner.models)]
        self._send_json(200, {"object": "list", "data": data}, rid)

    def _validate(self, body: Any, rid: str) -> Optional[tuple[int, dict]]:
        owner = self.server.owner
        if not owner._authorized(self.headers.get("Authorization")):
            return 401, _error_body("invalid_api_key", None, rid)
        return check_chat_body(body, owner.models, rid)

    def _chat(self, body: Any) -> None:
        owner = self.server.owner
        rid = str(uuid.uuid4())
        bad = self._validate(body, rid)
        if bad:
            self._send_error(bad[0], bad[1], rid)
            return
        script = owner._next_script(body) or Script()
        rid = script.request_id or rid
        self._sleep(script.first_byte_delay)
        if script.status is not None and script.status >= 400:
            code = script.error_code or _STATUS_CODES.get(script.status, "internal_error")
            self._send_error(script.status, _error_body(code, script.error_message, rid, type_=script.error_type),
                             rid, script.retry_after, script.headers)
            return

        pieces, finish, usage = chat_answer(body, script)
        cid = f"chatcmpl-{uuid.uuid4()}"
        if body.get("stream") is True:
            self._stream(body, script, rid, cid, pieces, finish, usage)
        else:
            self._complete(body, script, rid, cid, pieces, finish, usage)

    def _complete(self, body, script, rid, cid, pieces, finish, usage) -> None:
        obj = completion_object(body, script, cid, pieces, finish, usage)
        fault = script.fault
        if fault == "no_finish":
            obj["choices"][0]["finish_reason"] = None
        elif fault == "empty":
            obj["choices"] = []
        if fault == "moderation_mid":
            self._send_error(400, _error_body("data_inspection_failed",
                                              "Output data may contain inappropriate content.", rid), rid)
        elif fault == "malformed":
            data = b"{not json"
            self._start(200, "application/json", rid, script.headers, len(data))
            self.wfile.write(data)
            self._rec.finished = time.monotonic()
        elif fault in ("cut", "reset"):
            data = _dumps(obj)
            self._start(200, "application/json", rid, script.headers, len(data))
            self.wfile.write(data[: len(data) // 2])
            self._rec.finished = time.monotonic()
            self._hard_close()
            raise _Abort()
        else:
            if fault == "stall":
                self._sleep(script.stall_seconds)
            self._send_json(200, obj, rid, script.headers)

    def _stream(self, body, script, rid, cid, pieces, finish, usage) -> None:
        fault = script.fault
        split = fault == "split_utf8"
        created = int(time.time())
        model = body["model"]

        def chunk(delta: dict, finish_reason: Optional[str] = None, logprobs: Optional[dict] = None,
                  index: int = 0) -> bytes:
            return _dumps({"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                           "system_fingerprint": None,
                           "choices": [{"index": index, "delta": delta, "finish_reason": finish_reason,
                                        "logprobs": logprobs}]})

        others = other_choices(body, pieces)

        self._start(200, "text/event-stream;charset=UTF-8", rid, script.headers)
        if fault == "empty":
            self._frame(b"[DONE]")
            self._end_chunks()
            self._rec.finished = time.monotonic()
            return
        if script.lead_chunk:
            has_reasoning = any(k == "reasoning" for k, _ in pieces)
            self._frame(chunk({"content": "", "reasoning_content": "" if has_reasoning else None,
                               "role": "assistant"}), split)
        if wants_sources(body):
            self._frame(_dumps({"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                                "system_fingerprint": None, "choices": [], "search_info": search_info(script)}))
        for i, (kind, piece) in enumerate(pieces):
            if i == script.fault_after and fault is not None:
                if fault == "cut":
                    self._end_chunks()
                    self._rec.finished = time.monotonic()
                    raise _Abort()
                if fault == "reset":
                    self._rec.finished = time.monotonic()
                    self._hard_close()
                    raise _Abort()
                if fault == "malformed":
                    self._frame(b"{not json")
                elif fault == "moderation_mid":
                    err = _error_body("data_inspection_failed", "Output data may contain inappropriate content.",
                                      rid, type_="data_inspection_failed")
                    self._frame(_dumps(err))
                    self._end_chunks()
                    self._rec.finished = time.monotonic()
                    return
                elif fault == "stall":
                    self._sleep(script.stall_seconds)
            if i > 0:
                self._sleep(script.chunk_delay)
            delta = ({"content": None, "reasoning_content": piece, "role": "assistant"} if kind == "reasoning"
                     else {"content": piece, "reasoning_content": None, "role": "assistant"})
            wants_logprobs = kind == "text" and body.get("logprobs") is True
            self._frame(chunk(delta, logprobs=token_logprobs(piece, i, body.get("top_logprobs") or 0)
                              if wants_logprobs else None), split)
            for k, extra in enumerate(others, start=1):  # the other answers interleave with the first
                if i < len(extra):
                    self._frame(chunk({"content": extra[i][1], "role": "assistant"}, index=k))
        if fault in ("cut", "reset", "moderation_mid") and script.fault_after >= len(pieces):
            # fault_after beyond the last piece: fault right before the finish chunk
            if fault == "moderation_mid":
                self._frame(_dumps(_error_body("data_inspection_failed",
                                               "Output data may contain inappropriate content.", rid)))
                self._end_chunks()
            elif fault == "cut":
                self._end_chunks()
            else:
                self._hard_close()
            self._rec.finished = time.monotonic()
            raise _Abort()
        for i, call in enumerate(tool_call_wire(script.tool_calls or [])):
            # As the service streams them: id and name first, then the arguments in pieces (id "" after the first).
            self._frame(chunk({"content": None, "role": "assistant", "tool_calls": [
                {"index": i, "id": call["id"], "type": "function", "function": {"name": call["name"], "arguments": ""}}]}))
            for piece in _split(call["arguments"], script.chunk_chars):
                self._frame(chunk({"content": None, "role": "assistant", "tool_calls": [
                    {"index": i, "id": "", "type": "function", "function": {"arguments": piece}}]}))
        if fault != "no_finish":
            for k, extra in enumerate(others, start=1):
                rest = "".join(p for _, p in extra[len(pieces):])
                self._frame(chunk({"content": rest, "role": "assistant"}, finish, index=k))
            self._frame(chunk({"content": "", "reasoning_content": None, "role": "assistant"}, finish), split)
        if (body.get("stream_options") or {}).get("include_usage") is True:
            self._frame(_dumps({"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                                "system_fingerprint": None, "choices": [], "usage": usage}), split)
        self._frame(b"[DONE]")
        self._end_chunks()
        self._rec.finished = time.monotonic()

    def _hard_close(self) -> None:
        """Close the socket now, mid-body: no terminating chunk."""
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class LoopbackServer:
    """A threaded HTTP/1.1 server on 127.0.0.1 that answers like Model Studio's compatible mode."""

    def __init__(self, valid_keys: Iterable[str] = (DEFAULT_KEY,), models: Iterable[str] = DEFAULT_MODELS,
                 host: str = "127.0.0.1", port: int = 0) -> None:
        self.valid_keys = set(valid_keys)
        self.models = set(models)
        self.host, self.port = host, port
        self._lock = threading.Lock()
        self._queue: deque[list] = deque()  # [script, remaining]
        self._requests: list[Recorded] = []
        self._stored: dict[str, list[dict]] = {}  # Responses API: response id -> its conversation
        self._random_faults: Optional[tuple[float, list[Script], random.Random, Optional[Script]]] = None
        self._injected: list[Script] = []
        self._responder: Optional[Callable[[dict], Optional[Script]]] = None
        self.batches = _batch.Batches()  # files and batch jobs: see loopback_batch
        self._threads: set[threading.Thread] = set()
        self._conns: set[socket.socket] = set()
        self._stopping = threading.Event()
        self._httpd: Optional[_HTTPServer] = None
        self._serve_thread: Optional[threading.Thread] = None

    # -- lifecycle
    def start(self) -> "LoopbackServer":
        if self._httpd is not None:
            return self
        self._stopping.clear()
        self._httpd = _HTTPServer((self.host, self.port), _Handler, self)
        self._serve_thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                              daemon=True, name=f"loopback-{self._httpd.server_address[1]}-serve")
        self._serve_thread.start()
        return self

    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("LoopbackServer is not started")
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def stop(self, timeout: float = 1.0) -> None:
        """Close the listening socket and every connection; wait at most ``timeout`` for handlers."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        deadline = time.monotonic() + timeout
        self._stopping.set()  # wakes handlers sleeping in delays and stalls
        httpd.shutdown()
        httpd.server_close()
        with self._lock:
            conns, threads = list(self._conns), list(self._threads)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)  # unblocks keep-alive reads and pending writes
            except OSError:
                pass
        for t in threads + [self._serve_thread]:
            if t is not None:
                t.join(max(0.0, deadline - time.monotonic()))
        alive = [t.name for t in threads if t.is_alive()]
        if alive:
            log.warning("loopback: %d handler thread(s) still running after stop(): %s", len(alive), alive)

    def __enter__(self) -> "LoopbackServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- scripting and inspection
    def enqueue(self, *scripts: Script) -> None:
        with self._lock:
            for s in scripts:
                self._queue.append([s, max(1, s.repeat)])

    def respond(self, answer: Optional[Callable[[dict], Optional[Script]]]) -> None:
        """From now on, a chat request that finds the queue empty gets ``answer(body)`` (None: the default reply);
        so each request's reply can depend on its prompt and parameters, whatever order they come in.
        ``respond(None)`` (or :meth:`reset`) turns it off."""
        with self._lock:
            self._responder = answer

    def _next_script(self, body: Optional[dict] = None) -> Optional[Script]:
        with self._lock:
            if not self._queue:
                if self._responder is not None and body is not None:
                    return self._responder(body)
                return self._random_fault()
            entry = self._queue[0]
            entry[1] -= 1
            if entry[1] <= 0:
                self._queue.popleft()
            return entry[0]

    @property
    def pending(self) -> int:
        """How many scripted answers are still queued (counting repeats)."""
        with self._lock:
            return sum(n for _, n in self._queue)

    @property
    def requests(self) -> list[Recorded]:
        with self._lock:
            return list(self._requests)

    def reset(self) -> None:
        with self._lock:
            self._queue.clear()
            self._requests.clear()
            self._stored.clear()
            self._random_faults = None
            self._injected.clear()
            self._responder = None
        self.batches.clear()

    # -- random faults (load tests): on top of the queue, never instead of it
    def inject_faults(self, rate: float, scripts: Iterable[Script], seed: int = 0,
                      otherwise: Optional[Script] = None) -> None:
        """From now on, a request that passes the checks and finds the queue empty gets, with probability
        ``rate``, one of ``scripts`` picked at random (seeded: the same run injects the same faults), else
        ``otherwise`` (None: the default reply).  ``rate=0`` (or :meth:`reset`) turns it off; ``repeat`` of
        these scripts is ignored."""
        with self._lock:
            self._random_faults = (rate, list(scripts), random.Random(seed), otherwise) if rate > 0 else None

    @property
    def injected(self) -> list[Script]:
        """The faults :meth:`inject_faults` handed out so far, in order."""
        with self._lock:
            return list(self._injected)

    def _random_fault(self) -> Optional[Script]:  # called with the lock held
        if self._random_faults is None:
            return None
        rate, scripts, rng, otherwise = self._random_faults
        if not scripts or rng.random() >= rate:
            return otherwise
        script = rng.choice(scripts)
        self._injected.append(script)
        return script

    def _authorized(self, header: Optional[str]) -> bool:
        if not header or not header.startswith("Bearer "):
            return False
        return header[len("Bearer "):].strip() in self.valid_keys


# The Responses API and native DashScope routes live in loopback_protocols, which imports this module's
# helpers: it is imported last, as a module object, so either module may be imported first.
if __package__:
    from . import loopback_batch as _batch
    from . import loopback_protocols as _protocols
else:
    import loopback_batch as _batch
    import loopback_protocols as _protocols

_PROTOCOL_ROUTES = RESPONSES_PATHS | {NATIVE_TEXT_PATH, NATIVE_MULTIMODAL_PATH}
_BATCH_ROUTES = (FILES_PATH, BATCHES_PATH)
