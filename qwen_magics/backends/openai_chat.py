"""Chat Completions through the official ``openai`` SDK (AsyncOpenAI).

Speaks DashScope's OpenAI-compatible mode and any other OpenAI-compatible
server.  DashScope's own fields (``enable_thinking``, ``thinking_budget``,
``top_k``, ``repetition_penalty``) travel in ``extra_body`` as the docs say, and
so do the fields of ``--param`` (the SDK merges them into the body); ``reasoning_content`` in
the deltas becomes reasoning events.  A run's client has the SDK's retries
off: :func:`~qwen_magics.backends.common.guarded` retries a request, the same
way for every protocol.  A stream that ends without a ``finish_reason`` was
cut, even though the SDK ends it quietly.
"""

from __future__ import annotations

import contextlib
from typing import Any, AsyncIterator

import openai

from .. import events as ev
from ..errors import missing_key
from ..request import Endpoint, Request
from .common import detail, guarded, present, search_fields, sources_of

_clients: dict[tuple, Any] = {}
_NO_KEY = "no-key-needed"  # OpenAI-compatible servers without auth still need a non-empty key in the SDK


def client_for(endpoint: Endpoint, sdk_retries: bool = True):
    """One AsyncOpenAI per endpoint, key, timeouts and retries: connections are reused across cells.

    ``sdk_retries``: the SDK retries the endpoint's ``max_retries`` times (for calls that are not a run:
    model lists, the Batch API); a run's requests are retried by ``guarded`` instead, so pass False.
    """
    key = endpoint.api_key()
    if key is None and endpoint.key_required:
        raise missing_key(endpoint.api_key_env, endpoint.region)
    retries = endpoint.max_retries if sdk_retries else 0
    cache_key = (endpoint.base_url, key, endpoint.timeout, endpoint.connect_timeout, retries)  # the client holds it
    if cache_key not in _clients:
        _clients[cache_key] = openai.AsyncOpenAI(
            api_key=key or _NO_KEY,
            base_url=endpoint.base_url,
            timeout=openai.Timeout(endpoint.timeout, connect=endpoint.connect_timeout),
            max_retries=retries,
        )
    return _clients[cache_key]


def build_body(request: Request) -> dict[str, Any]:
    """The keyword arguments for ``chat.completions.create``."""
    s = request.sampling
    body: dict[str, Any] = {"model": request.model, "messages": list(request.messages), "stream": request.stream}
    if request.stream:
        body["stream_options"] = {"include_usage": True}
    body.update(present(temperature=s.temperature, top_p=s.top_p, seed=s.seed, max_tokens=s.max_tokens,
                        stop=list(s.stop), presence_penalty=s.presence_penalty,
                        n=request.n if request.n > 1 else None, response_format=request.response_format,
                        tools=[{"type": "function", "function": spec} for spec in request.tools]))
    if request.logprobs:
        body.update(logprobs=True, top_logprobs=request.logprobs)
    extra = {**present(enable_thinking=request.thinking, thinking_budget=request.thinking_budget, top_k=s.top_k,
                       repetition_penalty=s.repetition_penalty), **search_fields(request), **dict(request.extra)}
    if extra:
        body["extra_body"] = extra
    return body


def stream(request: Request) -> AsyncIterator[ev.Event]:
    """Events for one request; fails with :class:`~qwen_magics.errors.QwenMagicsError`."""
    return guarded(request, _events)


async def _events(request: Request) -> AsyncIterator[ev.Event]:
    response = await client_for(request.endpoint, sdk_retries=False).chat.completions.create(**build_body(request))
    if not request.stream:
        for event in _from_completion(response):
            yield event
        return
    try:
        started = False
        async for chunk in response:
            if not started:
                started = True
                yield ev.Started(request_id=chunk.id or None, model=chunk.model or None)
            for event in _from_chunk(chunk):
                yield event
    finally:
        await close(response)


async def close(stream) -> None:
    """Close an SDK stream now, even one left mid-way (an error event, Ctrl-C while it waited for the display).

    ``close()`` releases the connection but leaves the SDK's generators
    suspended, in a reference cycle with the stream; a later garbage
    collection would finalise them all at once, and httpx2's would close each
    other out of order ("Exception ignored ... async generator already
    executing", printed under some later cell).  Iterating the closed stream
    ends them here, in order: it raises at once, the body being gone (or
    yields nothing, the stream having ended).
    """
    await stream.close()
    with contextlib.suppress(Exception):
        async for _ in stream:
            pass


def _from_chunk(chunk) -> list[ev.Event]:
    out: list[ev.Event] = []
    for choice in chunk.choices or ():
        index = choice.index or 0
        out += _from_message(choice.delta, index, choice.logprobs)
        for call in choice.delta.tool_calls or ():
            fn = call.function
            out.append(ev.ToolCallDelta(call.index, call.id, fn.name if fn else None, (fn.arguments or "") if fn else ""))
        if choice.finish_reason:
            out.append(ev.Finished(choice.finish_reason, index))
    return _with_extras(chunk, out)


def _from_completion(completion) -> list[ev.Event]:
    out: list[ev.Event] = [ev.Started(request_id=completion.id, model=completion.model)]
    for choice in completion.choices:
        out += _from_message(choice.message, choice.index or 0, choice.logprobs)
        out += [ev.ToolCallDelta(i, call.id, call.function.name, call.function.arguments)
                for i, call in enumerate(choice.message.tool_calls or ())]
    out = _with_extras(completion, out)
    return out + [ev.Finished(choice.finish_reason or "stop", choice.index or 0) for choice in completion.choices]


def _from_message(message, index: int, logprobs) -> list[ev.Event]:
    """One choice's delta (streamed) or message (whole): its reasoning and text, and for the first answer
    its token probabilities (``-n`` answers after the first come without)."""
    out: list[ev.Event] = []
    reasoning = _reasoning_of(message)
    if reasoning:
        out.append(ev.ReasoningDelta(reasoning, index))
    if message.content:
        out.append(ev.TextDelta(message.content, index))
    if logprobs and not index:
        out += _logprobs(logprobs)
    return out


def _with_extras(reply, out: list[ev.Event]) -> list[ev.Event]:
    """``out`` and what a chunk or a completion carries besides its choices: the pages searched, the usage."""
    extra = reply.model_extra
    if extra and "search_info" in extra:
        out += sources_of(extra["search_info"])
    if reply.usage:
        out.append(_usage(reply.usage))
    return out


def _reasoning_of(message) -> str | None:
    """DashScope's ``reasoning_content``: an extra field to the SDK (a declared one, should it become so).

    Read from the model's dicts: ``getattr`` on an absent extra costs more than the rest of the chunk.
    """
    return (message.model_extra or {}).get("reasoning_content") or message.__dict__.get("reasoning_content")


def _logprobs(logprobs) -> list[ev.TokenLogprob]:
    return [ev.TokenLogprob(item.token, item.logprob, tuple((alt.token, alt.logprob) for alt in item.top_logprobs or ()))
            for item in (getattr(logprobs, "content", None) or ())]


def _usage(usage) -> ev.Usage:
    return ev.Usage(input=usage.prompt_tokens or 0, output=usage.completion_tokens or 0,
                    reasoning=detail(usage.completion_tokens_details, "reasoning_tokens"),
                    cached=detail(usage.prompt_tokens_details, "cached_tokens"))


async def list_models(endpoint: Endpoint) -> list[str]:
    """The model ids the endpoint offers (its ``/models`` route), for pickers."""
    return sorted([model.id async for model in client_for(endpoint).models.list()])
