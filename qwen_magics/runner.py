"""The package's event loop, and the one driver that streams a backend into a renderer.

Every run, whatever its surface (a cell, a comparison column, the panel, a
dataset map's row), is :func:`drive`: a coroutine on the package's event loop
that reads a backend's events, folds them into a :class:`Result` and hands
them to a renderer.  The driver alone decides when a display refreshes (at
most every ``renderer.interval`` seconds, kept by a :class:`Pace`; the map's
progress view keeps its own :class:`Pace`).  The loop runs in a daemon thread
for the life of the kernel, so HTTP connections are reused and Jupyter's own
running loop is never re-entered; the backends, the driver and the renderers
all run on that thread.

A cell waits with :func:`block` (a run: :func:`run`): the cell's thread
blocks (a cell ends when its answer is complete) and stays interruptible;
Ctrl-C cancels the coroutine, which cleans up (a run keeps its partial answer,
marked ``stopped``), waits for it at most ``_CANCEL_GRACE`` seconds, and
re-raises the interrupt.  Coroutines are started in the cell's context
(:mod:`contextvars`), so the kernel routes their display messages to that cell.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextvars
import threading
import time
import traceback
from contextlib import aclosing
from typing import Any, Callable, Coroutine

from . import events as ev
from .errors import QwenMagicsError
from .result import Result

_loop: asyncio.AbstractEventLoop | None = None
_loop_thread: threading.Thread | None = None
_loop_lock = threading.Lock()
_CANCEL_GRACE = 10.0  # how long an interrupted cell waits for its coroutine to clean up
_WAKE = 0.25  # how often a waiting cell's thread wakes to notice an interrupt
_JOINABLE = (ev.TextDelta, ev.ReasoningDelta)


# The loop ----------------------------------------------------------------------------------------

def background_loop() -> asyncio.AbstractEventLoop:
    """The package's event loop, running in a daemon thread (started on first use)."""
    global _loop, _loop_thread
    with _loop_lock:
        if _loop is None:
            loop = asyncio.new_event_loop()
            _loop_thread = threading.Thread(target=loop.run_forever, name="qwen-magics-loop", daemon=True)
            _loop_thread.start()
            _loop = loop
        return _loop


def submit(coroutine: Coroutine) -> concurrent.futures.Future:
    """Start ``coroutine`` on the package's loop, in the caller's context; its value as a future.

    Cancelling the future cancels the task.  The task runs in a copy of the
    caller's :mod:`contextvars` context, as a coroutine awaited by the caller
    would, so the kernel sends what it displays to the caller's cell.
    """
    loop = background_loop()
    future: concurrent.futures.Future = concurrent.futures.Future()

    def start() -> None:
        if future.cancelled():
            coroutine.close()
            return
        task = loop.create_task(coroutine)
        task.add_done_callback(lambda done: _settle(future, done))
        future.add_done_callback(lambda f: f.cancelled() and loop.call_soon_threadsafe(task.cancel))

    loop.call_soon_threadsafe(start, context=contextvars.copy_context())
    return future


def _settle(future: concurrent.futures.Future, task: asyncio.Task) -> None:
    if not future.set_running_or_notify_cancel():  # the caller cancelled it meanwhile
        return
    if task.cancelled():
        future.set_exception(concurrent.futures.CancelledError())
    elif task.exception() is not None:
        future.set_exception(task.exception())
    else:
        future.set_result(task.result())


def call(coroutine: Coroutine, timeout: float | None = None) -> Any:
    """Run one coroutine on the package's loop and wait for its value (Ctrl-C or the timeout cancels it)."""
    future = submit(coroutine)
    try:
        return wait(future, timeout)
    except BaseException:
        future.cancel()
        raise


def wait(future: concurrent.futures.Future, timeout: float | None = None) -> Any:
    """``future.result(timeout)``, interruptible however the interrupt comes.

    A wait without a timeout blocks in one lock acquisition, which only a real
    signal interrupts; a kernel's interrupt can also be raised in the waiting
    thread (``_thread.interrupt_main``), which is seen when the wait wakes.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        step = _WAKE if deadline is None else min(_WAKE, max(0.0, deadline - time.monotonic()))
        try:
            return future.result(step)
        except concurrent.futures.TimeoutError:
            if deadline is not None and time.monotonic() >= deadline:
                raise


def shutdown(timeout: float = 2.0) -> None:
    """Stop the loop and let its thread end (at exit; safe to call twice)."""
    global _loop, _loop_thread
    with _loop_lock:
        loop, thread, _loop, _loop_thread = _loop, _loop_thread, None, None
    if loop is not None:
        loop.call_soon_threadsafe(loop.stop)
    if thread is not None:
        thread.join(timeout)


atexit.register(shutdown)  # registered first, so it runs last: backends close their sessions on the loop before


# Blocking a cell ---------------------------------------------------------------------------------

def block(coroutine: Coroutine) -> Any:
    """Run ``coroutine`` on the package's loop and wait for its value; Ctrl-C cancels it.

    On ``KeyboardInterrupt`` the coroutine is cancelled (it cleans up as it
    sees fit), waited for at most ``_CANCEL_GRACE`` seconds (a coroutine that
    ignores cancellation does not hold the cell), and the interrupt re-raised.
    """
    ended = threading.Event()

    async def watched() -> Any:
        try:
            return await coroutine
        finally:
            ended.set()

    future = submit(watched())
    try:
        return wait(future)
    except KeyboardInterrupt:
        future.cancel()
        ended.wait(_CANCEL_GRACE)
        raise


# The driver --------------------------------------------------------------------------------------

class Pace:
    """When a display may refresh next: at most once per ``interval`` seconds.

    With ``slowest``, the interval grows with the time since the pace was made
    (a tenth of it) up to ``slowest`` seconds, so a long run's traffic stays small.
    """

    def __init__(self, interval: float, clock: Callable[[], float] = time.monotonic,
                 slowest: float | None = None) -> None:
        self.interval, self.clock, self.slowest = interval, clock, slowest
        self.started = clock()
        self.last = float("-inf")

    def wait(self) -> float:
        """Seconds until a refresh is allowed (0: now)."""
        now = self.clock()
        interval = self.interval
        if self.slowest is not None:
            interval = min(self.slowest, max(interval, (now - self.started) / 10))
        return max(0.0, self.last + interval - now)

    def mark(self) -> None:
        """A refresh happened now."""
        self.last = self.clock()


async def drive(events, renderer, result: Result) -> Result:
    """Stream ``events`` (a backend's async generator) into ``renderer``, folding them into ``result``.

    A failed run does not raise: the result records it (``incomplete``, with
    the error's one line and kind), so one failing column never stops the
    others.  A cancelled one keeps what arrived, is marked ``stopped``, and
    the cancellation propagates.  Either way the stream is closed and the
    renderer finished exactly once.

    Refreshes are paced here: at most one per ``renderer.interval`` seconds
    (``None``: none until the end), the first text shown at once, and a
    refresh that is owed happens when due even when the stream stalls.
    Consecutive text (or reasoning) deltas that arrive between refreshes are
    joined into one event, so a fast stream costs one fold and one renderer
    call per refresh, not per chunk.
    """
    loop = asyncio.get_running_loop()
    pace = None if renderer.interval is None else Pace(renderer.interval, renderer.clock)
    timer: asyncio.TimerHandle | None = None
    owed = False  # the renderer holds something its display does not show yet
    pending: list[str] = []
    pending_kind: type | None = None
    pending_choice = 0
    pending_at = 0.0

    def flush() -> None:
        nonlocal pending_kind, owed
        if pending_kind is not None:
            event = pending_kind("".join(pending), pending_choice)
            pending.clear()
            pending_kind = None
            result.apply(event, pending_at)
            renderer.take(event, result)
            owed = True

    def refresh() -> None:
        nonlocal timer, owed
        if timer is not None:
            timer.cancel()
            timer = None
        flush()
        if owed and pace is not None and pace.wait() == 0:
            pace.mark()
            owed = renderer.refresh(result)
        if owed and pace is not None:
            timer = loop.call_later(pace.wait(), refresh)

    paced = ev.consumer_pace.set(renderer.interval)  # what a backend that batches its hand-over reads
    try:
        async with aclosing(events) as stream:  # the backend closes its stream, however the run ends
            async for event in stream:
                kind = type(event)
                if kind in _JOINABLE:
                    if kind is not pending_kind or event.choice != pending_choice:
                        flush()
                        pending_kind, pending_choice, pending_at = kind, event.choice, time.monotonic()
                    pending.append(event.text)
                    if pace is not None:
                        wait = pace.wait()
                        if wait == 0:
                            refresh()
                        elif timer is None:
                            timer = loop.call_later(wait, refresh)
                    continue
                flush()
                result.apply(event)
                renderer.take(event, result)
                owed = owed or kind is ev.ToolCallDelta
                if timer is None and owed:
                    refresh()
    except asyncio.CancelledError:
        flush()
        result.apply(ev.Failed("stopped by user", state="stopped"))
        raise
    except Exception as err:  # noqa: BLE001 - recorded on the result; the caller decides what to show
        _release_frames(err)
        flush()
        result.apply(failure(err))
    finally:
        ev.consumer_pace.reset(paced)
        if timer is not None:
            timer.cancel()
        flush()
        _finish(renderer, result)
    return result


def run(events, renderer, result: Result) -> Result:
    """Drive a run from blocking code (a cell) and wait for it; Ctrl-C stops it (see :func:`block`).

    On ``KeyboardInterrupt`` the run keeps its partial answer, marked
    ``stopped``, its renderer finished, and the interrupt is re-raised.
    """
    try:
        return block(drive(events, renderer, result))
    except KeyboardInterrupt:
        if result.state == "streaming":  # a stream that ignored the cancellation: the cell goes on regardless
            result.apply(ev.Failed("stopped by user", state="stopped"))
        raise


def refused(renderer, error: QwenMagicsError, model: str) -> Result:
    """A run that could not start (bad options, no key): its one line shown, recorded as incomplete.

    Nothing ran, so there is no answer and no footer to show.
    """
    result = Result(model=model, parameters={})
    renderer.notice(error.line())
    result.apply(failure(error))
    result.close()
    return result


def failure(error: BaseException) -> ev.Failed:
    """The event that records an error on a result: its one-line message and its kind."""
    if isinstance(error, QwenMagicsError):
        return ev.Failed(error.line(), kind=type(error).__name__)
    return ev.Failed(f"{type(error).__name__}: {error}", kind=type(error).__name__)


def _release_frames(error: BaseException | None) -> None:
    """Drop the locals of the finished frames in an error's traceback, and in its causes'.

    A stream that fails inside an SDK (a malformed event, an error object in
    the stream) leaves the SDK's body generators suspended, held only by those
    frames.  Released here, on the loop, they close one after another, as
    after a ``break``; held by the error, a later garbage collection in any
    thread would finalise them all at once, out of order ("Exception ignored
    ... async generator already executing", printed under some later cell).
    The traceback keeps its lines; only the locals go.
    """
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        traceback.clear_frames(error.__traceback__)
        error = error.__cause__ or error.__context__


def _finish(renderer, result: Result) -> None:
    result.close()
    renderer.finish(result)
