"""The loopback server's other two protocols: OpenAI Responses and native DashScope.

:mod:`loopback` routes requests here; this module only adds wire formats.  Both
protocols share the chat route's checks (key -> model -> parameter ranges ->
input moderation, ``[[blocked]]``), its :class:`~loopback.Script` queue, its
default texts and its ``Recorded`` list.  A refused request does not consume a
script.

**Responses** (``POST /api/v2/apps/protocols/compatible-mode/v1/responses``,
and the newer ``/compatible-mode/v1/responses``).  Body: ``model``, ``input``
(a string or a message list), ``instructions``, ``stream``, ``temperature``,
``top_p``, ``max_output_tokens``, ``enable_thinking`` (top level, where the
SDK's ``extra_body`` puts it), ``previous_response_id`` (answers are stored per
server; an unknown id is a 400), ``text.format.type == "json_object"``.
Errors are HTTP errors with the compatible-mode body.  A stream is
``event: <type>`` + ``data: {"type", "sequence_number", ...}`` frames:
``response.created``, ``response.in_progress``, per output item
``response.output_item.added`` ... ``response.output_item.done`` (reasoning:
``reasoning_summary_part.added``, ``reasoning_summary_text.delta`` x n,
``reasoning_summary_text.done``, ``reasoning_summary_part.done``; message:
``content_part.added``, ``output_text.delta`` x n, ``output_text.done``,
``content_part.done``), then ``response.completed`` with the whole response and
its usage (``response.incomplete`` with ``incomplete_details.reason ==
"max_output_tokens"`` when ``max_output_tokens`` or ``Script(finish_reason=
"length")`` cut the answer).  Faults: ``cut`` ends the body cleanly without
the closing events, ``no_finish`` sends every item but no
``response.completed``, ``moderation_mid`` sends an ``event: error`` frame
``{"type": "error", "code": "data_inspection_failed", "message", "param",
"sequence_number"}`` (or, with ``Script(error_event="response.failed")``, a
``response.failed`` event whose ``response.error`` carries the code), then
ends the body.  The ``openai`` SDK yields both as typed events
(``ResponseErrorEvent`` / ``ResponseFailedEvent``) and raises nothing.

**Native** (``POST /api/v1/services/aigc/text-generation/generation`` and
``/api/v1/services/aigc/multimodal-generation/generation``).  Body ``{"model",
"input": {"messages"}, "parameters"}``.  Each endpoint serves only its own model
family: Qwen3.5+ / VL models only on multimodal-generation, the others only on
text-generation; the wrong one answers ``400 InvalidParameter "url error,
please check url！ ..."`` (HTTP 200 + an ``event:error`` frame when streaming,
as the service was seen to do).  Streaming is on when the request carries
``X-DashScope-SSE: enable``; frames are ``id:n`` / ``event:result`` /
``:HTTP_STATUS/200`` / ``data:{json}``; ``finish_reason`` is ``"null"`` until
the last frame (``"stop"`` / ``"length"``, with empty pieces when incremental,
the whole text when cumulative).  ``parameters.incremental_output: true`` sends
only new pieces, otherwise every frame repeats the text so far.  On the
multimodal endpoint ``message.content`` is a list of ``{"text"}`` parts (``[]``
while only reasoning arrives).  Errors: the native body ``{"code", "message",
"request_id"}`` -- as JSON for non-stream requests and for 401; for stream
requests as one ``event:error`` frame with the HTTP status.  Mid-stream
(``moderation_mid``) the error is an ``event:error`` frame with
``:HTTP_STATUS/400`` after a 200.  ``result_format`` other than ``"message"``
on the text endpoint gives the legacy ``output: {"text", "finish_reason"}``.
``parameters.logprobs`` adds OpenAI-shaped ``choices[0].logprobs`` to text frames.

How the SDKs react -- pinned by ``tests/test_loopback_protocols.py``
(openai 3.57 on httpx2; dashscope 2.0.2: ``requests`` when sync, ``aiohttp``
when async).  The dashscope SDK never raises for HTTP or in-band errors: it
returns (or, streaming, yields) a response whose ``status_code`` / ``code`` /
``message`` tell; an error frame ends its iteration.

* HTTP errors: openai raises its ``APIStatusError`` subclass (``.code`` from
  the body); dashscope returns status_code/code/message, sync and async.
* ``cut``: openai's iteration ends quietly without ``response.completed``;
  dashscope's too, the last frame saying ``finish_reason == "null"``.
  Non-stream (half a body): openai ``APIConnectionError``, dashscope sync
  ``requests.exceptions.ChunkedEncodingError`` (not retried), async
  ``aiohttp.ClientPayloadError``.
* ``reset`` (stream): openai ``APIConnectionError``; dashscope sync
  ``ChunkedEncodingError``, async ``aiohttp.ClientPayloadError``.
* ``malformed``: openai raises ``json.JSONDecodeError``.  dashscope streams
  yield one frame with code ``"Unknown"`` (status 400 sync, **500** async,
  ``message`` the raw data) and go on; a malformed whole body raises
  ``requests.exceptions.JSONDecodeError`` (sync) / ``json.JSONDecodeError``.
* ``moderation_mid``: openai yields ``ResponseErrorEvent`` (or
  ``ResponseFailedEvent``) and raises nothing -- ``responses.stream()``'s
  ``get_final_response()`` then raises ``RuntimeError``; dashscope's last frame
  has status 400, code ``DataInspectionFailed``.  Non-stream: HTTP 400.
* ``empty``: no events / no frames.  ``no_finish``: every item but no
  ``response.completed``; every native frame ``"null"``.
* ``stall``: openai ``APITimeoutError``; dashscope sync
  ``requests.exceptions.ConnectionError`` mid-stream (``ReadTimeout`` before
  the headers), async ``aiohttp.ServerTimeoutError`` mid-stream (a
  ``TimeoutError`` before the headers), with ``request_timeout=`` shorter.
"""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Optional

if __package__:
    from .loopback import (BLOCK_MARKER, NATIVE_MULTIMODAL_PATH, RESPONSES_PATHS, Script, _Abort, _dumps,
                           _error_body, _STATUS_CODES, _text_of, answer_pieces, check_tool_messages,
                           check_tools, search_info, sources_of, token_logprobs, tool_call_wire, wants_sources)
else:
    from loopback import (BLOCK_MARKER, NATIVE_MULTIMODAL_PATH, RESPONSES_PATHS, Script, _Abort, _dumps,
                          _error_body, _STATUS_CODES, _text_of, answer_pieces, check_tool_messages,
                          check_tools, search_info, sources_of, token_logprobs, tool_call_wire, wants_sources)

#: Models that the native API serves only on the multimodal-generation endpoint.
MULTIMODAL_ONLY = re.compile(r"^(qwen3\.[5-9]|qwen3-vl|qwen-vl|qwen2\.5-vl|qvq|qwen-omni|qwen3-omni)")
URL_ERROR = ("url error, please check url！ For details, see: "
             "https://help.aliyun.com/zh/model-studio/error-code#error-url")
IMAGE_TOKENS = 256  # input tokens counted for each image/video part on the multimodal endpoint

# compatible-mode code -> (native code, native default message)
_NATIVE: dict[str, tuple[str, str]] = {
    "invalid_parameter_error": ("InvalidParameter", "The request parameter is invalid."),
    "data_inspection_failed": ("DataInspectionFailed", "Input data may contain inappropriate content."),
    "invalid_api_key": ("InvalidApiKey", "Invalid API-key provided."),
    "access_denied": ("AccessDenied", "Access denied."),
    "model_not_found": ("ModelNotFound", "Model not exist."),
    "limit_requests": ("Throttling.RateQuota", "Requests rate limit exceeded, please try again later."),
    "insufficient_quota": ("Arrearage", "Access denied, please make sure your account is in good standing."),
    "internal_error": ("InternalError", "An internal error has occured, please try again later."),
}
_OUTPUT_BLOCKED = "Output data may contain inappropriate content."


@dataclass
class _Refusal:
    """A request the service refuses before generating, in protocol-neutral terms."""

    status: int
    code: str  # the compatible-mode code; natives map it through _NATIVE
    message: Optional[str] = None  # None: the protocol's default message for the code
    param: Optional[str] = None


def serve(h, route: str, body: Any) -> None:
    """Answer one POST on a Responses or native route (``h`` is the loopback request handler)."""
    if route in RESPONSES_PATHS:
        _Responses(h, body).run()
    else:
        _Native(h, body, multimodal=route == NATIVE_MULTIMODAL_PATH).run()


# ---------------------------------------------------------------- shared

def _range_checks(values: dict[str, Any], max_name: str) -> Optional[_Refusal]:
    checks: list[tuple[str, Callable[[Any], bool], str]] = [
        ("temperature", lambda v: 0 <= v < 2, "[0.0, 2.0)"),
        ("top_p", lambda v: 0 < v <= 1, "(0.0, 1.0]"),
        (max_name, lambda v: isinstance(v, int) and v >= 1, "[1, inf)"),
    ]
    for name, ok, rng in checks:
        value = values.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not ok(value):
            return _Refusal(400, "invalid_parameter_error", f"Range of {name} should be {rng}", name)
    return None


def _common_checks(h, body: Any) -> Optional[_Refusal]:
    """Key, JSON body, model presence and existence: the same order as the chat route."""
    owner = h.server.owner
    if not owner._authorized(h.headers.get("Authorization")):
        return _Refusal(401, "invalid_api_key")
    if not isinstance(body, dict):
        return _Refusal(400, "invalid_parameter_error", "The request body is not valid JSON.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return _Refusal(400, "invalid_parameter_error", "The parameter `model` is required.", "model")
    if model not in owner.models:
        return _Refusal(404, "model_not_found", f"The model `{model}` does not exist or you do not have access to it.")
    return None


def _blocked(messages: list) -> bool:
    return any(isinstance(m, dict) and m.get("role") == "user" and BLOCK_MARKER in _text_of(m.get("content"))
               for m in messages)


def _words(messages: list) -> int:
    return sum(len(_text_of(m.get("content")).split()) for m in messages if isinstance(m, dict))


class _Route:
    """What both protocols do around their wire format: scripts, pieces, truncation, faults of whole bodies."""

    def __init__(self, h, body: Any) -> None:
        self.h = h
        self.body = body
        self.owner = h.server.owner
        self.rid = str(uuid.uuid4())
        self.script = Script()

    def take_script(self) -> Script:
        script = self.script = self.owner._next_script() or Script()
        self.rid = script.request_id or self.rid
        self.h._sleep(script.first_byte_delay)
        return script

    @staticmethod
    def scripted_error(script: Script) -> Optional[_Refusal]:
        if script.status is not None and script.status >= 400:
            return _Refusal(script.status, script.error_code or _STATUS_CODES.get(script.status, "internal_error"),
                            script.error_message)
        return None

    def pieces(self, chatlike: dict, script: Script, limit: Any) -> tuple[list[tuple[str, str]], str]:
        pieces = answer_pieces(chatlike, script)
        finish = script.finish_reason
        if isinstance(limit, int) and not isinstance(limit, bool) and limit < len(pieces):
            pieces, finish = pieces[:limit], "length"
        return pieces, finish

    def send_whole(self, script: Script, obj: dict, blocked: tuple[int, dict]) -> None:
        """A non-stream body, with the script's fault: the same behaviour as the chat route's."""
        h, fault = self.h, script.fault
        if fault == "moderation_mid":
            h._send_error(blocked[0], blocked[1], self.rid)
        elif fault == "malformed":
            data = b"{not json"
            h._start(200, "application/json", self.rid, script.headers, len(data))
            h.wfile.write(data)
            h._rec.finished = time.monotonic()
        elif fault in ("cut", "reset"):
            data = _dumps(obj)
            h._start(200, "application/json", self.rid, script.headers, len(data))
            h.wfile.write(data[: len(data) // 2])
            h._rec.finished = time.monotonic()
            h._hard_close()
            raise _Abort()
        else:
            if fault == "stall":
                h._sleep(script.stall_seconds)
            h._send_json(200, obj, self.rid, script.headers)

    def end_stream(self) -> None:
        self.h._end_chunks()
        self.h._rec.finished = time.monotonic()

    def cut(self, fault: str) -> None:
        """End the stream for a 'cut' (clean end of the chunked body) or 'reset' (socket closed mid-body)."""
        self.h._rec.finished = time.monotonic()
        if fault == "cut":
            self.h._end_chunks()
        else:
            self.h._hard_close()
        raise _Abort()


# ---------------------------------------------------------------- Responses

class _Responses(_Route):
    def run(self) -> None:
        body = self.body
        bad = self.check()
        if bad:
            self.refuse(bad)
            return
        messages = self.conversation()
        chatlike = {"model": body["model"], "messages": messages, "enable_thinking": body.get("enable_thinking")}
        fmt = body["text"].get("format") if isinstance(body.get("text"), dict) else None
        if isinstance(fmt, dict) and fmt.get("type") == "json_object":
            chatlike["response_format"] = {"type": "json_object"}
        script = self.take_script()
        scripted = self.scripted_error(script)
        if scripted:
            self.refuse(scripted, script)
            return
        pieces, finish = self.pieces(chatlike, script, body.get("max_output_tokens"))
        self.resp_id = str(uuid.uuid4())
        self.created = int(time.time())
        self.messages = messages
        n_reason = sum(1 for kind, _ in pieces if kind == "reasoning")
        words = _words(messages) + 10
        self.usage = script.usage or {
            "input_tokens": words, "output_tokens": len(pieces), "total_tokens": words + len(pieces),
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens_details": {"reasoning_tokens": n_reason},
            "x_details": [{"input_tokens": words, "output_tokens": len(pieces),
                           "output_tokens_details": {"reasoning_tokens": n_reason},
                           "total_tokens": words + len(pieces), "x_billing_type": "response_api"}],
        }
        self.incomplete = finish == "length"
        if body.get("stream") is True:
            self.stream(script, pieces)
        else:
            self.complete(script, pieces)

    # -- request
    def check(self) -> Optional[_Refusal]:
        bad = _common_checks(self.h, self.body)
        if bad:
            return bad
        body = self.body
        inp = body.get("input")
        if not (isinstance(inp, str) and inp) and not (isinstance(inp, list) and inp):
            return _Refusal(400, "invalid_parameter_error", "The parameter `input` is required.", "input")
        bad = _range_checks(body, "max_output_tokens")
        if bad:
            return bad
        prev = body.get("previous_response_id")
        if prev is not None:
            with self.owner._lock:
                known = prev in self.owner._stored
            if not known:
                return _Refusal(400, "invalid_parameter_error", f"Previous response with id '{prev}' not found.",
                                "previous_response_id")
        tools = body.get("tools")
        if tools is not None and not (isinstance(tools, list) and all(
                isinstance(t, dict) and (t == {"type": "web_search"} or (
                    t.get("type") == "function" and isinstance(t.get("name"), str))) for t in tools)):
            return _Refusal(400, "invalid_parameter_error",
                            "invalid tools: each needs type 'function' and a name, or is {'type': 'web_search'}",
                            "tools")
        problem = check_tool_messages(self.input_messages())
        if problem:
            return _Refusal(400, "invalid_parameter_error", problem, "input")
        if _blocked(self.input_messages()):
            return _Refusal(400, "data_inspection_failed")
        return None

    def input_messages(self) -> list[dict]:
        """The input as chat messages (function_call items join an assistant message, outputs are tool messages)."""
        inp = self.body.get("input")
        if isinstance(inp, str):
            return [{"role": "user", "content": inp}]
        out: list[dict] = []
        for item in inp if isinstance(inp, list) else []:
            if not isinstance(item, dict):
                continue
            kind = item.get("type", "message")
            if kind == "message" and "role" in item:
                out.append({"role": item["role"], "content": item.get("content")})
            elif kind == "function_call":
                if not (out and out[-1]["role"] == "assistant" and "tool_calls" in out[-1]):
                    out.append({"role": "assistant", "content": "", "tool_calls": []})
                out[-1]["tool_calls"].append({"id": item.get("call_id"), "type": "function", "function": {
                    "name": item.get("name"), "arguments": item.get("arguments")}})
            elif kind == "function_call_output":
                out.append({"role": "tool", "tool_call_id": item.get("call_id"), "content": item.get("output")})
        return out

    def conversation(self) -> list[dict]:
        """Instructions, then the stored turns of ``previous_response_id``, then this input."""
        out: list[dict] = []
        if isinstance(self.body.get("instructions"), str):
            out.append({"role": "system", "content": self.body["instructions"]})
        prev = self.body.get("previous_response_id")
        if prev is not None:
            with self.owner._lock:
                out += [m for m in self.owner._stored.get(prev, []) if m.get("role") != "system"]
        return out + self.input_messages()

    def refuse(self, bad: _Refusal, script: Optional[Script] = None) -> None:
        body = _error_body(bad.code, bad.message, self.rid, param=bad.param,
                           type_=script.error_type if script else None)
        self.h._send_error(bad.status, body, self.rid, script.retry_after if script else None,
                           script.headers if script else None)

    # -- response objects
    def response(self, status: str, output: list, usage: bool = False, error: Optional[dict] = None) -> dict:
        obj: dict[str, Any] = {"id": self.resp_id, "object": "response", "created_at": self.created,
                               "model": self.body["model"], "status": status, "output": output,
                               "parallel_tool_calls": False, "tool_choice": "auto", "tools": []}
        if status == "incomplete":
            obj["incomplete_details"] = {"reason": "max_output_tokens"}
        if error is not None:
            obj["error"] = error
        if usage:
            obj["usage"] = self.usage
        return obj

    @staticmethod
    def reasoning_item(item_id: str, text: Optional[str]) -> dict:
        return {"id": item_id, "type": "reasoning",
                "summary": [] if text is None else [{"type": "summary_text", "text": text}]}

    @staticmethod
    def call_item(call: dict, arguments: str, status: str) -> dict:
        return {"id": f"fc_{call['id']}", "type": "function_call", "call_id": call["id"], "name": call["name"],
                "arguments": arguments, "status": status}

    def message_item(self, item_id: str, text: Optional[str], status: str) -> dict:
        annotations = self.citations(text) if text is not None else []
        content = [] if text is None else [{"type": "output_text", "text": text, "annotations": annotations}]
        return {"id": item_id, "type": "message", "role": "assistant", "status": status, "content": content}

    def citations(self, text: str) -> list[dict]:
        """With the web_search tool: the script's pages as url_citation annotations over the whole text."""
        tools = self.body.get("tools") or []
        if not any(isinstance(t, dict) and t.get("type") == "web_search" for t in tools):
            return []
        return [{"type": "url_citation", "start_index": 0, "end_index": len(text), "url": page["url"],
                 "title": page["title"]} for page in sources_of(self.script)]

    def store(self, text: str) -> None:
        with self.owner._lock:
            self.owner._stored[self.resp_id] = self.messages + [{"role": "assistant", "content": text}]

    def complete(self, script: Script, pieces: list[tuple[str, str]]) -> None:
        reasoning = "".join(p for k, p in pieces if k == "reasoning")
        text = "".join(p for k, p in pieces if k == "text")
        output = []
        if any(k == "reasoning" for k, _ in pieces):
            output.append(self.reasoning_item(f"msg_{uuid.uuid4()}", reasoning))
        status = "incomplete" if self.incomplete else "completed"
        calls = tool_call_wire(script.tool_calls or [])
        if text or not calls:
            output.append(self.message_item(f"msg_{uuid.uuid4()}", text, status))
        output += [self.call_item(call, call["arguments"], "completed") for call in calls]
        fault = script.fault
        if fault == "no_finish":
            status = "in_progress"
        elif fault == "empty":
            output = []
        obj = self.response(status, output, usage=True)
        blocked = (400, _error_body("data_inspection_failed", _OUTPUT_BLOCKED, self.rid))
        self.send_whole(script, obj, blocked)
        if fault is None or fault in ("stall", "split_utf8"):
            self.store(text)

    def stream(self, script: Script, pieces: list[tuple[str, str]]) -> None:
        h, fault = self.h, script.fault
        split = fault == "split_utf8"
        seq = 0
        output: list[dict] = []  # finished items, for response.completed
        current: dict[str, Any] = {}  # the open item: kind, id, index, text

        def emit(type_: str, **fields: Any) -> None:
            nonlocal seq
            payload = _dumps({"type": type_, "sequence_number": seq, **fields})
            seq += 1
            h._raw_frame(b"event: " + type_.encode() + b"\ndata: " + payload + b"\n\n", split)

        def open_item(kind: str) -> None:
            item_id, index = f"msg_{uuid.uuid4()}", len(output)
            current.update(kind=kind, id=item_id, index=index, text="")
            if kind == "reasoning":
                emit("response.output_item.added", output_index=index, item=self.reasoning_item(item_id, None))
                emit("response.reasoning_summary_part.added", item_id=item_id, output_index=index, summary_index=0,
                     part={"type": "summary_text", "text": ""})
            else:
                emit("response.output_item.added", output_index=index,
                     item=self.message_item(item_id, None, "in_progress"))
                emit("response.content_part.added", item_id=item_id, output_index=index, content_index=0,
                     part={"type": "output_text", "text": "", "annotations": []})

        def delta(piece: str) -> None:
            current["text"] += piece
            ids = {"item_id": current["id"], "output_index": current["index"]}
            if current["kind"] == "reasoning":
                emit("response.reasoning_summary_text.delta", **ids, summary_index=0, delta=piece)
            else:
                emit("response.output_text.delta", **ids, content_index=0, delta=piece, logprobs=[])

        def close_item() -> None:
            if not current:
                return
            text, ids = current["text"], {"item_id": current["id"], "output_index": current["index"]}
            if current["kind"] == "reasoning":
                emit("response.reasoning_summary_text.done", **ids, summary_index=0, text=text)
                emit("response.reasoning_summary_part.done", **ids, summary_index=0,
                     part={"type": "summary_text", "text": text})
                item = self.reasoning_item(current["id"], text)
            else:
                for n, annotation in enumerate(self.citations(text)):
                    emit("response.output_text.annotation.added", **ids, content_index=0, annotation_index=n,
                         annotation=annotation)
                emit("response.output_text.done", **ids, content_index=0, text=text, logprobs=[])
                emit("response.content_part.done", **ids, content_index=0,
                     part={"type": "output_text", "text": text, "annotations": self.citations(text)})
                item = self.message_item(current["id"], text, "incomplete" if self.incomplete else "completed")
            emit("response.output_item.done", output_index=current["index"], item=item)
            output.append(item)
            current.clear()

        def fail() -> None:
            """moderation_mid: an error event (or response.failed), then the body ends."""
            error = {"code": "data_inspection_failed", "message": _OUTPUT_BLOCKED}
            if script.error_event == "response.failed":
                emit("response.failed", response=self.response("failed", output, error=error))
            else:
                emit("error", **error, param=None)
            self.end_stream()

        h._start(200, "text/event-stream;charset=UTF-8", self.rid, script.headers)
        if fault == "empty":
            self.end_stream()
            return
        emit("response.created", response=self.response("in_progress", []))
        emit("response.in_progress", response=self.response("in_progress", []))
        for i, (kind, piece) in enumerate(pieces):
            if i == script.fault_after and fault is not None:
                if fault in ("cut", "reset"):
                    self.cut(fault)
                if fault == "moderation_mid":
                    fail()
                    return
                if fault == "malformed":
                    h._raw_frame(b"event: response.output_text.delta\ndata: {not json\n\n")
                elif fault == "stall":
                    h._sleep(script.stall_seconds)
            if i > 0:
                h._sleep(script.chunk_delay)
            if current.get("kind") != kind:
                close_item()
                open_item(kind)
            delta(piece)
        if fault in ("cut", "reset", "moderation_mid") and script.fault_after >= len(pieces):
            if fault == "moderation_mid":
                fail()
                return
            self.cut(fault)
        calls = tool_call_wire(script.tool_calls or [])
        if current.get("kind") != "text" and not any(item["type"] == "message" for item in output) and not calls:
            close_item()
            open_item("text")  # an empty answer still has its message item
        close_item()
        for call in calls:
            index = len(output)
            emit("response.output_item.added", output_index=index, item=self.call_item(call, "", "in_progress"))
            for piece in [call["arguments"][i:i + script.chunk_chars]
                          for i in range(0, len(call["arguments"]), max(1, script.chunk_chars))]:
                emit("response.function_call_arguments.delta", item_id=f"fc_{call['id']}", output_index=index,
                     delta=piece)
            emit("response.function_call_arguments.done", item_id=f"fc_{call['id']}", output_index=index,
                 arguments=call["arguments"])
            item = self.call_item(call, call["arguments"], "completed")
            emit("response.output_item.done", output_index=index, item=item)
            output.append(item)
        text = "".join(item["content"][0]["text"] for item in output if item["type"] == "message")
        if fault != "no_finish":
            final = "incomplete" if self.incomplete else "completed"
            emit(f"response.{final}", response=self.response(final, output, usage=True))
            self.store(text)
        self.end_stream()


# ---------------------------------------------------------------- native DashScope

class _Native(_Route):
    def __init__(self, h, body: Any, multimodal: bool) -> None:
        super().__init__(h, body)
        self.multimodal = multimodal
        self.sse = h.headers.get("X-DashScope-SSE", "").strip().lower() == "enable"

    def run(self) -> None:
        bad = self.check()
        if bad:
            self.refuse(bad)
            return
        body = self.body
        params = self.params
        messages = body["input"]["messages"]
        chatlike = {"model": body["model"], "messages": messages, "enable_thinking": params.get("enable_thinking"),
                    "response_format": params.get("response_format")}
        script = self.take_script()
        scripted = self.scripted_error(script)
        if scripted:
            self.refuse(scripted, script)
            return
        pieces, finish = self.pieces(chatlike, script, params.get("max_tokens"))
        self.thinking = any(k == "reasoning" for k, _ in pieces)
        media = sum(1 for m in messages if isinstance(m, dict) and isinstance(m.get("content"), list)
                    for p in m["content"] if isinstance(p, dict) and ("image" in p or "video" in p))
        self.text_tokens = _words(messages) + 10
        self.image_tokens = media * IMAGE_TOKENS
        self.message_format = self.multimodal or params.get("result_format") == "message"
        if self.sse:
            self.stream(script, pieces, finish)
        else:
            self.complete(script, pieces, finish)

    @property
    def params(self) -> dict:
        params = self.body.get("parameters")
        return params if isinstance(params, dict) else {}

    # -- request
    def check(self) -> Optional[_Refusal]:
        bad = _common_checks(self.h, self.body)
        if bad:
            return bad
        if bool(MULTIMODAL_ONLY.match(self.body["model"])) != self.multimodal:
            return _Refusal(400, "invalid_parameter_error", URL_ERROR)
        inp = self.body.get("input")
        messages = inp.get("messages") if isinstance(inp, dict) else None
        if not isinstance(messages, list) or not messages:
            return _Refusal(400, "invalid_parameter_error", "Input messages must be a non-empty list.", "messages")
        bad = _range_checks(self.params, "max_tokens")
        if bad:
            bad.message = f"<400> InternalError.Algo.InvalidParameter: {bad.message}"
            return bad
        problem = check_tools(self.params.get("tools")) or check_tool_messages(messages)
        if problem:
            return _Refusal(400, "invalid_parameter_error", f"<400> InternalError.Algo.InvalidParameter: {problem}")
        if _blocked(messages):
            return _Refusal(400, "data_inspection_failed")
        return None

    def error_body(self, bad: _Refusal) -> dict:
        code, message = _NATIVE.get(bad.code, (bad.code, bad.code))
        return {"code": code, "message": bad.message if bad.message is not None else message,
                "request_id": self.rid}

    def refuse(self, bad: _Refusal, script: Optional[Script] = None) -> None:
        """JSON for non-stream requests and for 401; one ``event:error`` frame for stream requests."""
        h, body = self.h, self.error_body(bad)
        headers = dict(script.headers or {}) if script else {}
        if script and script.retry_after is not None:
            headers["Retry-After"] = script.retry_after
        if not self.sse or bad.status == 401:
            h._send_json(bad.status, body, self.rid, headers)
            return
        data = self.frame_bytes(1, "error", bad.status, _dumps(body))
        # the service answers a url error on a stream with HTTP 200 and the error frame
        status = 200 if bad.message == URL_ERROR else bad.status
        h._start(status, "text/event-stream;charset=UTF-8", self.rid, headers, len(data))
        h.wfile.write(data)
        h._rec.finished = time.monotonic()

    # -- response objects
    @staticmethod
    def frame_bytes(n: int, event: str, status: int, data: bytes) -> bytes:
        return b"id:%d\nevent:%s\n:HTTP_STATUS/%d\ndata:%s\n\n" % (n, event.encode(), status, data)

    def usage(self, n_text: int, n_reason: int) -> dict:
        out = n_text + n_reason
        inp = self.text_tokens + self.image_tokens
        usage: dict[str, Any] = {"input_tokens": inp, "output_tokens": out, "total_tokens": inp + out}
        if self.multimodal:
            usage["input_tokens_details"] = {"text_tokens": self.text_tokens, "image_tokens": self.image_tokens}
            if self.image_tokens:
                usage["image_tokens"] = self.image_tokens
        if self.thinking:
            usage["output_tokens_details"] = {"text_tokens": n_text, "reasoning_tokens": n_reason}
        return usage

    def output(self, text: str, reasoning: str, finish: str, logprobs: Optional[dict] = None,
               tool_calls: Optional[list] = None) -> dict:
        if not self.message_format:
            return {"text": text, "finish_reason": finish}
        message: dict[str, Any] = {"role": "assistant",
                                   "content": ([{"text": text}] if text else []) if self.multimodal else text}
        if self.thinking:
            message["reasoning_content"] = reasoning
        if tool_calls:
            message["tool_calls"] = tool_calls
        choice: dict[str, Any] = {"finish_reason": finish, "message": message}
        if logprobs is not None:
            choice["logprobs"] = logprobs
        out: dict[str, Any] = {"choices": [choice]}
        if wants_sources(self.params):
            out["search_info"] = search_info(self.script)
        return out

    def wants_logprobs(self) -> bool:
        return self.params.get("logprobs") is True

    def complete(self, script: Script, pieces: list[tuple[str, str]], finish: str) -> None:
        reasoning = "".join(p for k, p in pieces if k == "reasoning")
        text_pieces = [p for k, p in pieces if k == "text"]
        fault = script.fault
        logprobs = None
        if self.wants_logprobs():
            k = self.params.get("top_logprobs") or 0
            logprobs = {"content": [token_logprobs(p, i, k)["content"][0] for i, p in enumerate(text_pieces)]}
        calls = [{"index": i, "id": c["id"], "type": "function",
                  "function": {"name": c["name"], "arguments": c["arguments"]}}
                 for i, c in enumerate(tool_call_wire(script.tool_calls or []))]
        output = self.output("".join(text_pieces), reasoning, "null" if fault == "no_finish" else finish, logprobs,
                             calls)
        if fault == "empty":
            output = {"choices": []} if self.message_format else {"text": None, "finish_reason": None}
        usage = script.usage or self.usage(len(text_pieces), len(pieces) - len(text_pieces))
        obj = {"output": output, "usage": usage, "request_id": self.rid}
        blocked = (400, {"code": "DataInspectionFailed", "message": _OUTPUT_BLOCKED, "request_id": self.rid})
        self.send_whole(script, obj, blocked)

    def stream(self, script: Script, pieces: list[tuple[str, str]], finish: str) -> None:
        h, fault = self.h, script.fault
        split = fault == "split_utf8"
        incremental = self.params.get("incremental_output") is True
        n = 0
        text = reasoning = ""
        n_text = n_reason = 0

        def frame(data: bytes, event: str = "result", status: int = 200) -> None:
            nonlocal n
            n += 1
            h._raw_frame(self.frame_bytes(n, event, status, data), split)

        def result(new_text: str, new_reason: str, finish_reason: str, logprobs: Optional[dict] = None,
                   tool_calls: Optional[list] = None) -> None:
            shown = (new_text, new_reason) if incremental else (text, reasoning)
            usage = script.usage or self.usage(n_text, n_reason)
            frame(_dumps({"output": self.output(*shown, finish_reason, logprobs, tool_calls), "usage": usage,
                          "request_id": self.rid}))

        def blocked() -> None:
            frame(_dumps({"code": "DataInspectionFailed", "message": _OUTPUT_BLOCKED, "request_id": self.rid}),
                  "error", 400)
            self.end_stream()

        h._start(200, "text/event-stream;charset=UTF-8", self.rid, script.headers)
        if fault == "empty":
            self.end_stream()
            return
        for i, (kind, piece) in enumerate(pieces):
            if i == script.fault_after and fault is not None:
                if fault in ("cut", "reset"):
                    self.cut(fault)
                if fault == "moderation_mid":
                    blocked()
                    return
                if fault == "malformed":
                    frame(b"{not json")
                elif fault == "stall":
                    h._sleep(script.stall_seconds)
            if i > 0:
                h._sleep(script.chunk_delay)
            if kind == "reasoning":
                reasoning += piece
                n_reason += 1
                result("", piece, "null")
            else:
                text += piece
                n_text += 1
                logprobs = (token_logprobs(piece, i, self.params.get("top_logprobs") or 0)
                            if self.wants_logprobs() else None)
                result(piece, "", "null", logprobs)
        if fault in ("cut", "reset", "moderation_mid") and script.fault_after >= len(pieces):
            if fault == "moderation_mid":
                blocked()
                return
            self.cut(fault)
        for i, call in enumerate(tool_call_wire(script.tool_calls or [])):
            # incremental: id and name first, then the arguments in pieces
            result("", "", "null", tool_calls=[{"index": i, "id": call["id"], "type": "function",
                                                "function": {"name": call["name"], "arguments": ""}}])
            for j in range(0, len(call["arguments"]), max(1, script.chunk_chars)):
                result("", "", "null", tool_calls=[{"index": i, "id": "", "type": "function", "function": {
                    "arguments": call["arguments"][j:j + script.chunk_chars]}}])
        if fault != "no_finish":
            result("", "", finish)
        self.end_stream()


__all__ = ["serve", "MULTIMODAL_ONLY", "URL_ERROR", "IMAGE_TOKENS"]
