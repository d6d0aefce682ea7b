"""A logged run as a stream of events, so ``--cache`` shows it through the same driver and renderer as a live one.

The record is read by attribute only (a :class:`~qwen_magics.runlog.Record`),
so the log is not imported here.
"""

from __future__ import annotations

from typing import Any, AsyncIterator

from .. import events as ev


async def replay(record: Any) -> AsyncIterator[ev.Event]:
    """The events of ``record``'s answer: started, reasoning, text, usage (where it was reported), finished."""
    yield ev.Started(request_id=record.request_id, model=record.model)
    if record.reasoning:
        yield ev.ReasoningDelta(record.reasoning)
    if record.answer:
        yield ev.TextDelta(record.answer)
    if record.input_tokens is not None:  # None: the server reported no counts, and none are made up here
        yield ev.Usage(input=record.input_tokens, output=record.output_tokens or 0,
                       reasoning=record.reasoning_tokens or 0, cached=record.cached_tokens or 0)
    yield ev.Finished(record.finish_reason or "stop")
