"""The native DashScope protocol through the official ``dashscope`` SDK (asynchronous).

``AioGeneration`` serves the text endpoint; the Qwen-3.5 family and vision
models only work on the multimodal endpoint (``AioMultiModalConversation``),
even for text, so they are routed there.  ``result_format="message"`` and
``incremental_output=True`` make every frame carry just the new piece.  The
SDK does not raise on HTTP errors: every response, streamed frames included,
carries ``status_code``, ``code`` and ``message``, checked here and mapped to
the same errors as the compatible protocols.
"""

from __future__ import annotations

import asyncio
import atexit
import re
import sys
from contextlib import aclosing
from typing import Any, AsyncIterator

from .. import errors as e
from .. import events as ev
from ..request import Request
from .common import detail, guarded, present, search_fields, sources_of
from .errors import from_status, retry_after

_MULTIMODAL = re.compile(r"^(qwen3\.5|qwen3-vl|qwen-vl|qvq|qwen-omni|qwen3-omni|qwen2\.5-vl)")
_sessions: dict[asyncio.AbstractEventLoop, Any] = {}


def _session() -> Any:
    """This loop's HTTP session, owned here and reused across cells (the SDK's shared one is closed by
    its own exit hook only when its loop is idle, which a loop in a daemon thread never is)."""
    loop = asyncio.get_running_loop()
    session = _sessions.get(loop)
    if session is None or session.closed:
        import aiohttp

        if not _sessions:
            atexit.register(_close_sessions)  # after the package loop's own exit hook, so it runs before it
        session = _sessions[loop] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=_ssl_context()),
                                                          trust_env=True)
    return session


def _ssl_context() -> Any:
    import ssl

    try:
        import certifi
    except ImportError:  # the SDK depends on it; without it, the system's certificates
        return ssl.create_default_context()
    return ssl.create_default_context(cafile=certifi.where())


def _close_sessions() -> None:
    """At exit: close every session on its own loop, so aiohttp has nothing unclosed to report."""
    for loop, session in list(_sessions.items()):
        if session.closed or loop.is_closed():
            continue
        try:
            if loop.is_running():
                asyncio.run_coroutine_threadsafe(session.close(), loop).result(timeout=2)
            else:
                loop.run_until_complete(session.close())
        except Exception:  # noqa: BLE001 - exiting anyway; nothing to report to
            pass
    _sessions.clear()


def multimodal(request: Request) -> bool:
    """Whether the request must use the multimodal endpoint (model family, or image/video parts)."""
    has_media = any(isinstance(m["content"], list) and any(p.get("type") != "text" for p in m["content"])
                    for m in request.messages)
    return has_media or bool(_MULTIMODAL.match(request.model))


def build_call(request: Request) -> dict[str, Any]:
    """Keyword arguments for ``AioGeneration.call`` / ``AioMultiModalConversation.call``."""
    s = request.sampling
    media = multimodal(request)
    messages = [{**m, "content": _parts(m["content"]) if media else m["content"]} for m in request.messages]
    call: dict[str, Any] = {"model": request.model, "messages": messages, "result_format": "message",
                            "stream": request.stream, "api_key": request.endpoint.api_key(),
                            "base_address": request.endpoint.base_url}
    if request.stream:
        call["incremental_output"] = True
    call.update(present(temperature=s.temperature, top_p=s.top_p, top_k=s.top_k, seed=s.seed,
                        max_tokens=s.max_tokens, stop=list(s.stop), presence_penalty=s.presence_penalty,
                        repetition_penalty=s.repetition_penalty, enable_thinking=request.thinking,
                        thinking_budget=request.thinking_budget, response_format=request.response_format,
                        logprobs=True if request.logprobs else None, top_logprobs=request.logprobs,
                        tools=[{"type": "function", "function": spec} for spec in request.tools]))
    call.update(search_fields(request))
    call.update(request.extra)  # the SDK sends keyword arguments it does not know as parameters
    return call


def _parts(content: Any) -> list[dict[str, Any]]:
    """Native multimodal content: chat parts become {"text"} / {"image"} / {"video"} parts."""
    if isinstance(content, str):
        return [{"text": content}]
    native = {"text": lambda p: {"text": p["text"]}, "image_url": lambda p: {"image": p["image_url"]["url"]},
              "video_url": lambda p: {"video": p["video_url"]["url"]}}
    return [native[part["type"]](part) for part in content]


def stream(request: Request) -> AsyncIterator[ev.Event]:
    """Events for one request; fails with :class:`~qwen_magics.errors.QwenMagicsError`.

    The dashscope SDK applies no read timeout, so each frame must come within
    ``timeout`` here; it retries nothing but a pooled connection found dropped
    before the request went out, so rate limits and server errors are retried
    by :func:`~qwen_magics.backends.common.guarded`, as on the other protocols.
    """
    return guarded(request, _events)


async def _events(request: Request) -> AsyncIterator[ev.Event]:
    from dashscope import AioGeneration, AioMultiModalConversation

    api = AioMultiModalConversation if multimodal(request) else AioGeneration
    timeout = request.endpoint.timeout
    started = False
    usage: ev.Usage | None = None
    reply = await _within(api.call(**build_call(request), session=_session()), timeout)
    async with aclosing(reply if request.stream else _once(reply)) as frames:  # closes the SDK's HTTP response
        frame = await _next(frames, timeout)
        while frame is not None:
            if frame.status_code != 200:
                if started and frame.code == "Unknown" and frame.status_code == 500:  # the SDK's undecodable frame
                    raise e.ServerError("The service sent a malformed stream event",
                                        "the partial answer is kept; run the cell again")
                raise from_status(frame.status_code, frame.code, frame.message or "", request,
                                  retry_after=retry_after(getattr(frame, "headers", None)))
            if not started:
                started = True
                yield ev.Started(request_id=frame.request_id, model=request.model)
            for event in _from_frame(frame):
                yield event
            usage = _usage(frame.usage) or usage
            frame = await _next(frames, timeout)
    if usage is not None:
        yield usage


async def _next(frames: Any, timeout: float) -> Any:
    """The next frame within ``timeout`` seconds, or None at the end."""
    try:
        return await _within(frames.__anext__(), timeout)
    except StopAsyncIteration:
        return None


async def _within(awaitable: Any, timeout: float) -> Any:
    """``awaitable`` or ``TimeoutError``; asyncio.timeout where it exists, because wait_for can lose a
    cancellation (Ctrl-C) that arrives just as the awaitable completes (Python 3.11, gh-86296)."""
    if sys.version_info >= (3, 11):
        async with asyncio.timeout(timeout):
            return await awaitable
    return await asyncio.wait_for(awaitable, timeout)


async def _once(reply):
    yield reply


def _from_frame(frame) -> list[ev.Event]:
    out: list[ev.Event] = sources_of((frame.output or {}).get("search_info"))
    for choice in (frame.output or {}).get("choices") or ():
        message = choice.get("message") or {}
        reasoning = message.get("reasoning_content")
        if reasoning:
            out.append(ev.ReasoningDelta(reasoning))
        text = _text(message.get("content"))
        if text:
            out.append(ev.TextDelta(text))
        out += _logprobs(choice.get("logprobs"))
        for i, call in enumerate(message.get("tool_calls") or ()):
            fn = call.get("function") or {}
            out.append(ev.ToolCallDelta(call.get("index", i), call.get("id") or None, fn.get("name") or None,
                                        fn.get("arguments") or ""))
        reason = choice.get("finish_reason")
        if reason and reason != "null":
            out.append(ev.Finished(reason))
    return out


def _text(content: Any) -> str:
    if isinstance(content, list):  # the multimodal endpoint answers with parts
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return content or ""


def _logprobs(logprobs: Any) -> list[ev.TokenLogprob]:
    """``choices[].logprobs.content``: the same shape as Chat Completions', as plain dicts."""
    return [ev.TokenLogprob(item["token"], float(item["logprob"]),
                            tuple((alt["token"], float(alt["logprob"])) for alt in item.get("top_logprobs") or ()))
            for item in (logprobs or {}).get("content") or ()]


def _usage(usage: Any) -> ev.Usage | None:
    if not usage:
        return None
    cached = usage.get("prompt_tokens_details") or usage.get("input_tokens_details")
    return ev.Usage(input=usage.get("input_tokens") or 0, output=usage.get("output_tokens") or 0,
                    reasoning=detail(usage.get("output_tokens_details"), "reasoning_tokens"),
                    cached=detail(cached, "cached_tokens"))
