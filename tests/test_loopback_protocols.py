"""The loopback server's Responses API and native DashScope routes, driven by the real SDKs.

``openai`` (``AsyncOpenAI(...).responses``) speaks the Responses API and the
``dashscope`` SDK the native protocol (``Generation``, ``MultiModalConversation``
and their ``Aio*`` twins).  These tests pin the wire formats and how each SDK
reacts to each fault, so backend tests can rely on them.  Async cases run with
``asyncio.run``; every dashscope async case closes the SDK's shared aiohttp
session before its loop ends (see ``test_aio_shared_session_warning``).
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import subprocess
import sys
import textwrap
from typing import Any

import aiohttp
import dashscope
import openai
import pytest
import requests
from dashscope.api_entities import aio_session

try:
    from loopback import (DEFAULT_KEY, DEFAULT_MODELS, NATIVE_MULTIMODAL_PATH, NATIVE_TEXT_PATH, RESPONSES_PATH,
                          LoopbackServer, Script)
    from loopback_protocols import IMAGE_TOKENS, URL_ERROR
except ImportError:  # tests/ became a package
    from tests.loopback import (DEFAULT_KEY, DEFAULT_MODELS, NATIVE_MULTIMODAL_PATH, NATIVE_TEXT_PATH,
                                RESPONSES_PATH, LoopbackServer, Script)
    from tests.loopback_protocols import IMAGE_TOKENS, URL_ERROR

KEY = DEFAULT_KEY
QUESTION = "What is 2+2?\nAnswer tersely."
USER = [{"role": "user", "content": QUESTION}]
ECHO = "**Echo:** What is 2+2?\n\n- first point\n- second point\n\nDone."
REASONING = "Let me think about this. The user asks: What is 2+2?\nAnswer tersely.. I will answer briefly."
N_REASON, N_TEXT = -(-len(REASONING) // 4), -(-len(ECHO) // 4)  # default chunk_chars=4
PROMPT_TOKENS = len(QUESTION.split()) + 10
RESPONSES_BASE = RESPONSES_PATH.rsplit("/", 1)[0]


@pytest.fixture(scope="module")
def _server():
    with LoopbackServer() as srv:
        yield srv


@pytest.fixture
def server(_server: LoopbackServer, monkeypatch) -> LoopbackServer:
    _server.reset()
    _server.valid_keys = {KEY}
    _server.models = set(DEFAULT_MODELS)
    monkeypatch.setattr(dashscope, "base_http_api_url", _server.url + "/api/v1")
    monkeypatch.setattr(dashscope, "api_key", KEY)
    yield _server
    _server.reset()


def no_session_left(aio_session) -> bool:
    """No aiohttp session of the loops these tests made is left open (the package's own loop keeps one)."""
    from qwen_magics import runner

    return set(aio_session._aio_sessions) <= {runner._loop}


def run(coro):
    return asyncio.run(coro)


def raw(server: LoopbackServer, path: str, body: Any, headers: dict | None = None) -> tuple[int, dict, bytes]:
    """One plain POST (stdlib): status, lower-cased headers, raw body bytes."""
    conn = http.client.HTTPConnection(*server.url[len("http://"):].split(":"), timeout=5)
    try:
        conn.request("POST", path, body=json.dumps(body).encode(),
                     headers={"Content-Type": "application/json", "Authorization": f"Bearer {KEY}", **(headers or {})})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


# ================================================================== Responses API

def rclient(server: LoopbackServer, base: str = RESPONSES_BASE, **kw: Any) -> openai.AsyncOpenAI:
    kw.setdefault("api_key", KEY)
    kw.setdefault("max_retries", 0)
    kw.setdefault("timeout", 10.0)
    kw.setdefault("http_client", openai.DefaultAsyncHttpx2Client(verify=False))
    return openai.AsyncOpenAI(base_url=server.url + base, **kw)


async def rcreate(server: LoopbackServer, model: str = "qwen3.5-plus", input: Any = QUESTION,
                  client_kw: dict | None = None, **kw: Any):
    async with rclient(server, **(client_kw or {})) as client:
        return await client.responses.create(model=model, input=input, **kw)


async def rstream(server: LoopbackServer, model: str = "qwen3.5-plus", input: Any = QUESTION,
                  sink: list | None = None, client_kw: dict | None = None, **kw: Any) -> list:
    """Every typed event of one streamed response (also appended to ``sink``)."""
    events: list = sink if sink is not None else []
    async with rclient(server, **(client_kw or {})) as client:
        stream = await client.responses.create(model=model, input=input, stream=True, **kw)
        try:
            async for event in stream:
                events.append(event)
        finally:
            await stream.close()
    return events


def joined(events: list, type_: str) -> str:
    return "".join(e.delta for e in events if e.type == type_)


def strict(event) -> None:
    """Validate one event against the SDK's own model (the SDK itself only constructs, never validates).

    The one gap, by design: DashScope's usage has ``input_tokens_details.cached_tokens`` only, while
    openai 3.57 types also require ``cache_write_tokens``; the SDK leaves it None.
    """
    data = event.to_dict()
    usage = (data.get("response") or {}).get("usage")
    if usage:
        assert "cache_write_tokens" not in usage["input_tokens_details"]
        usage["input_tokens_details"]["cache_write_tokens"] = 0
    type(event).model_validate(data)


def test_responses_non_stream_shape(server: LoopbackServer) -> None:
    async def go():
        async with rclient(server) as client:
            got = await client.responses.with_raw_response.create(model="qwen3.5-plus", input=QUESTION)
            return got, got.parse()

    got, done = run(go())
    body = json.loads(got.content)
    assert set(body) == {"id", "object", "created_at", "model", "status", "output", "parallel_tool_calls",
                         "tool_choice", "tools", "usage"}
    assert body["object"] == "response" and body["status"] == "completed" and body["model"] == "qwen3.5-plus"
    reasoning, message = body["output"]
    assert reasoning == {"id": reasoning["id"], "type": "reasoning",
                         "summary": [{"type": "summary_text", "text": REASONING}]}
    assert message == {"id": message["id"], "type": "message", "role": "assistant", "status": "completed",
                       "content": [{"type": "output_text", "text": ECHO, "annotations": []}]}
    assert reasoning["id"].startswith("msg_") and message["id"].startswith("msg_")
    usage = body["usage"]
    assert usage["input_tokens"] == PROMPT_TOKENS and usage["output_tokens"] == N_REASON + N_TEXT
    assert usage["total_tokens"] == PROMPT_TOKENS + N_REASON + N_TEXT
    assert usage["output_tokens_details"] == {"reasoning_tokens": N_REASON}
    assert usage["input_tokens_details"] == {"cached_tokens": 0}
    assert usage["x_details"][0]["x_billing_type"] == "response_api"
    # the SDK's typed view
    assert done.output_text == ECHO and done.output[0].summary[0].text == REASONING
    assert done.usage.output_tokens_details.reasoning_tokens == N_REASON
    assert got.headers["x-request-id"] == server.requests[-1].request_id
    rec = server.requests[-1]
    assert rec.path == RESPONSES_PATH and rec.body == {"model": "qwen3.5-plus", "input": QUESTION}


def test_responses_stream_events(server: LoopbackServer) -> None:
    events = run(rstream(server))
    expected = (["response.created", "response.in_progress",
                 "response.output_item.added", "response.reasoning_summary_part.added"]
                + ["response.reasoning_summary_text.delta"] * N_REASON
                + ["response.reasoning_summary_text.done", "response.reasoning_summary_part.done",
                   "response.output_item.done",
                   "response.output_item.added", "response.content_part.added"]
                + ["response.output_text.delta"] * N_TEXT
                + ["response.output_text.done", "response.content_part.done", "response.output_item.done",
                   "response.completed"])
    assert [e.type for e in events] == expected
    assert [e.sequence_number for e in events] == list(range(len(events)))
    for e in events:
        strict(e)  # every required field of every typed event is there
    names = {type(e).__name__ for e in events}
    assert {"ResponseReasoningSummaryTextDeltaEvent", "ResponseTextDeltaEvent", "ResponseCompletedEvent"} <= names

    assert joined(events, "response.reasoning_summary_text.delta") == REASONING
    assert joined(events, "response.output_text.delta") == ECHO
    r_id = events[2].item.id
    added = [e for e in events if e.type == "response.output_item.added"]
    assert [a.output_index for a in added] == [0, 1] and added[0].item.type == "reasoning"
    assert added[1].item.type == "message" and added[1].item.status == "in_progress" and added[1].item.content == []
    m_id = added[1].item.id
    assert r_id != m_id
    for e in events:
        if e.type.startswith("response.reasoning_summary"):
            assert (e.item_id, e.output_index, e.summary_index) == (r_id, 0, 0)
        elif e.type.startswith(("response.output_text", "response.content_part")):
            assert (e.item_id, e.output_index, e.content_index) == (m_id, 1, 0)
    by_type = {e.type: e for e in events}
    assert by_type["response.reasoning_summary_text.done"].text == REASONING
    assert by_type["response.reasoning_summary_part.done"].part.text == REASONING
    assert by_type["response.output_text.done"].text == ECHO
    assert by_type["response.content_part.done"].part.text == ECHO
    created, completed = events[0].response, events[-1].response
    assert created.status == "in_progress" and created.output == [] and created.usage is None
    assert completed.id == created.id and completed.status == "completed"
    assert completed.output_text == ECHO and completed.output[0].summary[0].text == REASONING
    assert completed.usage.output_tokens == N_REASON + N_TEXT
    assert completed.usage.output_tokens_details.reasoning_tokens == N_REASON
    assert server.requests[-1].body["stream"] is True


def test_responses_wire_frames(server: LoopbackServer) -> None:
    status, headers, data = raw(server, RESPONSES_PATH, {"model": "qwen-plus", "input": "hi", "stream": True})
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    frames = data.decode().split("\n\n")
    assert frames[-1] == ""
    for n, frame in enumerate(frames[:-1]):
        event, payload = frame.split("\n")
        assert event.startswith("event: ") and payload.startswith("data: {")
        body = json.loads(payload[len("data: "):])
        assert body["type"] == event[len("event: "):] and body["sequence_number"] == n
    assert frames[-2].startswith("event: response.completed\n")


def test_responses_stream_helper_accepts_the_event_sequence(server: LoopbackServer) -> None:
    """``responses.stream()`` keeps a snapshot and checks item identities: the sequence satisfies it."""
    async def go():
        async with rclient(server) as client:
            async with client.responses.stream(model="qwen3.5-plus", input=QUESTION) as stream:
                snapshots = [e.snapshot async for e in stream if e.type == "response.output_text.delta"]
                return snapshots, await stream.get_final_response()

    snapshots, final = run(go())
    assert snapshots[-1] == ECHO and snapshots[0] == ECHO[:4]
    assert final.output_text == ECHO and final.status == "completed"


def test_responses_thinking_instructions_and_message_input(server: LoopbackServer) -> None:
    plain = run(rcreate(server, model="qwen-plus"))
    assert [o.type for o in plain.output] == ["message"] and plain.usage.output_tokens_details.reasoning_tokens == 0
    on = run(rcreate(server, model="qwen-plus", extra_body={"enable_thinking": True}))
    assert on.output[0].summary[0].text == REASONING
    assert server.requests[-1].body["enable_thinking"] is True
    off = run(rstream(server, model="qwen3.5-flash", extra_body={"enable_thinking": False}))
    assert not [e for e in off if e.type.startswith("response.reasoning")]
    assert [e.output_index for e in off if e.type == "response.output_item.added"] == [0]
    assert run(rstream(server, model="qwen3-32b"))[2].item.type == "reasoning"

    parts = [{"role": "user", "content": [{"type": "input_text", "text": "Parts work\ntoo"}]}]
    done = run(rcreate(server, model="qwen-plus", input=parts, instructions="Be brief."))
    assert done.output_text.startswith("**Echo:** Parts work\n")
    assert server.requests[-1].body["instructions"] == "Be brief."
    assert server.requests[-1].body["input"] == parts


def test_responses_json_mode_and_max_output_tokens(server: LoopbackServer) -> None:
    done = run(rcreate(server, model="qwen-plus", text={"format": {"type": "json_object"}}))
    assert json.loads(done.output_text) == {"answer": QUESTION[:40], "ok": True}

    cut = run(rcreate(server, model="qwen-plus", max_output_tokens=3))
    assert cut.status == "incomplete" and cut.incomplete_details.reason == "max_output_tokens"
    assert cut.output_text == ECHO[:12] and cut.usage.output_tokens == 3 and cut.output[0].status == "incomplete"
    events = run(rstream(server, model="qwen-plus", max_output_tokens=3))
    assert events[-1].type == "response.incomplete" and events[-1].response.incomplete_details.reason == \
        "max_output_tokens"
    assert joined(events, "response.output_text.delta") == ECHO[:12]


def test_responses_previous_response_id_and_new_path(server: LoopbackServer) -> None:
    first = run(rcreate(server, model="qwen-plus", instructions="Be brief."))
    events = run(rstream(server, model="qwen-plus", input="And 3+3?", previous_response_id=first.id,
                         client_kw={"base": "/compatible-mode/v1"}))  # the newer path shares the store
    second = events[-1].response
    assert second.output_text == "**Echo:** And 3+3?\n\n- first point\n- second point\n\nDone."
    history = len(QUESTION.split()) + len(ECHO.split()) + len("And 3+3?".split())
    assert second.usage.input_tokens == history + 10  # instructions are not inherited
    assert server.requests[-1].path == "/compatible-mode/v1/responses"
    assert server.requests[-1].body["previous_response_id"] == first.id

    with pytest.raises(openai.BadRequestError) as info:
        run(rcreate(server, model="qwen-plus", previous_response_id="nope"))
    assert info.value.code == "invalid_parameter_error" and info.value.param == "previous_response_id"


def test_responses_http_errors(server: LoopbackServer) -> None:
    server.enqueue(Script(text="kept"))
    with pytest.raises(openai.AuthenticationError) as info:
        run(rcreate(server, client_kw={"api_key": "sk-wrong"}))
    assert info.value.code == "invalid_api_key" and info.value.status_code == 401
    assert set(info.value.response.json()) == {"error", "request_id"}

    with pytest.raises(openai.NotFoundError) as info:
        run(rstream(server, model="qwen-nope"))
    assert info.value.code == "model_not_found" and "qwen-nope" in info.value.message

    for kw, param in [({"temperature": 2.0}, "temperature"), ({"top_p": 0.0}, "top_p"),
                      ({"max_output_tokens": 0}, "max_output_tokens")]:
        with pytest.raises(openai.BadRequestError) as info:
            run(rcreate(server, **kw))
        assert info.value.code == "invalid_parameter_error" and info.value.param == param

    with pytest.raises(openai.BadRequestError) as info:
        run(rstream(server, input="tell me [[blocked]] things"))
    assert info.value.code == "data_inspection_failed" and info.value.type == "data_inspection_failed"
    assert [r.status for r in server.requests] == [401, 404, 400, 400, 400, 400]
    assert server.pending == 1  # refused requests do not consume scripts
    assert run(rcreate(server, model="qwen-plus")).output_text == "kept"


def test_responses_429_then_retry(server: LoopbackServer) -> None:
    server.enqueue(Script(status=429, retry_after="0.01"))
    events = run(rstream(server, client_kw={"max_retries": 1}))
    assert events[-1].type == "response.completed"
    assert [r.status for r in server.requests] == [429, 200]

    server.enqueue(Script(status=429, retry_after="7"))
    with pytest.raises(openai.RateLimitError) as info:
        run(rcreate(server))
    assert info.value.code == "limit_requests" and info.value.response.headers["retry-after"] == "7"


def test_responses_moderation_mid_stream_is_an_event_not_an_exception(server: LoopbackServer) -> None:
    """The SDK yields ``ResponseErrorEvent`` (or ``ResponseFailedEvent``) and raises nothing."""
    server.enqueue(Script(reasoning="", text="abcdefghijkl", fault="moderation_mid", fault_after=2))
    events = run(rstream(server, model="qwen-plus"))
    last = events[-1]
    assert type(last).__name__ == "ResponseErrorEvent" and last.type == "error"
    assert last.code == "data_inspection_failed" and "inappropriate" in last.message
    assert last.sequence_number == len(events) - 1
    assert joined(events, "response.output_text.delta") == "abcdefgh"
    assert not [e for e in events if e.type == "response.completed"]

    server.enqueue(Script(reasoning="", text="abcdefghijkl", fault="moderation_mid", fault_after=2,
                          error_event="response.failed"))
    events = run(rstream(server, model="qwen-plus"))
    last = events[-1]
    assert type(last).__name__ == "ResponseFailedEvent" and last.response.status == "failed"
    assert last.response.error.code == "data_inspection_failed"

    # the stream() helper passes the error event on; only get_final_response() complains
    server.enqueue(Script(reasoning="", text="abcdefghijkl", fault="moderation_mid", fault_after=2))

    async def helper():
        async with rclient(server) as client:
            async with client.responses.stream(model="qwen-plus", input=QUESTION) as stream:
                types = [e.type async for e in stream]
                with pytest.raises(RuntimeError, match="response.completed"):
                    await stream.get_final_response()
                return types

    assert run(helper())[-1] == "error"


def test_responses_stream_faults(server: LoopbackServer) -> None:
    server.enqueue(Script(reasoning="", text="abcdefghijkl", fault="cut", fault_after=2))
    events = run(rstream(server, model="qwen-plus"))  # ends quietly, without response.completed
    assert events[-1].type == "response.output_text.delta" and joined(events, "response.output_text.delta") == \
        "abcdefgh"

    server.enqueue(Script(fault="reset", fault_after=2))
    with pytest.raises(openai.APIConnectionError):
        run(rstream(server))

    server.enqueue(Script(fault="malformed", fault_after=1))
    with pytest.raises(json.JSONDecodeError):
        run(rstream(server))

    server.enqueue(Script(fault="empty"))
    assert run(rstream(server)) == []

    server.enqueue(Script(fault="no_finish"))
    events = run(rstream(server))
    assert events[-1].type == "response.output_item.done" and joined(events, "response.output_text.delta") == ECHO

    server.enqueue(Script(fault="stall", fault_after=1, stall_seconds=1.0))
    with pytest.raises(openai.APITimeoutError):
        run(rstream(server, client_kw={"timeout": 0.3}))

    server.enqueue(Script(text="ü" * 6, reasoning="", fault="split_utf8"))
    assert joined(run(rstream(server, model="qwen-plus")), "response.output_text.delta") == "ü" * 6


def test_responses_non_stream_faults(server: LoopbackServer) -> None:
    server.enqueue(Script(fault="moderation_mid"))
    with pytest.raises(openai.BadRequestError) as info:
        run(rcreate(server))
    assert info.value.code == "data_inspection_failed"

    server.enqueue(Script(fault="malformed"))
    with pytest.raises(json.JSONDecodeError):
        run(rcreate(server))

    server.enqueue(Script(fault="cut"))
    with pytest.raises(openai.APIConnectionError):
        run(rcreate(server))

    server.enqueue(Script(fault="empty"))
    assert run(rcreate(server)).output == []

    server.enqueue(Script(fault="no_finish"))
    assert run(rcreate(server)).status == "in_progress"


# ================================================================== native DashScope

def gen(model: str = "qwen-plus", messages: Any = USER, **kw: Any) -> list:
    """Every frame of one streamed ``Generation.call`` (sync)."""
    kw.setdefault("incremental_output", True)
    return list(dashscope.Generation.call(model=model, messages=messages, result_format="message", stream=True,
                                          **kw))


def mm_text(content: Any) -> str:
    assert isinstance(content, list)
    return "".join(p["text"] for p in content)


def pieces(frames: list, multimodal: bool = False) -> tuple[str, str]:
    msgs = [f.output.choices[0].message for f in frames]
    reasoning = "".join(m.get("reasoning_content") or "" for m in msgs)
    text = "".join(mm_text(m.content) if multimodal else m.content for m in msgs)
    return reasoning, text


def test_native_stream_incremental_with_reasoning(server: LoopbackServer) -> None:
    frames = gen(enable_thinking=True)
    assert all(f.status_code == 200 for f in frames)
    assert [f.output.choices[0].finish_reason for f in frames] == ["null"] * (N_REASON + N_TEXT) + ["stop"]
    assert pieces(frames) == (REASONING, ECHO)
    kinds = []
    for f in frames[:-1]:  # each frame carries one new piece: reasoning first, then content
        m = f.output.choices[0].message
        assert m.role == "assistant" and bool(m.content) != bool(m.reasoning_content)
        kinds.append("r" if m.reasoning_content else "t")
    assert kinds == ["r"] * N_REASON + ["t"] * N_TEXT
    last_message = frames[-1].output.choices[0].message
    assert last_message.content == "" and last_message.reasoning_content == ""
    outs = [f.usage.output_tokens for f in frames]
    assert outs == list(range(1, N_REASON + N_TEXT + 1)) + [N_REASON + N_TEXT]  # usage grows frame by frame
    last = frames[-1].usage
    assert last.input_tokens == PROMPT_TOKENS and last.total_tokens == PROMPT_TOKENS + N_REASON + N_TEXT
    assert last.output_tokens_details == {"text_tokens": N_TEXT, "reasoning_tokens": N_REASON}
    rec = server.requests[-1]
    assert {f.request_id for f in frames} == {rec.request_id}
    assert rec.path == NATIVE_TEXT_PATH and rec.headers["x-dashscope-sse"] == "enable"
    assert rec.body["model"] == "qwen-plus" and rec.body["input"] == {"messages": USER}
    assert rec.body["parameters"]["incremental_output"] is True
    assert rec.body["parameters"]["result_format"] == "message"
    assert rec.body["parameters"]["enable_thinking"] is True


def test_native_stream_cumulative(server: LoopbackServer) -> None:
    frames = gen(model="qwen3-32b", incremental_output=None)  # server default: cumulative
    assert "incremental_output" not in server.requests[-1].body["parameters"]
    texts = [f.output.choices[0].message.content for f in frames]
    reasons = [f.output.choices[0].message.reasoning_content for f in frames]
    assert texts[-1] == ECHO and reasons[-1] == REASONING and frames[-1].output.choices[0].finish_reason == "stop"
    assert all(ECHO.startswith(t) for t in texts) and all(REASONING.startswith(r) for r in reasons)
    assert texts == sorted(texts, key=len) and reasons == sorted(reasons, key=len)
    assert reasons[0] == REASONING[:4] and texts[0] == ""


def test_native_sdk_rewrites_incremental_false(server: LoopbackServer) -> None:
    """dashscope 2.x: ``incremental_output=False`` is sent as True and merged back into cumulative frames."""
    frames = gen(model="qwen-plus", incremental_output=False)
    rec = server.requests[-1]
    assert rec.body["parameters"]["incremental_output"] is True
    assert "incremental_to_full/1" in rec.headers["user-agent"]
    texts = [f.output.choices[0].message.content for f in frames]
    assert texts[-1] == ECHO and all(ECHO.startswith(t) for t in texts)


def test_native_wire_frames(server: LoopbackServer) -> None:
    body = {"model": "qwen-plus", "input": {"messages": USER},
            "parameters": {"result_format": "message", "incremental_output": True}}
    status, headers, data = raw(server, NATIVE_TEXT_PATH, body, {"X-DashScope-SSE": "enable"})
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    frames = data.decode().split("\n\n")
    assert frames[-1] == "" and len(frames) == N_TEXT + 2
    for n, frame in enumerate(frames[:-1], 1):
        lines = frame.split("\n")
        assert lines[:3] == [f"id:{n}", "event:result", ":HTTP_STATUS/200"] and lines[3].startswith("data:{")
        assert len(lines) == 4
    first = json.loads(frames[0].split("\n")[3][len("data:"):])
    assert first == {"output": {"choices": [{"finish_reason": "null",
                                             "message": {"role": "assistant", "content": ECHO[:4]}}]},
                     "usage": {"input_tokens": PROMPT_TOKENS, "output_tokens": 1, "total_tokens": PROMPT_TOKENS + 1},
                     "request_id": headers["x-request-id"]}
    assert json.loads(frames[-2].split("\n")[3][5:])["output"]["choices"][0]["finish_reason"] == "stop"

    # a mid-stream error frame: event:error, :HTTP_STATUS/400, the native error body
    server.enqueue(Script(fault="moderation_mid", fault_after=1))
    status, _, data = raw(server, NATIVE_TEXT_PATH, body, {"X-DashScope-SSE": "enable"})
    last = data.decode().split("\n\n")[-2].split("\n")
    assert status == 200 and last[:3] == ["id:2", "event:error", ":HTTP_STATUS/400"]
    assert json.loads(last[3][5:]) == {"code": "DataInspectionFailed",
                                       "message": "Output data may contain inappropriate content.",
                                       "request_id": server.requests[-1].request_id}

    # without the header: one JSON body
    status, headers, data = raw(server, NATIVE_TEXT_PATH, body)
    assert status == 200 and headers["content-type"] == "application/json"
    assert json.loads(data)["output"]["choices"][0]["message"]["content"] == ECHO


def test_native_non_stream(server: LoopbackServer) -> None:
    done = dashscope.Generation.call(model="qwen-plus", messages=USER, result_format="message")
    assert done.status_code == 200 and done.request_id == server.requests[-1].request_id
    choice = done.output.choices[0]
    assert choice.finish_reason == "stop" and choice.message.content == ECHO
    assert "reasoning_content" not in choice.message
    assert done.usage == {"input_tokens": PROMPT_TOKENS, "output_tokens": N_TEXT,
                          "total_tokens": PROMPT_TOKENS + N_TEXT}
    assert "x-dashscope-sse" not in server.requests[-1].headers

    think = dashscope.Generation.call(model="qwen-plus", messages=USER, result_format="message", enable_thinking=True)
    assert think.output.choices[0].message.reasoning_content == REASONING
    assert think.usage.output_tokens_details["reasoning_tokens"] == N_REASON

    legacy = dashscope.Generation.call(model="qwen-plus", messages=USER)  # no result_format: output.text
    assert legacy.output.text == ECHO and legacy.output.finish_reason == "stop" and legacy.output.choices is None

    short = dashscope.Generation.call(model="qwen-plus", messages=USER, result_format="message", max_tokens=3)
    assert short.output.choices[0].finish_reason == "length" and short.output.choices[0].message.content == ECHO[:12]

    probs = dashscope.Generation.call(model="qwen-plus", messages=USER, result_format="message", logprobs=True,
                                      top_logprobs=2).output.choices[0].logprobs["content"]
    assert len(probs) == N_TEXT and probs[0]["token"] == ECHO[:4] and len(probs[0]["top_logprobs"]) == 2
    frame = gen(logprobs=True, top_logprobs=2)[0].output.choices[0]
    assert frame.logprobs["content"][0]["token"] == frame.message.content == ECHO[:4]


def test_multimodal_endpoint_serves_qwen35_and_text_endpoint_refuses_it(server: LoopbackServer) -> None:
    msgs = [{"role": "user", "content": [{"image": "https://example.invalid/cat.png"}, {"text": QUESTION}]}]
    done = dashscope.MultiModalConversation.call(model="qwen3.5-plus", messages=msgs)
    assert done.status_code == 200
    message = done.output.choices[0].message
    assert message.content == [{"text": ECHO}] and message.reasoning_content == REASONING
    assert done.usage.input_tokens == PROMPT_TOKENS + IMAGE_TOKENS and done.usage["image_tokens"] == IMAGE_TOKENS
    assert done.usage.input_tokens_details == {"text_tokens": PROMPT_TOKENS, "image_tokens": IMAGE_TOKENS}
    rec = server.requests[-1]
    assert rec.path == NATIVE_MULTIMODAL_PATH and rec.body["input"] == {"messages": msgs}

    refused = dashscope.Generation.call(model="qwen3.5-plus", messages=USER, result_format="message")
    assert (refused.status_code, refused.code, refused.message) == (400, "InvalidParameter", URL_ERROR)
    assert refused.message.startswith("url error, please check url！")
    frames = gen(model="qwen3.5-plus")  # streamed: HTTP 200 and one error frame; the SDK reports 400
    assert [(f.status_code, f.code, f.message) for f in frames] == [(400, "InvalidParameter", URL_ERROR)]
    assert server.requests[-1].status == 200
    wrong = dashscope.MultiModalConversation.call(model="qwen-plus", messages=msgs)  # and the other way round
    assert (wrong.status_code, wrong.code) == (400, "InvalidParameter") and wrong.message == URL_ERROR


def test_multimodal_stream_parts(server: LoopbackServer) -> None:
    msgs = [{"role": "user", "content": [{"text": QUESTION}]}]
    frames = list(dashscope.MultiModalConversation.call(model="qwen3.5-flash", messages=msgs, stream=True,
                                                        incremental_output=True))
    contents = [f.output.choices[0].message.content for f in frames]
    assert contents[:N_REASON] == [[]] * N_REASON  # only reasoning so far: no parts
    assert all(len(c) == 1 for c in contents[N_REASON:-1]) and contents[-1] == []
    assert pieces(frames, multimodal=True) == (REASONING, ECHO)
    assert frames[-1].output.choices[0].finish_reason == "stop"

    cumulative = list(dashscope.MultiModalConversation.call(model="qwen3.5-flash", messages=msgs, stream=True,
                                                            enable_thinking=False))
    assert cumulative[-1].output.choices[0].message.content == [{"text": ECHO}]
    assert "reasoning_content" not in cumulative[-1].output.choices[0].message
    assert mm_text(cumulative[2].output.choices[0].message.content) == ECHO[:12]


def test_native_request_errors(server: LoopbackServer) -> None:
    server.enqueue(Script(text="kept"))
    bad_key = dashscope.Generation.call(model="qwen-plus", messages=USER, result_format="message", api_key="sk-bad")
    assert (bad_key.status_code, bad_key.code) == (401, "InvalidApiKey") and bad_key.output is None
    frames = gen(api_key="sk-bad")  # a stream request: 401 as JSON, still one response object
    assert [(f.status_code, f.code) for f in frames] == [(401, "InvalidApiKey")]
    assert server.requests[-1].status == 401

    missing = dashscope.Generation.call(model="qwen-nope", messages=USER, result_format="message")
    assert (missing.status_code, missing.code, missing.message) == (404, "ModelNotFound",
                                                                    "The model `qwen-nope` does not exist or you "
                                                                    "do not have access to it.")
    assert [(f.status_code, f.code) for f in gen(model="qwen-nope")] == [(404, "ModelNotFound")]

    for kw, name in [({"temperature": 2.0}, "temperature"), ({"top_p": 0.0}, "top_p"),
                     ({"max_tokens": 0}, "max_tokens")]:
        got = dashscope.Generation.call(model="qwen-plus", messages=USER, result_format="message", **kw)
        assert (got.status_code, got.code) == (400, "InvalidParameter") and f"Range of {name}" in got.message
        assert got.message.startswith("<400> InternalError.Algo.InvalidParameter")

    blocked = [{"role": "user", "content": "say [[blocked]]"}]
    got = dashscope.Generation.call(model="qwen-plus", messages=blocked, result_format="message")
    assert (got.status_code, got.code) == (400, "DataInspectionFailed")
    frames = gen(messages=blocked)
    assert [(f.status_code, f.code) for f in frames] == [(400, "DataInspectionFailed")]
    assert server.requests[-1].status == 400  # stream requests: HTTP 400 with an event:error body
    status, headers, data = raw(server, NATIVE_TEXT_PATH, {"model": "qwen-plus", "input": {"messages": blocked}},
                                {"X-DashScope-SSE": "enable"})
    assert status == 400 and headers["content-type"].startswith("text/event-stream")
    assert data.decode().startswith("id:1\nevent:error\n:HTTP_STATUS/400\ndata:{\"code\":\"DataInspectionFailed\"")
    assert server.pending == 1  # refused requests do not consume scripts
    assert pieces(gen())[1] == "kept"


def test_native_scripted_errors(server: LoopbackServer) -> None:
    server.enqueue(Script(status=429, retry_after="1"))
    got = dashscope.Generation.call(model="qwen-plus", messages=USER, result_format="message")
    assert (got.status_code, got.code) == (429, "Throttling.RateQuota") and got.headers["Retry-After"] == "1"
    server.enqueue(Script(status=429, retry_after="1"))
    frames = gen()
    assert [(f.status_code, f.code) for f in frames] == [(429, "Throttling.RateQuota")]
    assert frames[0].headers["Retry-After"] == "1"
    server.enqueue(Script(status=429, error_code="insufficient_quota"), Script(status=500),
                   Script(status=400, error_code="Custom.Code", error_message="custom"))
    codes = [(r.status_code, r.code) for r in
             (dashscope.Generation.call(model="qwen-plus", messages=USER, result_format="message") for _ in range(3))]
    assert codes == [(429, "Arrearage"), (500, "InternalError"), (400, "Custom.Code")]
    assert server.requests[-1].status == 400 and len(server.requests) == 5  # the SDK never retries


def test_native_stream_faults_sync(server: LoopbackServer) -> None:
    def frames_of(script: Script, **kw) -> list:
        server.enqueue(script)
        return gen(**kw)

    cut = frames_of(Script(reasoning="", text="abcdefghijkl", fault="cut", fault_after=2))
    assert pieces(cut)[1] == "abcdefgh" and cut[-1].output.choices[0].finish_reason == "null"  # quiet end

    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        frames_of(Script(fault="reset", fault_after=2))

    bad = frames_of(Script(reasoning="", text="abcdefghijkl", fault="malformed", fault_after=1))
    assert [(f.status_code, f.code) for f in bad][:3] == [(200, ""), (400, "Unknown"), (200, "")]
    assert bad[1].message == "{not json" and bad[-1].output.choices[0].finish_reason == "stop"  # and it goes on

    assert frames_of(Script(fault="empty")) == []

    mod = frames_of(Script(reasoning="", text="abcdefghijkl", fault="moderation_mid", fault_after=2))
    assert [(f.status_code, f.code) for f in mod] == [(200, ""), (200, ""), (400, "DataInspectionFailed")]
    assert mod[-1].output is None and "inappropriate" in mod[-1].message

    nofin = frames_of(Script(fault="no_finish"))
    assert {f.output.choices[0].finish_reason for f in nofin} == {"null"} and pieces(nofin)[1] == ECHO

    with pytest.raises(requests.exceptions.ConnectionError, match="Read timed out"):
        frames_of(Script(fault="stall", fault_after=1, stall_seconds=1.0), request_timeout=0.3)

    utf = frames_of(Script(reasoning="", text="ü" * 6, fault="split_utf8"))
    assert pieces(utf)[1] == "ü" * 6


def test_native_non_stream_faults_sync(server: LoopbackServer) -> None:
    def call():
        return dashscope.Generation.call(model="qwen-plus", messages=USER, result_format="message")

    server.enqueue(Script(fault="moderation_mid"))
    got = call()
    assert (got.status_code, got.code) == (400, "DataInspectionFailed")
    server.enqueue(Script(fault="malformed"))
    with pytest.raises(requests.exceptions.JSONDecodeError):
        call()
    server.enqueue(Script(fault="cut"))
    before = len(server.requests)
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        call()
    assert len(server.requests) == before + 1  # not retried by the SDK
    server.enqueue(Script(fault="empty"))
    assert call().output.choices == []
    server.enqueue(Script(fault="no_finish"))
    assert call().output.choices[0].finish_reason == "null"


# ------------------------------------------------------------------ native, async

async def aio(make):
    """Run one dashscope async call and close the SDK's shared session before the loop ends."""
    try:
        return await make()
    finally:
        await dashscope.close_shared_aio_session()


async def aio_frames(api=None, **kw) -> list:
    api = api or dashscope.AioGeneration
    kw.setdefault("model", "qwen-plus")
    kw.setdefault("messages", USER)
    reply = await api.call(stream=True, incremental_output=True, result_format="message", **kw)
    return [frame async for frame in reply]


def test_aio_generation_and_multimodal(server: LoopbackServer) -> None:
    frames = run(aio(lambda: aio_frames(enable_thinking=True)))
    assert pieces(frames) == (REASONING, ECHO) and frames[-1].output.choices[0].finish_reason == "stop"
    assert server.requests[-1].headers["x-dashscope-sse"] == "enable"

    msgs = [{"role": "user", "content": [{"text": QUESTION}]}]
    frames = run(aio(lambda: aio_frames(dashscope.AioMultiModalConversation, model="qwen3.5-plus", messages=msgs)))
    assert pieces(frames, multimodal=True) == (REASONING, ECHO)
    assert server.requests[-1].path == NATIVE_MULTIMODAL_PATH

    done = run(aio(lambda: dashscope.AioMultiModalConversation.call(model="qwen3.5-plus", messages=msgs)))
    assert done.output.choices[0].message.content == [{"text": ECHO}]
    done = run(aio(lambda: dashscope.AioGeneration.call(model="qwen-plus", messages=USER, result_format="message")))
    assert done.output.choices[0].message.content == ECHO

    refused = run(aio(lambda: aio_frames(model="qwen3.5-plus")))
    assert [(f.status_code, f.code) for f in refused] == [(400, "InvalidParameter")]
    bad_key = run(aio(lambda: aio_frames(api_key="sk-bad")))
    assert [(f.status_code, f.code) for f in bad_key] == [(401, "InvalidApiKey")]
    assert no_session_left(aio_session)  # every loop's session was closed


def test_aio_faults(server: LoopbackServer) -> None:
    def frames_of(script: Script, **kw) -> list:
        server.enqueue(script)
        return run(aio(lambda: aio_frames(**kw)))

    mod = frames_of(Script(reasoning="", text="abcdefghijkl", fault="moderation_mid", fault_after=2))
    assert [(f.status_code, f.code) for f in mod] == [(200, ""), (200, ""), (400, "DataInspectionFailed")]

    bad = frames_of(Script(reasoning="", text="abcdefghijkl", fault="malformed", fault_after=1))
    assert (bad[1].status_code, bad[1].code) == (500, "Unknown")  # sync reports 400 for the same frame

    cut = frames_of(Script(reasoning="", text="abcdefghijkl", fault="cut", fault_after=2))
    assert pieces(cut)[1] == "abcdefgh" and cut[-1].output.choices[0].finish_reason == "null"

    with pytest.raises(aiohttp.ClientPayloadError):
        frames_of(Script(fault="reset", fault_after=2))

    with pytest.raises(aiohttp.ServerTimeoutError):  # also an asyncio.TimeoutError
        frames_of(Script(fault="stall", fault_after=1, stall_seconds=1.0), request_timeout=0.3)

    server.enqueue(Script(fault="stall", stall_seconds=1.0))
    with pytest.raises(asyncio.TimeoutError):
        run(aio(lambda: dashscope.AioGeneration.call(model="qwen-plus", messages=USER, result_format="message",
                                                     request_timeout=0.3)))
    assert no_session_left(aio_session)


_SESSION_SNIPPET = textwrap.dedent("""
    import asyncio, sys
    sys.path.insert(0, {tests!r})
    import aiohttp, dashscope
    from loopback import LoopbackServer, DEFAULT_KEY

    KW = dict(model="qwen-plus", messages=[{{"role": "user", "content": "hi"}}], result_format="message")

    async def shared(close):
        reply = await dashscope.AioGeneration.call(**KW)
        if close:
            await dashscope.close_shared_aio_session()
        return reply.status_code

    async def own():
        async with aiohttp.ClientSession() as session:
            return (await dashscope.AioGeneration.call(session=session, **KW)).status_code

    with LoopbackServer() as server:
        dashscope.base_http_api_url = server.url + "/api/v1"
        dashscope.api_key = DEFAULT_KEY
        if sys.argv[1] == "leak":
            print(asyncio.run(shared(close=False)))
        else:  # closing the shared session, or passing one's own session
            print(asyncio.run(shared(close=True)), asyncio.run(own()))
""")


def test_aio_shared_session_warning(tmp_path) -> None:
    """The SDK's per-loop shared aiohttp session outlives ``asyncio.run`` unless closed (or replaced)."""
    script = tmp_path / "session.py"
    script.write_text(_SESSION_SNIPPET.format(tests=os.path.dirname(os.path.abspath(__file__))))
    procs = {mode: subprocess.Popen([sys.executable, str(script), mode], stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True) for mode in ("leak", "clean")}
    outs = {mode: p.communicate(timeout=60) for mode, p in procs.items()}
    assert outs["leak"][0].split() == ["200"] and outs["clean"][0].split() == ["200", "200"], outs
    assert "Unclosed client session" in outs["leak"][1]  # printed at interpreter exit
    assert "Unclosed client session" not in outs["clean"][1], outs["clean"][1]
