"""The one driver: every surface streams a backend into a renderer through ``runner.drive``."""

import asyncio
import contextvars
import threading
import time

import pytest

from qwen_magics import events as ev
from qwen_magics import runner
from qwen_magics.backends.local import _DONE, _Handover
from qwen_magics.errors import RateLimited
from qwen_magics.render.base import Renderer
from qwen_magics.request import Endpoint, Request
from qwen_magics.result import Result

REQUEST = Request(messages=({"role": "user", "content": "hi"},), model="m", endpoint=Endpoint("http://127.0.0.1:9"))


class Recorder(Renderer):
    """Keeps what it was given: every event taken, the text at each refresh, and the finish."""

    def __init__(self, interval=0.05):
        super().__init__(interval=interval)
        self.taken, self.refreshed, self.finished = [], [], []

    def on_event(self, event, result):
        self.taken.append(event)

    def refresh(self, result):
        self.refreshed.append(result.text)
        return False

    def finish(self, result):
        self.finished.append(result.state)


async def chunks(n, text="ab", finish=True, pause=0.0):
    yield ev.Started(request_id="r1")
    for _ in range(n):
        yield ev.TextDelta(text)
        if pause:
            await asyncio.sleep(pause)
    if finish:
        yield ev.Usage(input=3, output=n)
        yield ev.Finished("stop")


def test_a_fast_stream_is_folded_once_per_refresh_not_once_per_chunk():
    renderer, result = Recorder(), Result.for_request(REQUEST)
    runner.call(runner.drive(chunks(20_000), renderer, result), 30)
    assert result.text == "ab" * 20_000 and result.state == "complete" and result.usage.output == 20_000
    texts = [e for e in renderer.taken if isinstance(e, ev.TextDelta)]
    assert texts[0].text == "ab"  # the first text is shown at once, alone
    assert len(texts) < 2_000, len(texts)  # the rest arrives joined: far fewer events than chunks
    assert renderer.refreshed[0] == "ab"
    assert renderer.finished == ["complete"]


def test_refreshes_are_at_most_one_per_interval_and_the_last_text_is_always_shown():
    renderer, result = Recorder(interval=0.1), Result.for_request(REQUEST)
    started = time.monotonic()
    runner.call(runner.drive(chunks(50, pause=0.01), renderer, result), 30)
    elapsed = time.monotonic() - started
    assert len(renderer.refreshed) <= elapsed / 0.1 + 2
    assert len(renderer.refreshed) >= 2  # the first text, and more while it streamed
    assert result.text == "ab" * 50


def test_what_arrived_is_shown_while_the_stream_pauses():
    """A refresh that is owed happens on time even when no event comes to trigger it."""
    renderer, seen = Recorder(interval=0.05), []

    async def stalls():
        yield ev.TextDelta("one")  # shown at once
        yield ev.TextDelta(" two")  # arrives within the interval: owed
        await asyncio.sleep(0.5)
        seen.append(list(renderer.refreshed))
        yield ev.Finished("stop")

    runner.call(runner.drive(stalls(), renderer, Result.for_request(REQUEST)), 10)
    assert seen == [["one", "one two"]]


def test_a_failing_stream_keeps_its_partial_answer_and_records_the_error_and_its_kind():
    async def fails():
        yield ev.TextDelta("partial")
        raise RateLimited("Rate limited (429)", "wait a minute")

    renderer, result = Recorder(), Result.for_request(REQUEST)
    runner.call(runner.drive(fails(), renderer, result), 10)
    assert (result.text, result.state, result.error_kind) == ("partial", "incomplete", "RateLimited")
    assert result.error == "Rate limited (429). Wait a minute."
    assert renderer.finished == ["incomplete"]


def test_a_cancelled_run_is_stopped_keeps_its_text_and_closes_the_backend():
    closed = threading.Event()

    async def endless():
        try:
            yield ev.TextDelta("so far")
            await asyncio.sleep(60)
            yield ev.TextDelta("never")
        finally:
            closed.set()

    renderer, result = Recorder(), Result.for_request(REQUEST)
    future = runner.submit(runner.drive(endless(), renderer, result))
    time.sleep(0.2)
    future.cancel()
    assert closed.wait(5)
    deadline = time.monotonic() + 5
    while not renderer.finished and time.monotonic() < deadline:
        time.sleep(0.01)
    assert (result.text, result.state, renderer.finished) == ("so far", "stopped", ["stopped"])


def test_a_blocking_run_returns_the_result_and_a_keyboard_interrupt_stops_it(monkeypatch):
    renderer, result = Recorder(), Result.for_request(REQUEST)
    assert runner.run(chunks(3), renderer, result) is result and result.text == "ababab"

    closed = threading.Event()

    async def endless():
        try:
            yield ev.TextDelta("so far")
            await asyncio.sleep(60)
        finally:
            closed.set()

    renderer, result = Recorder(), Result.for_request(REQUEST)
    timer = threading.Timer(0.3, lambda: __import__("_thread").interrupt_main())
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        runner.run(endless(), renderer, result)
    assert closed.is_set() and result.state == "stopped" and result.text == "so far"


def test_a_run_sees_the_context_of_the_code_that_started_it():
    """The kernel sends display messages to the cell whose context the run carries."""
    cell = contextvars.ContextVar("cell")
    cell.set("cell 7")

    async def which():
        return cell.get("none")

    assert runner.call(which(), 5) == "cell 7"


def test_local_tokens_reach_the_loop_in_batches_the_first_at_once():
    loop = asyncio.new_event_loop()
    queue = asyncio.Queue()
    handover = _Handover(loop, queue, threading.Event(), interval=10.0)
    handover.emit(ev.Started(model="m"))
    for i in range(200):
        handover.emit(ev.TextDelta(str(i)))
    handover.emit(ev.Finished("stop"))
    handover.emit(_DONE)
    loop.run_until_complete(asyncio.sleep(0))
    batches = []
    while not queue.empty():
        batches.append(queue.get_nowait())
    loop.close()
    assert [len(b) for b in batches] == [1, 1, 200, 1]  # start, first text, the rest with the finish, the end
    assert [e.text for b in batches for e in b if isinstance(e, ev.TextDelta)] == [str(i) for i in range(200)]


def test_a_cancelled_drive_keeps_the_partial_answer_and_the_cancellation_propagates():
    renderer, result = Recorder(), Result.for_request(REQUEST)

    async def endless():
        yield ev.TextDelta("so far")
        await asyncio.sleep(60)
        yield ev.TextDelta("never")

    async def cancel_it():
        task = asyncio.ensure_future(runner.drive(endless(), renderer, result))
        await asyncio.sleep(0.1)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            return "propagated"
        return "swallowed"

    assert runner.call(cancel_it(), 10) == "propagated"
    assert (result.text, result.state, renderer.finished) == ("so far", "stopped", ["stopped"])


def test_block_cancels_on_ctrl_c_waits_for_the_cleanup_and_re_raises():
    cleaned = []

    async def slow_to_stop():
        try:
            await asyncio.sleep(60)
        finally:
            await asyncio.sleep(0.3)  # cleanup that takes a while: the cell waits for it
            cleaned.append(True)

    timer = threading.Timer(0.3, lambda: __import__("_thread").interrupt_main())
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        runner.block(slow_to_stop())
    assert cleaned == [True]
    assert runner.block(asyncio.sleep(0, result=7)) == 7


def test_a_run_without_reported_tokens_has_no_usage_and_no_cost_anywhere():
    from qwen_magics.runlog import record_from
    from qwen_magics.display.text import footer_text

    async def no_usage():
        yield ev.TextDelta("an answer")
        yield ev.Finished("stop")

    priced = Request(messages=REQUEST.messages, model="m", endpoint=REQUEST.endpoint, price=(1.0, 2.0))
    result = runner.call(runner.drive(no_usage(), Recorder(), Result.for_request(priced)), 10)
    assert result.usage is None and result.total_usage is None and result.cost is None
    assert "tokens not reported by the server" in footer_text(result) and "tokens=not-reported" in repr(result)
    record = record_from(result, priced)
    assert (record.input_tokens, record.output_tokens, record.cost) == (None, None, None)


def test_retry_after_is_read_in_seconds_or_milliseconds_and_an_http_date_counts_as_none():
    from qwen_magics.backends.errors import retry_after

    assert retry_after({"Retry-After": "2"}) == 2.0
    assert retry_after({"retry-after-ms": "250", "Retry-After": "9"}) == 0.25
    assert retry_after({"Retry-After": "Wed, 21 Oct 2026 07:28:00 GMT"}) is None
    assert retry_after({"Retry-After": "-1"}) is None and retry_after(None) is None
    assert retry_after({"Retry-After": "3600"}) == 60.0


def test_the_stream_sees_the_pace_of_the_display_it_feeds():
    """A backend that batches its hand-over (the local model's worker) hands over as often as the driver shows."""
    seen = []

    async def reads_pace():
        seen.append(ev.consumer_pace.get())
        yield ev.Finished("stop")

    runner.call(runner.drive(reads_pace(), Recorder(interval=0.25), Result.for_request(REQUEST)), 10)
    runner.call(runner.drive(reads_pace(), Renderer(interval=None), Result.for_request(REQUEST)), 10)
    assert seen == [0.25, None] and ev.consumer_pace.get() == 0.0  # outside a drive: each piece at once
