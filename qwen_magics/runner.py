"""Drive one backend stream into one renderer, from blocking code.

Backends are async generators.  They run on one event loop in a background
thread, kept for the life of the kernel (so HTTP connections are reused), and
hand their events to the calling thread through an inbox (:class:`_Inbox`: in
batches, see there).  The caller (the kernel's main thread, where IPython
expects display calls) renders them and stays interruptible: Ctrl-C or a
kernel interrupt raises ``KeyboardInterrupt`` while it waits, which cancels the
backend task; the backend closes its stream in ``finally`` and the partial
answer is kept, marked ``stopped``.  A backend that computes rather than waits
(the local model) runs in the caller's thread instead (:func:`run_here`).

This avoids re-entering Jupyter's own running loop (nest-asyncio), which breaks
with some kernels and event-loop policies, and keeps a cell blocking until its
answer is complete, as a cell should.
"""

from __future__ import annotations

import asyncio
import collections
import threading
import time
import traceback
from typing import AsyncIterator, Callable

from . import events as ev
from .errors import QwenMagicsError
from .render.base import Renderer
from .request import Request
from .result import Result

Backend = Callable[[Request], AsyncIterator[ev.Event]]
BlockingBackend = Callable[[Request, Callable[[ev.Event], None]], None]

_loop: asyncio.AbstractEventLoop | None = None
_loop_thread: threading.Thread | None = None
_loop_lock = threading.Lock()
_CANCEL_GRACE = 5.0
_HOLD = 0.25


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


class _End:
    """Queue sentinel: the backend finished, with the error that ended it, if any."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error


_JOINABLE = (ev.TextDelta, ev.ReasoningDelta)


class _Joined:
    """Consecutive deltas of one kind on their way to the cell's thread: one event when taken."""

    __slots__ = ("at", "kind", "pieces")

    def __init__(self, at: float, kind: type, text: str) -> None:
        self.at, self.kind, self.pieces = at, kind, [text]

    def taken(self) -> tuple[float, ev.Event]:
        """(arrival of the first piece, the whole delta)."""
        return self.at, self.kind("".join(self.pieces))


class _Inbox:
    """Events from the loop thread to the cell's thread, which renders them.

    Two costs dominate a fast stream, and both are the GIL changing hands (at
    most every 5 ms while another thread is busy):

    * A stream brings thousands of chunks a second; the display refreshes ten
      times a second.  So the cell's thread is woken only when it asked to be
      (nothing was pending); while a refresh is owed it sleeps until it is due
      and takes every event that arrived meanwhile in one go.  Right after a
      refresh nothing is owed, but no refresh could be made yet either: it
      sleeps through that too.  The end of the stream always wakes it.
    * Consecutive text (or reasoning) deltas that wait for the cell's thread are
      joined into one, so it folds one event per refresh rather than thousands,
      and a backlog costs no objects for the garbage collector to count (a fast
      stream otherwise set off its full collections, over 100 ms each in a
      kernel with the SDKs loaded).
    * While the cell's thread is awake it *holds* the stream: the loop thread
      stops reading after its next event until the cell's thread sleeps again
      (at most ``_HOLD`` seconds), so the display call and ipykernel's I/O
      thread do not queue for the GIL behind a busy parser.  The first answer
      text therefore reaches the front end as soon as it arrives.  ``waited``
      adds up how long the stream stood aside for the refreshes that the
      cell's thread woke up for on its timer: what throttled display costs a
      stream that waits on the network (a busy one loses more, see
      :class:`_StreamLoss`), which the renderer keeps within its budget.
      (Showing an event at once when nothing else was pending, the first
      text above all, is what holding is for, and not counted.)
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._items: collections.deque = collections.deque()
        self._lock = threading.Lock()  # a joined delta is never extended after the cell's thread took it
        self._ready = threading.Event()
        self._resume = asyncio.Event()
        self._wake_on_put = True
        self.holding = False
        self.waited = 0.0
        self._timed = False  # the cell's thread sleeps until a refresh is due (rather than for the next event)
        self._awake = False  # the cell's thread has taken events and may be rendering them

    def put(self, item: object) -> None:
        """Loop thread: hand over one item (as it is)."""
        with self._lock:
            self._items.append(item)
        self._wake(isinstance(item, _End))

    def put_event(self, event: ev.Event) -> None:
        """Loop thread: hand over one event with its time of arrival, joined to a pending delta of its kind."""
        kind = type(event)
        with self._lock:
            last = self._items[-1] if self._items else None
            if type(last) is _Joined and last.kind is kind:
                last.pieces.append(event.text)
            elif kind in _JOINABLE:
                self._items.append(_Joined(time.monotonic(), kind, event.text))
            else:
                self._items.append((time.monotonic(), event))
        self._wake(False)

    def _wake(self, always: bool) -> None:
        if self._wake_on_put or always:
            self.holding = True
            self._ready.set()

    async def step_aside(self) -> None:
        """Loop thread, when ``holding``: wait while the cell's thread is rendering."""
        self._resume.clear()
        # A timer rather than asyncio.wait_for, which can swallow a cancellation (Ctrl-C) that
        # arrives as the event is set (Python 3.11, gh-86296).
        timer = self._loop.call_later(_HOLD, self._resume.set)
        started, counted = time.monotonic(), self._timed  # (the cell's thread sets _timed again before it resumes us)
        try:
            await self._resume.wait()
        finally:
            timer.cancel()
            if counted:
                self.waited += time.monotonic() - started

    def take(self, timeout: float | None, quiet: float = 0.0) -> list:
        """Cell's thread: every item available, waiting for one only when ``timeout`` is None.

        With a timeout (a refresh is owed), wait until then or the end of the
        stream, whichever comes first, and return what arrived (maybe nothing).
        Without one, first sleep ``quiet`` seconds (no refresh could be made
        sooner), then return what arrived, or wait for the first item.
        """
        sleep = timeout if timeout is not None else quiet or None
        self._ready.clear()
        self._wake_on_put = sleep is None
        self._timed = sleep is not None
        if self.holding and self._awake:  # back to sleep: let the stream go on (a first event's hold stays)
            self.holding = False
            self._loop.call_soon_threadsafe(self._resume.set)
        if not self._items or sleep is not None:
            self._ready.wait(sleep)
        if timeout is None and not self._items:  # slept through the quiet time, nothing came: wake at the first
            self._ready.clear()
            self._wake_on_put, self._timed = True, False
            if not self._items:
                self._ready.wait()
        self.holding = self._awake = True
        with self._lock:
            items, self._items = self._items, collections.deque()
        return [item.taken() if type(item) is _Joined else item for item in items]


class _StreamLoss:
    """What the display has cost a stream in another thread, in all: what the renderer budgets.

    A stream that waits on the network loses only the holds (see
    :class:`_Inbox`).  One that parses as fast as it can also loses the CPU
    the other threads use around each refresh while it has the GIL to win:
    the refresh, and ipykernel's I/O thread sending it, about three times the
    hold in all (benchmarks/README.md).  So each time the cell's thread wakes,
    the stretch since it last woke is charged the other threads' CPU time less
    the slack: the time nothing in the process ran though the stream could
    have (it was waiting on the network, and other work then cost it
    nothing), or its holds if that is more.  The stream thread's CPU and its
    time waiting for a CPU (another process had it) come from Linux's
    schedstat; elsewhere only the holds are charged.
    """

    def __init__(self, thread: threading.Thread | None) -> None:
        tid = thread.native_id if thread is not None else None
        self._stat = f"/proc/self/task/{tid}/schedstat" if tid else None
        self._then = self._sample()
        self._held = 0.0
        self.total = 0.0

    def _sample(self) -> tuple[float, float, float, float] | None:
        """(wall, the process's CPU, the stream thread's CPU, its wait for a CPU) in seconds; None: not known."""
        if self._stat is None:
            return None
        try:
            with open(self._stat, "rb") as f:
                cpu, delay = f.read().split()[:2]
        except (OSError, ValueError):  # a kernel without schedstat: the holds alone from now on
            self._stat = None
            return None
        return time.monotonic(), time.process_time(), int(cpu) / 1e9, int(delay) / 1e9

    def charge(self, held: float) -> float:
        """Charge the stretch since the last call, given the holds' running total; the running total of the loss."""
        step, self._held = held - self._held, held
        now = self._sample()
        if now is None or self._then is None:
            self.total += step
        else:
            wall, process, stream, delayed = (b - a for a, b in zip(self._then, now))
            slack = max(0.0, wall - process - delayed)
            self.total += max(step, process - stream - slack)
        self._then = now
        return self.total


def run(request: Request, backend: Backend, renderer: Renderer, result: Result) -> Result:
    """Stream ``request`` through ``backend`` into ``renderer``; fold events into ``result``.

    Raises the backend's :class:`QwenMagicsError` (after the partial answer is
    rendered and marked incomplete) and ``KeyboardInterrupt`` (after it is
    marked stopped); the renderer is always finished first.
    """
    loop = background_loop()
    inbox = _Inbox(loop)
    done = threading.Event()

    async def pump() -> None:
        events = backend(request)
        try:
            async for event in events:
                inbox.put_event(event)
                if inbox.holding:
                    await inbox.step_aside()
            inbox.put(_End())
        except asyncio.CancelledError:
            raise
        except BaseException as err:  # noqa: BLE001 - handed to the caller's thread
            _release_frames(err)
            inbox.put(_End(err))
        finally:
            await events.aclose()  # Ctrl-C: the backend closes its stream before the cell goes on
            done.set()

    future = asyncio.run_coroutine_threadsafe(pump(), loop)
    try:
        error = _consume(inbox, _StreamLoss(_loop_thread), renderer, result)
    except KeyboardInterrupt:
        future.cancel()
        done.wait(_CANCEL_GRACE)
        result.apply(ev.Failed("stopped by user", state="stopped"))
        _finish(renderer, result)
        raise
    if error is not None:
        result.apply(failure(error))
    _finish(renderer, result)
    if error is not None:
        raise error
    return result


def run_here(request: Request, generate: BlockingBackend, renderer: Renderer, result: Result) -> Result:
    """Like :func:`run`, for a backend that computes in the calling thread (the local model).

    Waiting on a network is best done on the loop thread; computing is best
    done right here, with no thread to wake per token.  Events are rendered as
    they come; Ctrl-C raises ``KeyboardInterrupt`` inside the backend, which
    stops at the next token.
    """
    def emit(event: ev.Event) -> None:
        result.apply(event, time.monotonic())
        renderer.handle(event, result)

    try:
        generate(request, emit)
    except KeyboardInterrupt:
        result.apply(ev.Failed("stopped by user", state="stopped"))
        _finish(renderer, result)
        raise
    except QwenMagicsError as err:
        result.apply(failure(err))
        _finish(renderer, result)
        raise
    _finish(renderer, result)
    return result


async def stream_into(request: Request, backend: Backend, renderer: Renderer, result: Result) -> Result:
    """Run on the package loop: stream into a renderer that may be updated from this thread (widgets).

    Never raises for a failed or cancelled run: the result records it
    (``incomplete`` with the error, or ``stopped``), so one failing column of a
    comparison never stops the others.  A timer makes sure a pending refresh
    happens even when the stream stalls.
    """
    loop = asyncio.get_running_loop()
    timer: asyncio.TimerHandle | None = None

    def arm() -> None:
        """A pending refresh happens when due, events or not (a stalled stream, what a refresh left)."""
        nonlocal timer
        wait = renderer.seconds_until_due()
        if wait is not None and timer is None:
            timer = loop.call_later(wait, refresh)

    def refresh() -> None:
        nonlocal timer
        timer = None
        renderer.refresh_if_due(result)
        arm()

    events = backend(request)
    try:
        async for event in events:
            result.apply(event)
            renderer.handle(event, result)
            arm()
    except asyncio.CancelledError:
        result.apply(ev.Failed("stopped by user", state="stopped"))
    except Exception as err:  # noqa: BLE001 - recorded on the result, shown in the column
        _release_frames(err)
        result.apply(failure(err))
    finally:
        if timer is not None:
            timer.cancel()
        await events.aclose()  # the backend closes its stream (already done when the error came from it)
        _finish(renderer, result)
    return result


def call(coroutine, timeout: float):
    """Run one coroutine on the package's loop and wait for its value (Ctrl-C cancels it)."""
    future = asyncio.run_coroutine_threadsafe(coroutine, background_loop())
    try:
        return future.result(timeout)
    except BaseException:
        future.cancel()
        raise


def refused(renderer: Renderer, error: QwenMagicsError, model: str) -> Result:
    """A run that could not start (bad options, no key): its one line shown, recorded as incomplete."""
    result = Result(model=model, parameters={})
    renderer.notice(error.line())
    result.apply(failure(error))
    _finish(renderer, result)
    return result


def failure(error: BaseException) -> ev.Failed:
    """The event that records an error on a result: its one-line message."""
    message = error.line() if isinstance(error, QwenMagicsError) else f"{type(error).__name__}: {error}"
    return ev.Failed(message)


def _release_frames(error: BaseException | None) -> None:
    """Drop the locals of the finished frames in an error's traceback, and in its causes'.

    A stream that fails inside an SDK (a malformed event, an error object in
    the stream) leaves the SDK's body generators (openai's SSE decoder,
    httpx2's byte streams) suspended, held only by those frames.  Released
    here, on the loop, they close one after another, as after a ``break``.
    Held by the error, which IPython and pytest keep, a later garbage
    collection in any thread finalised them all at once, and httpx2's then
    closed each other out of order: "Exception ignored ... async generator
    already executing", printed under some later cell.  The traceback keeps
    its lines; only the locals go.
    """
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        traceback.clear_frames(error.__traceback__)
        error = error.__cause__ or error.__context__


def _consume(inbox: _Inbox, loss: _StreamLoss, renderer: Renderer, result: Result) -> BaseException | None:
    while True:
        for item in inbox.take(renderer.seconds_until_due(), quiet=renderer.seconds_until_allowed()):
            if isinstance(item, _End):
                return item.error
            at, event = item
            result.apply(event, at)
            renderer.take(event, result)
        renderer.refresh_if_due(result, loss.charge(inbox.waited))


def _finish(renderer: Renderer, result: Result) -> None:
    result.close()
    renderer.finish(result)
