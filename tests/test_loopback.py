"""The loopback server, driven by the real ``openai`` SDK over 127.0.0.1.

These tests pin both the server's wire format and how the SDK reacts to each
fault, so backend tests can rely on them.  Async cases run with
``asyncio.run`` (no pytest plugin needed).
"""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import threading
import time
from typing import Any

import openai
import pytest

try:
    from loopback import DEFAULT_KEY, DEFAULT_MODELS, LoopbackServer, Script
except ImportError:  # tests/ became a package
    from tests.loopback import DEFAULT_KEY, DEFAULT_MODELS, LoopbackServer, Script

KEY = DEFAULT_KEY
USER = [{"role": "user", "content": "What is 2+2?\nAnswer tersely."}]
ECHO = "**Echo:** What is 2+2?\n\n- first point\n- second point\n\nDone."
REASONING = "Let me think about this. The user asks: What is 2+2?\nAnswer tersely.. I will answer briefly."


@pytest.fixture(scope="module")
def _server():
    with LoopbackServer() as srv:
        yield srv


@pytest.fixture
def server(_server: LoopbackServer) -> LoopbackServer:
    _server.reset()
    _server.valid_keys = {KEY}
    _server.models = set(DEFAULT_MODELS)
    yield _server
    _server.reset()


# The SDK's own default transports (same limits, timeouts, redirects), minus loading the CA
# bundle: that costs ~50 ms per client and TLS plays no part over plain-HTTP loopback.
def aclient(server: LoopbackServer, **kw: Any) -> openai.AsyncOpenAI:
    kw.setdefault("api_key", KEY)
    kw.setdefault("max_retries", 0)
    kw.setdefault("http_client", openai.DefaultAsyncHttpx2Client(verify=False))
    return openai.AsyncOpenAI(base_url=server.url + "/compatible-mode/v1", **kw)


def sclient(server: LoopbackServer, **kw: Any) -> openai.OpenAI:
    kw.setdefault("api_key", KEY)
    kw.setdefault("max_retries", 0)
    kw.setdefault("http_client", openai.DefaultHttpx2Client(verify=False))
    return openai.OpenAI(base_url=server.url + "/compatible-mode/v1", **kw)


def raw(server: LoopbackServer, method: str, path: str, body: Any = None,
        headers: dict | None = None) -> tuple[int, dict, Any]:
    """One plain HTTP request (stdlib): status, lower-cased headers, parsed JSON body."""
    conn = http.client.HTTPConnection(*server.url[len("http://"):].split(":"), timeout=5)
    try:
        data = json.dumps(body).encode() if body is not None else None
        conn.request(method, path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, json.loads(resp.read())
    finally:
        conn.close()


def run(coro):
    return asyncio.run(coro)


async def collect(server: LoopbackServer, model: str = "qwen3.5-plus", messages=USER, sink: list | None = None,
                  **kw: Any) -> list:
    """Stream one request with AsyncOpenAI and return every chunk (also appended to ``sink``)."""
    kw.setdefault("stream_options", {"include_usage": True})
    chunks: list = sink if sink is not None else []
    async with aclient(server, timeout=kw.pop("timeout", 10.0)) as client:
        stream = await client.chat.completions.create(model=model, messages=messages, stream=True, **kw)
        try:
            async for chunk in stream:
                chunks.append(chunk)
        finally:
            await stream.close()
    return chunks


def texts(chunks: list) -> tuple[str, str]:
    reasoning = "".join(getattr(c.choices[0].delta, "reasoning_content", None) or "" for c in chunks if c.choices)
    answer = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return reasoning, answer


def finish_reasons(chunks: list) -> list:
    return [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]


# ------------------------------------------------------------------ default replies

def test_default_stream_with_reasoning(server: LoopbackServer) -> None:
    chunks = run(collect(server))
    reasoning, answer = texts(chunks)
    assert reasoning == REASONING
    assert answer == ECHO

    lead, body = chunks[0], chunks[1:]
    assert lead.choices[0].delta.content == "" and lead.choices[0].delta.reasoning_content == ""
    assert lead.choices[0].delta.role == "assistant"
    kinds = []
    for c in body[:-2]:
        d = c.choices[0].delta
        if d.reasoning_content is not None:
            assert d.content is None
            kinds.append("r")
        else:
            assert d.reasoning_content is None and d.content
            kinds.append("t")
    assert kinds == sorted(kinds)  # every reasoning delta comes before every content delta
    assert all(len(c.choices[0].delta.content or c.choices[0].delta.reasoning_content) <= 4 for c in body[:-2])

    fin = chunks[-2]
    assert fin.choices[0].finish_reason == "stop" and fin.choices[0].delta.content == ""
    assert finish_reasons(chunks) == ["stop"]

    usage_chunk = chunks[-1]
    assert usage_chunk.choices == []
    u = usage_chunk.usage
    n_r, n_t = kinds.count("r"), kinds.count("t")
    assert u.completion_tokens == n_r + n_t
    assert u.completion_tokens_details.reasoning_tokens == n_r
    assert u.prompt_tokens == len("What is 2+2?\nAnswer tersely.".split()) + 10
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens
    assert u.prompt_tokens_details.cached_tokens == 0

    assert len({c.id for c in chunks}) == 1 and chunks[0].id.startswith("chatcmpl-")
    assert chunks[0].model == "qwen3.5-plus" and chunks[0].object == "chat.completion.chunk"


def test_thinking_defaults_and_switch(server: LoopbackServer) -> None:
    assert texts(run(collect(server, model="qwen-plus")))[0] == ""
    assert texts(run(collect(server, model="qwen3-32b")))[0] == REASONING
    off = run(collect(server, model="qwen3.5-flash", extra_body={"enable_thinking": False}))
    assert texts(off) == ("", ECHO)
    assert off[0].choices[0].delta.reasoning_content is None  # lead chunk: no reasoning announced
    on = run(collect(server, model="qwen-plus", extra_body={"enable_thinking": True}))
    assert texts(on) == (REASONING, ECHO)
    assert server.requests[-1].body["enable_thinking"] is True


def test_no_usage_chunk_without_include_usage(server: LoopbackServer) -> None:
    chunks = run(collect(server, model="qwen-plus", stream_options=None))
    assert all(c.choices for c in chunks) and chunks[-1].choices[0].finish_reason == "stop"


def test_json_mode(server: LoopbackServer) -> None:
    msgs = [{"role": "user", "content": 'Say "hi" as JSON, in a long sentence please ok'}]
    _, answer = texts(run(collect(server, model="qwen-plus", messages=msgs,
                                  response_format={"type": "json_object"})))
    assert json.loads(answer) == {"answer": msgs[0]["content"][:40], "ok": True}


def test_content_parts_and_long_answer(server: LoopbackServer) -> None:
    msgs = [{"role": "user", "content": [{"type": "text", "text": "go [[long:120]]"}]}]
    _, answer = texts(run(collect(server, model="qwen-plus", messages=msgs)))
    paragraphs = answer.split("\n\n")
    assert [len(p.split()) for p in paragraphs] == [50, 50, 20]
    assert answer.split() == [f"word{i}" for i in range(120)]


def test_max_tokens_truncates_with_length(server: LoopbackServer) -> None:
    chunks = run(collect(server, model="qwen-plus", max_tokens=3))
    assert texts(chunks)[1] == ECHO[:12]
    assert finish_reasons(chunks) == ["length"]
    assert chunks[-1].usage.completion_tokens == 3


def test_non_stream_sync(server: LoopbackServer) -> None:
    with sclient(server) as client:
        raw = client.chat.completions.with_raw_response.create(model="qwen3.5-plus", messages=USER)
        done = raw.parse()
    assert raw.headers["x-request-id"] == server.requests[-1].request_id
    assert done.id.startswith("chatcmpl-") and done.object == "chat.completion"
    msg = done.choices[0].message
    assert msg.content == ECHO and msg.reasoning_content == REASONING
    assert done.choices[0].finish_reason == "stop"
    assert done.usage.completion_tokens_details.reasoning_tokens == -(-len(REASONING) // 4)
    assert done.usage.completion_tokens == -(-len(REASONING) // 4) + -(-len(ECHO) // 4)

    with sclient(server) as client:
        plain = client.chat.completions.create(model="qwen-plus", messages=USER)
    assert plain.choices[0].message.content == ECHO
    assert getattr(plain.choices[0].message, "reasoning_content", None) is None


def test_sync_stream(server: LoopbackServer) -> None:
    with sclient(server) as client:
        chunks = list(client.chat.completions.create(model="qwen3.5-plus", messages=USER, stream=True))
    assert texts(chunks) == (REASONING, ECHO)
    assert finish_reasons(chunks) == ["stop"]


# ------------------------------------------------------------------ scripts

def test_script_explicit_chunks_usage_and_request_id(server: LoopbackServer) -> None:
    usage = {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3,
             "completion_tokens_details": {"reasoning_tokens": 1}, "prompt_tokens_details": {"cached_tokens": 0}}
    server.enqueue(Script(chunks=[("reasoning", "hmm"), ("text", "Hello"), ("text", " world")],
                          finish_reason="length", usage=usage, request_id="req-fixed-1"))
    chunks = run(collect(server))
    assert [(c.choices[0].delta.reasoning_content, c.choices[0].delta.content) for c in chunks[1:4]] == [
        ("hmm", None), (None, "Hello"), (None, " world")]
    assert finish_reasons(chunks) == ["length"]
    assert chunks[-1].usage.total_tokens == 3
    assert server.requests[-1].request_id == "req-fixed-1"


def test_script_texts_and_chunk_chars(server: LoopbackServer) -> None:
    server.enqueue(Script(reasoning="", text="abcdefghij", chunk_chars=3, lead_chunk=False))
    chunks = run(collect(server, model="qwen3.5-plus"))
    assert [c.choices[0].delta.content for c in chunks[:4]] == ["abc", "def", "ghi", "j"]
    assert server.pending == 0
    # the queue is consumed once per request, then the default reply returns
    assert texts(run(collect(server, model="qwen-plus")))[1] == ECHO


# ------------------------------------------------------------------ HTTP errors

@pytest.mark.parametrize("api_key", ["sk-wrong-key-abcdef", "x"])
def test_401_invalid_key_not_echoed(server: LoopbackServer, api_key: str) -> None:
    async def go():
        async with aclient(server, api_key=api_key) as client:
            await client.chat.completions.create(model="qwen-nonexistent", messages=USER)  # 401 wins over 404

    with pytest.raises(openai.AuthenticationError) as info:
        run(go())
    err = info.value
    assert err.status_code == 401 and err.code == "invalid_api_key" and err.type == "invalid_request_error"
    assert err.body["message"].startswith("Incorrect API key provided.")
    assert api_key not in json.dumps(err.body) and api_key not in str(err)
    assert err.request_id == server.requests[-1].request_id
    assert server.requests[-1].status == 401


def test_401_without_authorization_header(server: LoopbackServer) -> None:
    status, headers, body = raw(server, "POST", "/compatible-mode/v1/chat/completions",
                                {"model": "qwen-plus", "messages": USER})
    assert status == 401
    assert body["error"]["code"] == "invalid_api_key" and body["request_id"] == headers["x-request-id"]
    assert set(body["error"]) == {"message", "type", "param", "code"}


def test_404_model_not_found(server: LoopbackServer) -> None:
    with sclient(server) as client, pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="qwen-nope", messages=USER, temperature=5)  # 404 wins over 400
    assert info.value.code == "model_not_found"
    assert info.value.body["message"] == "The model `qwen-nope` does not exist or you do not have access to it."


@pytest.mark.parametrize("param,value", [("temperature", 2.0), ("temperature", -0.1), ("top_p", 0),
                                         ("top_p", 1.5), ("max_tokens", 0)])
def test_400_parameter_ranges(server: LoopbackServer, param: str, value: float) -> None:
    with sclient(server) as client, pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="qwen-plus", messages=[{"role": "user", "content": "[[blocked]]"}],
                                       stream=True, **{param: value})  # 400 range wins over moderation
    err = info.value
    assert (err.code, err.type, err.param) == ("invalid_parameter_error", "invalid_request_error", param)
    assert param in err.message and "Range" in err.body["message"]


def test_edges_of_ranges_are_accepted(server: LoopbackServer) -> None:
    with sclient(server) as client:
        client.chat.completions.create(model="qwen-plus", messages=USER, temperature=0, top_p=1, max_tokens=1)
        client.chat.completions.create(model="qwen-plus", messages=USER, temperature=1.99, top_p=0.01)


def test_400_input_moderation(server: LoopbackServer) -> None:
    server.enqueue(Script(text="never used"))
    msgs = [{"role": "system", "content": "be nice"}, {"role": "user", "content": "please [[blocked]] now"}]
    with pytest.raises(openai.BadRequestError) as info:
        run(collect(server, messages=msgs))
    assert info.value.code == "data_inspection_failed"
    assert info.value.message.endswith("Input data may contain inappropriate content.")
    assert server.pending == 1  # refused requests do not consume scripts


def test_429_twice_then_success_with_max_retries_2(server: LoopbackServer) -> None:
    server.enqueue(Script(status=429, retry_after="0.01", repeat=2))

    async def go():
        async with aclient(server, max_retries=2) as client:
            stream = await client.chat.completions.create(model="qwen-plus", messages=USER, stream=True)
            return [c async for c in stream]

    chunks = run(go())
    assert texts(chunks)[1] == ECHO
    reqs = server.requests
    assert [r.status for r in reqs] == [429, 429, 200]
    # a positive Retry-After is honoured: far below the SDK's own backoff (>= 0.375 s + 0.75 s)
    assert sum(b.started - a.finished for a, b in zip(reqs, reqs[1:])) < 0.75
    assert [r.headers.get("x-stainless-retry-count") for r in reqs] == ["0", "1", "2"]
    assert server.pending == 0


def test_429_retry_after_zero_falls_back_to_backoff(server: LoopbackServer) -> None:
    """SDK quirk: only 0 < Retry-After <= 120 is honoured; "0" means the jittered backoff (0.5 s x 0.75..1)."""
    server.enqueue(Script(status=429, retry_after="0"))
    with sclient(server, max_retries=2) as client:
        done = client.chat.completions.create(model="qwen-plus", messages=USER)
    assert done.choices[0].message.content == ECHO
    first, second = server.requests
    assert first.status == 429 and second.status == 200
    assert second.started - first.finished > 0.3


def test_429_without_retries_and_other_typed_errors(server: LoopbackServer) -> None:
    server.enqueue(Script(status=429, retry_after="0"))
    with sclient(server) as client, pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model="qwen-plus", messages=USER)
    assert info.value.code == "limit_requests" and info.value.response.headers["retry-after"] == "0"

    server.enqueue(Script(status=429, error_code="insufficient_quota"))
    with sclient(server) as client, pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model="qwen-plus", messages=USER)
    assert info.value.code == "insufficient_quota" and info.value.type == "insufficient_quota"

    server.enqueue(Script(status=500))
    with sclient(server) as client, pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model="qwen-plus", messages=USER)
    assert info.value.code == "internal_error"


# ------------------------------------------------------------------ faults

def test_fault_cut_ends_quietly(server: LoopbackServer) -> None:
    """'cut' ends the chunked body cleanly: the SDK's iteration stops with no error at all."""
    server.enqueue(Script(text="abcdefghijkl", reasoning="", fault="cut", fault_after=2))
    chunks = run(collect(server))
    assert texts(chunks)[1] == "abcdefgh"
    assert finish_reasons(chunks) == [] and not any(c.usage for c in chunks)

    server.enqueue(Script(text="abcdefghijkl", reasoning="", fault="cut", fault_after=2))
    with sclient(server) as client:
        sync_chunks = list(client.chat.completions.create(model="qwen-plus", messages=USER, stream=True))
    assert texts(sync_chunks)[1] == "abcdefgh" and finish_reasons(sync_chunks) == []
    # the connection was closed; the next request still works (pool drops the dead socket)
    assert texts(run(collect(server, model="qwen-plus")))[1] == ECHO


def test_fault_reset_raises_connection_error(server: LoopbackServer) -> None:
    """'reset' drops the socket mid chunked body: the SDK raises APIConnectionError."""
    server.enqueue(Script(text="abcdefghijkl", reasoning="", fault="reset", fault_after=2))
    got: list = []
    with pytest.raises(openai.APIConnectionError) as info:
        run(collect(server, sink=got))
    assert "incomplete chunked read" in str(info.value.__cause__)
    assert texts(got)[1] == "abcdefgh"


def test_fault_no_finish_ends_quietly(server: LoopbackServer) -> None:
    server.enqueue(Script(fault="no_finish"))
    chunks = run(collect(server))
    assert texts(chunks) == (REASONING, ECHO)
    assert finish_reasons(chunks) == []
    assert chunks[-1].usage is not None  # usage and [DONE] still arrive


def test_fault_malformed_raises_json_error(server: LoopbackServer) -> None:
    """The SDK does not wrap a bad data line: a bare json.JSONDecodeError escapes."""
    server.enqueue(Script(reasoning="", text="abcdefgh", fault="malformed", fault_after=1))
    got: list = []
    with pytest.raises(json.JSONDecodeError):
        run(collect(server, sink=got))
    assert texts(got)[1] == "abcd"


def test_fault_empty(server: LoopbackServer) -> None:
    server.enqueue(Script(fault="empty"))
    assert run(collect(server)) == []


def test_fault_moderation_mid_stream(server: LoopbackServer) -> None:
    server.enqueue(Script(reasoning="", text="abcdefgh", fault="moderation_mid", fault_after=2,
                          request_id="req-mod"))
    got: list = []
    with pytest.raises(openai.APIError) as info:
        run(collect(server, sink=got))
    err = info.value
    assert not isinstance(err, openai.APIStatusError)  # in-band error: no status_code
    assert err.code == "data_inspection_failed" and err.type == "data_inspection_failed"
    assert err.message == "Output data may contain inappropriate content."
    assert texts(got)[1] == "abcdefgh"


def test_fault_moderation_non_stream_is_http_400(server: LoopbackServer) -> None:
    server.enqueue(Script(fault="moderation_mid"))
    with sclient(server) as client, pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="qwen-plus", messages=USER)
    assert info.value.code == "data_inspection_failed"


def test_non_stream_faults(server: LoopbackServer) -> None:
    with sclient(server) as client:
        def ask():
            return client.chat.completions.create(model="qwen-plus", messages=USER)

        server.enqueue(Script(fault="no_finish"))
        assert ask().choices[0].finish_reason is None
        server.enqueue(Script(fault="empty"))
        assert ask().choices == []
        server.enqueue(Script(fault="malformed"))
        with pytest.raises(json.JSONDecodeError):  # a bad JSON body is not wrapped either
            ask()
        server.enqueue(Script(fault="cut"))
        with pytest.raises(openai.APIConnectionError):  # Content-Length not reached
            ask()
        assert ask().choices[0].message.content == ECHO


def test_fault_stall_then_continue_and_timeout(server: LoopbackServer) -> None:
    server.enqueue(Script(reasoning="", text="abcdefgh", fault="stall", fault_after=1, stall_seconds=0.1))
    t0 = time.monotonic()
    chunks = run(collect(server))
    assert texts(chunks)[1] == "abcdefgh" and finish_reasons(chunks) == ["stop"]
    assert time.monotonic() - t0 >= 0.1

    server.enqueue(Script(reasoning="", text="abcdefgh", fault="stall", fault_after=1, stall_seconds=3))
    got: list = []
    with pytest.raises(openai.APITimeoutError):
        run(collect(server, timeout=0.2, sink=got))
    assert texts(got)[1] == "abcd"


def test_first_byte_delay_timeout(server: LoopbackServer) -> None:
    server.enqueue(Script(first_byte_delay=3))
    with sclient(server, timeout=0.2) as client, pytest.raises(openai.APITimeoutError):
        client.chat.completions.create(model="qwen-plus", messages=USER, stream=True)


def test_split_utf8_text_intact(server: LoopbackServer) -> None:
    text = "Ünïcödé: 你好，世界 — ✓ 🙂 fin"
    server.enqueue(Script(reasoning="思考中…", text=text, fault="split_utf8", chunk_chars=3))
    assert texts(run(collect(server))) == ("思考中…", text)
    server.enqueue(Script(reasoning="", text=text, fault="split_utf8", chunk_chars=5))
    with sclient(server) as client:
        chunks = list(client.chat.completions.create(model="qwen-plus", messages=USER, stream=True))
    assert texts(chunks)[1] == text


def test_split_utf8_really_splits_on_the_wire(server: LoopbackServer) -> None:
    """Read the raw chunked body: some HTTP chunk ends inside a UTF-8 character."""
    server.enqueue(Script(reasoning="", text="你好世界", fault="split_utf8", chunk_chars=2))
    payload = json.dumps({"model": "qwen-plus", "messages": USER, "stream": True}).encode()
    port = int(server.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"POST /compatible-mode/v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                     b"Authorization: Bearer " + KEY.encode() + b"\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(payload), payload))
        raw = b""
        while not raw.endswith(b"\r\n0\r\n\r\n"):
            raw += sock.recv(65536)
    head, _, rest = raw.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head.lower() and b"text/event-stream" in head
    pieces = []
    while True:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        pieces.append(rest[:size])
        rest = rest[size + 2:]

    def decodes(b: bytes) -> bool:
        try:
            b.decode("utf-8")
            return True
        except UnicodeDecodeError:
            return False

    assert sum(not decodes(p) for p in pieces) >= 4
    events = b"".join(pieces).decode("utf-8").split("\n\n")
    assert events[-1] == "" and events[-2] == "data: [DONE]"
    first = json.loads(events[0][len("data: "):])
    assert list(first) == ["id", "object", "created", "model", "system_fingerprint", "choices"]
    assert first["choices"][0] == {"index": 0, "delta": {"content": "", "reasoning_content": None,
                                                         "role": "assistant"},
                                   "finish_reason": None, "logprobs": None}


# ------------------------------------------------------------------ routes, recording, lifecycle

def test_models_route(server: LoopbackServer) -> None:
    async def go():
        async with aclient(server) as client:
            return [m async for m in client.models.list()]

    models = run(go())
    assert {m.id for m in models} == set(DEFAULT_MODELS)
    assert all(m.object == "model" and m.owned_by == "system" and isinstance(m.created, int) for m in models)
    server.models = {"qwen-only"}
    with sclient(server) as client:
        assert [m.id for m in client.models.list()] == ["qwen-only"]
    with sclient(server, api_key="sk-bad") as client, pytest.raises(openai.AuthenticationError):
        client.models.list()


def test_unknown_route_404(server: LoopbackServer) -> None:
    status, _, body = raw(server, "GET", "/compatible-mode/v1/embeddingz", headers={"Authorization": f"Bearer {KEY}"})
    assert status == 404 and set(body) == {"error", "request_id"} and body["error"]["code"] == "not_found"
    status, _, body = raw(server, "GET", "/compatible-mode/v1/chat/completions")  # right path, wrong method
    assert status == 404
    status, _, body = raw(server, "POST", "/compatible-mode/v1/chat/completions", body=[1, 2],
                          headers={"Authorization": f"Bearer {KEY}"})
    assert status == 400 and body["error"]["code"] == "invalid_parameter_error"
    assert [x.status for x in server.requests] == [404, 404, 400]


def test_recorded_requests_and_keep_alive(server: LoopbackServer) -> None:
    async def go():
        async with aclient(server) as client:
            for _ in range(3):
                stream = await client.chat.completions.create(model="qwen-plus", messages=USER, stream=True,
                                                              temperature=0.5, extra_body={"top_k": 5})
                async for _chunk in stream:
                    pass
            with pytest.raises(openai.NotFoundError):
                await client.chat.completions.create(model="nope", messages=USER)

    run(go())
    reqs = server.requests
    assert [r.status for r in reqs] == [200, 200, 200, 404]
    r0 = reqs[0]
    assert r0.method == "POST" and r0.path == "/compatible-mode/v1/chat/completions"
    assert r0.headers["authorization"] == f"Bearer {KEY}" and r0.headers["content-type"] == "application/json"
    assert r0.body["temperature"] == 0.5 and r0.body["top_k"] == 5 and r0.body["stream"] is True
    assert all(r.started <= r.finished for r in reqs)
    assert all(a.finished <= b.started for a, b in zip(reqs, reqs[1:]))
    assert len({r.client_port for r in reqs}) == 1  # one kept-alive connection
    server.enqueue(Script(text="x"))
    server.reset()
    assert server.requests == [] and server.pending == 0


def test_many_concurrent_streams(server: LoopbackServer) -> None:
    n = 30
    server.enqueue(Script(reasoning="", text="abcdefghijklmnop", chunk_delay=0.15, repeat=n))

    async def go():
        async with aclient(server) as client:
            async def one():
                stream = await client.chat.completions.create(model="qwen-plus", messages=USER, stream=True)
                return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
            return await asyncio.gather(*(one() for _ in range(n)))

    assert run(go()) == ["abcdefghijklmnop"] * n
    reqs = server.requests
    assert len(reqs) == n
    assert max(r.started for r in reqs) < min(r.finished for r in reqs)  # all open at once


def test_stop_is_prompt_with_a_stalled_stream_and_quiet(capfd) -> None:
    srv = LoopbackServer().start()
    url = srv.url
    srv.enqueue(Script(reasoning="", text="abcdefgh", fault="stall", fault_after=1, stall_seconds=30))
    got: list = []

    def consume():
        try:
            with openai.OpenAI(base_url=url + "/compatible-mode/v1", api_key=KEY, max_retries=0) as c:
                for chunk in c.chat.completions.create(model="qwen-plus", messages=USER, stream=True):
                    got.append(chunk)
        except Exception as exc:  # the server goes away under the client
            got.append(exc)

    port = url.rsplit(":", 1)[1]
    t = threading.Thread(target=consume, daemon=True)
    t.start()
    deadline = time.monotonic() + 5
    while not (srv.requests and srv.requests[0].status == 200) and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.05)
    t0 = time.monotonic()
    srv.stop()
    assert time.monotonic() - t0 < 10  # its own 1 s bound and a poll, far below the 30 s stall
    t.join(2)
    assert not t.is_alive()
    assert not [th.name for th in threading.enumerate() if th.name.startswith(f"loopback-{port}-")]
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), timeout=0.5).close()
    srv.stop()  # idempotent
    out, _err = capfd.readouterr()
    assert out == ""
