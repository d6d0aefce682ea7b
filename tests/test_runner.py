"""The hand-over between threads: few wake-ups for a fast stream, none lost, the first text at once."""

import asyncio
import threading
import time

from qwen_magics import events as ev
from qwen_magics import runner
from qwen_magics.backends.local import _DONE, _Handover
from qwen_magics.render.base import Renderer
from qwen_magics.request import Endpoint, Request
from qwen_magics.result import Result


def test_the_cell_thread_waiting_for_nothing_wakes_at_the_first_event():
    inbox = runner._Inbox(runner.background_loop())
    threading.Timer(0.05, inbox.put, args=("first",)).start()
    started = time.monotonic()
    assert inbox.take(None) == ["first"]
    assert time.monotonic() - started < 1.0


def test_while_a_refresh_is_owed_events_pile_up_without_waking_the_cell_thread():
    inbox = runner._Inbox(runner.background_loop())
    inbox.take(0)  # the cell thread has something to show: it will sleep until its refresh is due

    def produce():
        for i in range(500):
            inbox.put(i)

    threading.Thread(target=produce).start()
    started = time.monotonic()
    items = inbox.take(0.3)
    assert time.monotonic() - started >= 0.29  # 500 events did not cut the sleep short
    assert items == list(range(500))  # and every one of them is handed over, in order


def test_right_after_a_refresh_the_next_events_wait_until_another_refresh_could_be_made():
    inbox = runner._Inbox(runner.background_loop())
    threading.Timer(0.05, inbox.put, args=("soon",)).start()
    started = time.monotonic()
    assert inbox.take(None, quiet=0.3) == ["soon"]  # not woken at 0.05: nothing could be shown before 0.3
    assert time.monotonic() - started >= 0.29


def test_after_a_quiet_time_with_no_events_the_next_one_wakes_the_cell_thread_at_once():
    inbox = runner._Inbox(runner.background_loop())
    threading.Timer(0.4, inbox.put, args=("late",)).start()
    started = time.monotonic()
    assert inbox.take(None, quiet=0.1) == ["late"]
    assert 0.39 <= time.monotonic() - started < 0.6


def test_deltas_that_pile_up_reach_the_cell_thread_joined_in_order():
    """One event to fold per refresh instead of thousands, and no backlog of objects for the garbage collector."""
    inbox = runner._Inbox(runner.background_loop())
    inbox.take(0)
    before = time.monotonic()
    for event in [ev.ReasoningDelta("think "), ev.ReasoningDelta("hard"), ev.TextDelta("a")]:
        inbox.put_event(event)
    for i in range(500):
        inbox.put_event(ev.TextDelta(f" {i}"))
    inbox.put_event(ev.Usage(input=1, output=501))
    inbox.put_event(ev.TextDelta("!"))
    items = inbox.take(0)
    assert [event for _, event in items] == [ev.ReasoningDelta("think hard"),
                                             ev.TextDelta("a" + "".join(f" {i}" for i in range(500))),
                                             ev.Usage(input=1, output=501), ev.TextDelta("!")]
    assert all(before <= at <= time.monotonic() for at, _ in items)  # a joined delta arrived with its first piece


def test_the_end_of_the_stream_always_wakes_the_cell_thread():
    inbox = runner._Inbox(runner.background_loop())
    inbox.take(0)
    end = runner._End()
    threading.Timer(0.05, inbox.put, args=(end,)).start()
    started = time.monotonic()
    assert inbox.take(30) == [end]
    assert time.monotonic() - started < 5


def test_the_stream_steps_aside_while_the_cell_thread_renders_and_resumes_when_it_sleeps():
    loop = runner.background_loop()
    inbox = runner._Inbox(loop)
    resumed = threading.Event()

    async def pump():
        inbox.put("first")  # wakes the cell thread, which now renders
        assert inbox.holding
        await inbox.step_aside()
        resumed.set()

    asyncio.run_coroutine_threadsafe(pump(), loop)
    assert inbox.take(None) == ["first"]
    assert not resumed.wait(0.1)  # held while the cell thread is awake
    threading.Thread(target=inbox.take, args=(0.5,), daemon=True).start()  # back to sleep: released
    assert resumed.wait(2)


def test_only_the_holds_for_timed_refreshes_count_against_the_display_budget():
    """Showing the first event at once is what holding is for; a throttled refresh is what it costs."""
    loop = runner.background_loop()
    inbox = runner._Inbox(loop)
    second = threading.Event()

    async def pump():
        inbox.put("first")
        await inbox.step_aside()
        await loop.run_in_executor(None, second.wait, 5)
        inbox.put("second")
        if inbox.holding:
            await inbox.step_aside()

    asyncio.run_coroutine_threadsafe(pump(), loop)
    assert inbox.take(None) == ["first"]  # woken by the event; the stream holds while the cell thread renders it
    time.sleep(0.1)
    assert inbox.take(0.05) == []  # asleep until a refresh is due (the stream resumed), woken by the timer
    time.sleep(0.05)
    assert inbox.waited == 0  # the first hold is not charged
    second.set()  # the stream's next event finds the cell thread awake, refreshing: it holds
    time.sleep(0.15)
    threading.Thread(target=inbox.take, args=(0.5,), daemon=True).start()
    deadline = time.monotonic() + 2
    while not inbox.waited and time.monotonic() < deadline:
        time.sleep(0.01)
    assert 0.1 <= inbox.waited < 1


class LeavesSomethingOnce(Renderer):
    """A renderer whose second refresh leaves part of what arrived for the next one (a new markdown block)."""

    def __init__(self):
        super().__init__(interval=0.05)
        self.refreshes = 0

    def refresh(self, result):
        self.refreshes += 1
        return self.refreshes == 2


def two_events_then_a_pause(renderer, seen_during_pause):
    async def backend(request):
        yield ev.TextDelta("para one")  # shown at once
        yield ev.TextDelta("\n\npara two")  # shown when the refresh is due: only the first block, then the rest
        await asyncio.sleep(0.6)
        seen_during_pause.append(renderer.refreshes)
        yield ev.Finished("stop")
    return backend


REQUEST = Request(messages=({"role": "user", "content": "hi"},), model="m", endpoint=Endpoint("http://127.0.0.1:9"))


def test_what_a_refresh_left_is_shown_while_the_stream_pauses_in_a_cell():
    renderer, seen = LeavesSomethingOnce(), []
    runner.run(REQUEST, two_events_then_a_pause(renderer, seen), renderer, Result.for_request(REQUEST))
    assert seen == [3]


def test_what_a_refresh_left_is_shown_while_the_stream_pauses_in_a_widget():
    renderer, seen = LeavesSomethingOnce(), []
    runner.call(runner.stream_into(REQUEST, two_events_then_a_pause(renderer, seen), renderer,
                                   Result.for_request(REQUEST)), 10)
    assert seen == [3]


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


def _work(seconds: float) -> float:
    """Pure-Python work (it needs the GIL) for about ``seconds`` of this thread's CPU; the CPU it took."""
    start = time.thread_time()
    while time.thread_time() - start < seconds:
        sum(range(1000))
    return time.thread_time() - start


def _charged_while(stream_body, others_cpu: float = 0.05) -> tuple[float, float]:
    """Run ``stream_body(stop)`` in a 'stream' thread for 0.15 s, while this thread works for ``others_cpu``.

    Returns what a :class:`runner._StreamLoss` on the stream thread charged, and the CPU this thread took.
    """
    stop = threading.Event()
    stream = threading.Thread(target=stream_body, args=(stop,), daemon=True)
    stream.start()
    loss = runner._StreamLoss(stream)
    time.sleep(0.05)
    loss.charge(0.0)  # from here on
    started = time.monotonic()
    used = _work(others_cpu)
    time.sleep(max(0.0, 0.15 - (time.monotonic() - started)))
    charged = loss.charge(0.002)  # the stream also stood aside 2 ms for a refresh
    stop.set()
    stream.join()
    return charged, used


def test_a_stream_that_keeps_its_thread_busy_is_charged_the_cpu_other_threads_took():
    """Parsing as fast as it can, the stream loses every moment another thread holds the GIL."""
    def parse(stop):
        while not stop.is_set():
            sum(range(1000))

    charged, used = _charged_while(parse)
    assert 0.6 * used <= charged <= used + 0.03, (charged, used)


def test_a_stream_waiting_on_the_network_is_charged_only_its_holds():
    """Other work done while the stream waits for bytes costs it nothing."""
    def wait_for_bytes(stop):
        while not stop.is_set():
            time.sleep(0.005)

    charged, used = _charged_while(wait_for_bytes)
    assert used >= 0.05 and 0.002 <= charged < 0.005, charged
