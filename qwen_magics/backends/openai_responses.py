"""The OpenAI-compatible Responses API through the official ``openai`` SDK.

Model Studio serves it under its own base path per region
(``/api/v2/apps/protocols/compatible-mode/v1``).  Reasoning arrives as
``response.reasoning_summary_text.delta`` (or ``reasoning_text``) events, the
answer as ``response.output_text.delta``, the pages a web search cited as
``url_citation`` annotations, and the usage only with ``response.completed``: all become the same events the renderers already
consume.  A stream that ends without ``response.completed`` was cut.
"""

from __future__ import annotations

from typing import Any, AsyncIterator

from .. import events as ev
from ..errors import InvalidInput
from ..request import Request
from .common import detail, guarded, present
from .errors import from_status
from .openai_chat import client_for, close

_REASONING = {"response.reasoning_summary_text.delta", "response.reasoning_text.delta"}


def build_body(request: Request) -> dict[str, Any]:
    """The keyword arguments for ``responses.create``: system text as ``instructions``, the rest as ``input``."""
    s = request.sampling
    system = [m["content"] for m in request.messages if m["role"] == "system"]
    body: dict[str, Any] = {"model": request.model, "stream": request.stream,
                            "input": [item for m in request.messages if m["role"] != "system" for item in _items(m)]}
    if system:
        body["instructions"] = "\n\n".join(system)
    tools = [{"type": "function", **spec} for spec in request.tools] + ([{"type": "web_search"}] if request.search else [])
    body.update(present(temperature=s.temperature, top_p=s.top_p, max_output_tokens=s.max_tokens, tools=tools))
    if request.response_format:
        fmt = request.response_format
        body["text"] = {"format": {"type": fmt["type"], **fmt.get("json_schema", {})}}  # Responses flattens the schema
    extra = {**present(enable_thinking=request.thinking, thinking_budget=request.thinking_budget, top_k=s.top_k,
                       seed=s.seed, stop=list(s.stop)), **dict(request.extra)}
    if extra:
        body["extra_body"] = extra
    return body


def _items(message: dict[str, Any]) -> list[dict[str, Any]]:
    """One chat message as Responses input items: tool calls and their outputs are items of their own."""
    if message["role"] == "tool":
        return [{"type": "function_call_output", "call_id": message["tool_call_id"], "output": message["content"]}]
    items = [{"role": message["role"], "content": _content(message["content"])}] if message["content"] else []
    return items + [{"type": "function_call", "call_id": call["id"], "name": call["function"]["name"],
                     "arguments": call["function"]["arguments"]} for call in message.get("tool_calls") or ()]


def _content(content: Any) -> Any:
    """Chat parts as Responses input parts (input_text, input_image); videos are not part of this API."""
    if isinstance(content, str):
        return content
    if any(part["type"] == "video_url" for part in content):
        raise InvalidInput("--video is not available with --api responses", "use --api chat or dashscope")
    return [{"type": "input_text", "text": p["text"]} if p["type"] == "text" else
            {"type": "input_image", "image_url": p["image_url"]["url"]} for p in content]


def stream(request: Request) -> AsyncIterator[ev.Event]:
    """Events for one request; fails with :class:`~qwen_magics.errors.QwenMagicsError`."""
    return guarded(request, _events, cut="before response.completed")


async def _events(request: Request) -> AsyncIterator[ev.Event]:
    body = build_body(request)
    response = await client_for(request.endpoint, sdk_retries=False).responses.create(**body)
    if not request.stream:
        for event in _from_response(response):
            yield event
        return
    try:
        async for item in response:
            kind = item.type
            if kind == "response.created":
                yield ev.Started(request_id=item.response.id, model=item.response.model)
            elif kind in _REASONING:
                yield ev.ReasoningDelta(item.delta)
            elif kind == "response.output_text.delta":
                yield ev.TextDelta(item.delta)
            elif kind == "response.output_item.added" and item.item.type == "function_call":
                yield ev.ToolCallDelta(item.output_index, item.item.call_id, item.item.name, item.item.arguments or "")
            elif kind == "response.function_call_arguments.delta":
                yield ev.ToolCallDelta(item.output_index, None, None, item.delta)
            elif kind == "response.output_text.annotation.added":
                for event in _cited([item.annotation]):
                    yield event
            elif kind in ("response.completed", "response.incomplete"):
                for event in _sources(item.response) + _closing(item.response):
                    yield event
            elif kind in ("response.failed", "error"):
                error = getattr(item, "response", None) and item.response.error or item
                raise from_status(None, getattr(error, "code", None), getattr(error, "message", ""), request)
    finally:
        await close(response)


def _from_response(response) -> list[ev.Event]:
    out: list[ev.Event] = [ev.Started(request_id=response.id, model=response.model)]
    for item in response.output or ():
        if item.type == "reasoning":
            text = "".join(part.text for part in (item.summary or ()))
            if text:
                out.append(ev.ReasoningDelta(text))
        elif item.type == "message":
            text = "".join(getattr(part, "text", "") or "" for part in item.content or ())
            if text:
                out.append(ev.TextDelta(text))
        elif item.type == "function_call":
            out.append(ev.ToolCallDelta(len(out), item.call_id, item.name, item.arguments or ""))
    return out + _sources(response) + _closing(response)


def _sources(response) -> list[ev.Source]:
    """The web pages the answer cites (``url_citation`` annotations of its text, with the web_search tool)."""
    return _cited(annotation for item in response.output or () if item.type == "message"
                  for part in item.content or () for annotation in getattr(part, "annotations", None) or ())


def _cited(annotations) -> list[ev.Source]:
    out = []
    for annotation in annotations:
        get = annotation.get if isinstance(annotation, dict) else lambda name, a=annotation: getattr(a, name, None)
        if get("type") == "url_citation" and get("url"):
            out.append(ev.Source(str(get("url")), str(get("title") or "")))
    return out


def _closing(response) -> list[ev.Event]:
    """Usage and the finish reason, from the final response object."""
    out: list[ev.Event] = []
    usage = response.usage
    if usage is not None:
        out.append(ev.Usage(input=usage.input_tokens or 0, output=usage.output_tokens or 0,
                            reasoning=detail(getattr(usage, "output_tokens_details", None), "reasoning_tokens"),
                            cached=detail(getattr(usage, "input_tokens_details", None), "cached_tokens")))
    incomplete = getattr(response, "incomplete_details", None)
    reason = getattr(incomplete, "reason", None)
    if reason is None and any(item.type == "function_call" for item in response.output or ()):
        reason = "tool_calls"  # as Chat Completions says it: the answer is a request to call tools
    out.append(ev.Finished("length" if reason == "max_output_tokens" else (reason or "stop")))
    return out
