"""Fixtures: the loopback DashScope server and a real IPython shell with the extension loaded."""

from __future__ import annotations

import atexit
import gc
import os
import signal
import sys
import threading
import time
import types

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from loopback import DEFAULT_KEY, LoopbackServer  # noqa: E402
from parts import browser_missing, local_model_missing, require  # noqa: E402

FAKE_KEY = DEFAULT_KEY


def pytest_runtest_setup(item):
    """A test marked ``local`` (its argument: the model, ``0.5b`` unless given) or ``browser`` skips with the
    command that installs what it lacks, or fails under ``CI=true`` (see parts.py), before any fixture runs."""
    local = item.get_closest_marker("local")
    if local is not None:
        require("this local-model test", local_model_missing(*local.args[:1]))
    if item.get_closest_marker("browser") is not None:
        require("this browser test", browser_missing())


@pytest.fixture(scope="session")
def server():
    with LoopbackServer() as srv:
        yield srv


@pytest.fixture(autouse=True)
def run_log_in_a_temporary_folder(tmp_path_factory, monkeypatch):
    """Every test's run log, and that of every kernel or process it starts, is a file of its own, never the user's."""
    path = tmp_path_factory.mktemp("runlog") / "log.db"
    monkeypatch.setenv("QWEN_MAGICS_LOG", str(path))
    return path


@pytest.fixture(autouse=True)
def no_task_left_on_the_package_loop():
    """Every test leaves the package's loop idle: no stream of its own goes on into the next test.

    A stream still running when the interpreter exits is torn down mid-read (an SDK's async
    generator "already executing"), far from the test that started it; this names that test.
    """
    yield
    import asyncio

    from qwen_magics import runner

    if runner._loop is None:
        return

    async def others() -> list[str]:
        me = asyncio.current_task()
        return [repr(t) for t in asyncio.all_tasks() if t is not me]

    deadline = time.monotonic() + 3  # a stream the test stopped may still be closing its connection
    while (left := asyncio.run_coroutine_threadsafe(others(), runner._loop).result(5)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not left, f"tasks still running on the package's loop after the test: {left}"


@pytest.fixture
def dashscope(server, monkeypatch):
    """The loopback server standing in for every DashScope host, with a valid key set."""
    server.reset()
    monkeypatch.setenv("QWEN_MAGICS_DASHSCOPE_URL", server.url)
    monkeypatch.setenv("DASHSCOPE_API_KEY", FAKE_KEY)
    return server


@pytest.fixture
def shell():
    """A fresh InteractiveShell (history off) whose display output is captured in ``display_pub.outputs``."""
    from IPython.core.displaypub import CapturingDisplayPublisher
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    config = Config()
    config.HistoryManager.enabled = False
    InteractiveShell.clear_instance()
    sh = InteractiveShell.instance(config=config)
    atexit.unregister(sh.atexit_operations)  # each one runs gc.collect() at exit: hundreds of shells took minutes
    sh.display_pub = CapturingDisplayPublisher()
    yield sh
    InteractiveShell.clear_instance()


@pytest.fixture
def ip(shell, dashscope):
    """The shell with qwen_magics loaded, rendering as in a notebook, talking to the loopback server."""
    shell.run_line_magic("load_ext", "qwen_magics")
    shell.run_line_magic("config", "QwenMagics.display_mode = 'notebook'")
    return shell


def outputs_text(shell) -> str:
    """Everything the shell displayed, all mime types, as one string."""
    return "\n".join(str(v) for out in shell.display_pub.outputs for v in out["data"].values())


def interrupt_once_text_arrives(shell):
    """Press Ctrl-C (SIGINT to this process) as soon as the running cell's answer has some text."""
    before = shell.user_ns.get("_qwen")

    def watch():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            current = shell.user_ns.get("_qwen")
            if current is not before and current is not None and current.text:
                os.kill(os.getpid(), signal.SIGINT)
                return
            time.sleep(0.01)

    threading.Thread(target=watch, daemon=True).start()


def interrupt_once_a_batch_job_runs(server):
    """Press Ctrl-C (SIGINT to this process) once a Batch job on the loopback server has run for a second."""
    def watch():
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not any(j.order and time.monotonic() - j.started > 1.0
                                                      for j in list(server.batches.jobs.values())):
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=watch, daemon=True).start()


def interrupt_once_answered(server, count):
    """Press Ctrl-C (SIGINT to this process) once the loopback server has finished ``count`` answers."""
    def watch():
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and sum(r.finished is not None for r in server.requests) < count:
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=watch, daemon=True).start()


def suspended_sdk_generators(within: float = 5.0) -> list[str]:
    """The SDKs' async generators (and their HTTP stacks') still suspended after ``within`` seconds: [] if none.

    They close on the package's loop, a moment after the cell; one left
    suspended is closed by some later garbage collection instead, out of order.
    """
    sdks = {"openai", "httpx2", "httpcore2", "dashscope", "aiohttp"}
    deadline = time.monotonic() + within
    while True:
        left = [g.ag_code.co_qualname for g in gc.get_objects()
                if isinstance(g, types.AsyncGeneratorType) and g.ag_frame is not None
                and g.ag_frame.f_globals.get("__name__", "").partition(".")[0] in sdks]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.02)
