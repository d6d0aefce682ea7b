"""What every backend shares: the guard around a stream, and small mapping helpers.

A protocol module writes only its own request building and its mapping of
chunks to events; :func:`guarded` adds what every protocol needs the same way:

* the stream must end with a finish reason, or it was cut (SDKs end a dropped
  stream quietly);
* every SDK or transport exception becomes one
  :class:`~qwen_magics.errors.QwenMagicsError` line (see :mod:`.errors`),
  told whether part of the answer had arrived (a cut stream, not an
  unreachable endpoint);
* the protocol's generator is closed when the consumer stops early (Ctrl-C, a
  cancelled column), so its connection is released at once.
"""

from __future__ import annotations

from typing import Any, AsyncIterator

from .. import events as ev
from ..errors import stream_cut
from ..request import Request
from .errors import translate


async def guarded(request: Request, events: AsyncIterator[ev.Event], cut: str = "without a finish reason"
                  ) -> AsyncIterator[ev.Event]:
    """``events`` as they come, checked for a finish reason, with errors translated; ``cut`` says how a cut one ended."""
    started = finished = False
    try:
        async for event in events:
            started = True
            finished = finished or isinstance(event, ev.Finished)
            yield event
        if not finished:
            raise stream_cut(cut)
    except Exception as err:  # noqa: BLE001 - every SDK/transport error becomes one clear line
        raise translate(err, request, midstream=started) from err
    finally:
        await events.aclose()


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
