"""What every backend shares: the guard around a stream, its retries, and small mapping helpers.

A protocol module writes only its own request building and its mapping of
chunks to events; :func:`guarded` adds what every protocol needs the same way:

* the stream must end with a finish reason, or it was cut (SDKs end a dropped
  stream quietly);
* every SDK or transport exception becomes one
  :class:`~qwen_magics.errors.QwenMagicsError` line (see :mod:`.errors`),
  told whether part of the answer had arrived (a cut stream, not an
  unreachable endpoint);
* a request that failed before anything arrived, in a way that may pass (a
  rate limit, a server error, a timeout, no connection), is sent again, at
  most ``max_retries`` times, after the service's Retry-After or else a
  backoff that doubles from half a second.  This is the package's only retry
  of a request: the SDK clients are made with their own retries off;
* the protocol's generator is closed when the consumer stops early (Ctrl-C, a
  cancelled column), so its connection is released at once.

Whoever runs many requests at once (a dataset map) can take over the waits
between tries with :data:`retry_pause`, to slow every request down, not just
the one that was refused.
"""

from __future__ import annotations

import asyncio
import contextvars
import random
from contextlib import aclosing
from typing import Any, AsyncIterator, Awaitable, Callable

from .. import events as ev
from ..errors import QwenMagicsError, stream_cut
from ..request import Request
from .errors import translate, worth_retrying

Pause = Callable[[QwenMagicsError, float], Awaitable[None]]
retry_pause: contextvars.ContextVar[Pause | None] = contextvars.ContextVar("retry_pause", default=None)
"""What waits before a retry (given the error and the seconds to wait); unset: ``asyncio.sleep`` of them."""


async def guarded(request: Request, produce: Callable[[Request], AsyncIterator[ev.Event]],
                  cut: str = "without a finish reason") -> AsyncIterator[ev.Event]:
    """``produce(request)``'s events, checked for a finish reason, errors translated, retried as above.

    ``cut`` says how a stream that ends without its finish ended.
    """
    retries = request.endpoint.max_retries
    for attempt in range(retries + 1):
        started = finished = False
        try:
            async with aclosing(produce(request)) as events:
                async for event in events:
                    started = True
                    finished = finished or isinstance(event, ev.Finished)
                    yield event
            if not finished:
                raise stream_cut(cut)
            return
        except Exception as err:  # noqa: BLE001 - every SDK/transport error becomes one clear line
            error = translate(err, request, midstream=started)
            if started or attempt == retries or not worth_retrying(error):
                if error is err:
                    raise
                raise error from err
        await (retry_pause.get() or _sleep)(error, backoff(error, attempt))


def backoff(error: QwenMagicsError, attempt: int) -> float:
    """Seconds before try ``attempt + 2``: the service's Retry-After, else 0.5 s doubling up to 8 s, jittered."""
    if error.retry_after is not None:
        return error.retry_after
    return min(0.5 * 2 ** attempt, 8.0) * random.uniform(0.75, 1.0)


async def _sleep(error: QwenMagicsError, seconds: float) -> None:
    await asyncio.sleep(seconds)


def present(**fields: Any) -> dict[str, Any]:
    """The fields that are set: None and empty sequences are left to the service's defaults."""
    return {k: v for k, v in fields.items() if v is not None and v != [] and v != ()}


def detail(details: Any, name: str) -> int:
    """A count inside a usage's details object or dict (``reasoning_tokens``, ``cached_tokens``); 0 if absent."""
    if not details:
        return 0
    value = details.get(name) if isinstance(details, dict) else getattr(details, name, None)
    return value or 0


def search_fields(request: Request) -> dict[str, Any]:
    """DashScope's web search: on, and asked to return the pages it found (chat and native alike)."""
    return {"enable_search": True, "search_options": {"enable_source": True}} if request.search else {}


def sources_of(search_info: Any) -> list[ev.Source]:
    """DashScope's ``search_info.search_results`` (with ``search_options.enable_source``): the pages searched."""
    results = (search_info or {}).get("search_results") or () if isinstance(search_info, dict) else ()
    return [ev.Source(str(item.get("url")), str(item.get("title") or "")) for item in results
            if isinstance(item, dict) and item.get("url")]
