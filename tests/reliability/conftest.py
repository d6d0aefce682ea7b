"""Fixtures of the reliability suite, and the hooks that record its figures.

Every in-process test (fixture ``ip``) and every real-kernel test (fixture ``kernel``) runs with a
known fake key and is checked afterwards: no fragment of the key in anything shown, logged, repr'd or
raised, and no thread, task or socket left behind.  The suite runs after the other tests.  After every
full run of it, failures included, its figures go to a file outside the checkout
(:func:`publish.figures_path`), and the run fails when one of them is not clean;
``python -m tests.reliability.publish`` puts them into the README.
"""

from __future__ import annotations

import atexit
import dataclasses
import json
import logging
import os
import time
from collections import Counter
from pathlib import Path

import pytest

from .publish import figures_path, problems
from .support import (FIGURES, SECRET_KEY, SEEN, SNAPSHOT_SOURCE, Kernel, cancel_package_tasks, key_fragments_in,
                      settled_leaks, snapshot)

HERE = Path(__file__).resolve().parent


def port_of(server) -> int:
    return int(server.url.rsplit(":", 1)[1])


@pytest.fixture(scope="package", autouse=True)
def accept_the_secret_key(server):
    """The loopback server accepts the suite's fake key (as well as the other tests' key)."""
    server.valid_keys.add(SECRET_KEY)
    yield
    server.valid_keys.discard(SECRET_KEY)
    _close_native_session()


def _close_native_session() -> None:
    """The dashscope SDK keeps one aiohttp session per loop (the package's loop too): close it, as at exit."""
    import asyncio
    import sys

    if "dashscope" in sys.modules:
        from dashscope import close_shared_aio_session

        from qwen_magics import runner

        asyncio.run_coroutine_threadsafe(close_shared_aio_session(), runner.background_loop()).result(5)


class Allowance:
    """How many more keep-alive connections a test may leave in the SDK clients' pools (default 2)."""

    connections = 2


@pytest.fixture
def allowance():
    return Allowance()


class _Logs(logging.Handler):
    """Every log record of the process, at DEBUG, formatted with its exception text."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.texts: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.texts.append(self.format(record))
        except Exception as err:  # noqa: BLE001 - a record that cannot be formatted is still scanned
            self.texts.append(f"{record.name} {record.msg!r} {record.args!r} ({err!r})")

    QUIET = ("markdown_it",)  # traces every parsing rule at DEBUG: only answer text, and slow

    def __enter__(self) -> "_Logs":
        root = logging.getLogger()
        self._levels = [(root, root.level)] + [(logging.getLogger(n), logging.getLogger(n).level) for n in self.QUIET]
        root.setLevel(logging.DEBUG)
        for name in self.QUIET:
            logging.getLogger(name).setLevel(logging.INFO)
        root.addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        logging.getLogger().removeHandler(self)
        for logger, level in self._levels:
            logger.setLevel(level)


def _reprs(namespace: dict) -> list[str]:
    """Reprs of the results and comparisons a notebook holds, and what they carry."""
    from qwen_magics.result import Result
    from qwen_magics.widgets.compare import Comparison

    out = []
    for value in list(namespace.values()):
        if isinstance(value, Result):
            out += [repr(value), repr(value.parameters), repr(value.messages), str(value), str(value.error),
                    json.dumps(value._repr_mimebundle_())]
        elif isinstance(value, Comparison):
            out += [repr(value), repr(value.rows), value.to_markdown()]
    return out


@pytest.fixture
def ip(ip, dashscope, monkeypatch, allowance, capsys):
    """tests/conftest.py's in-process shell, with the fake key set; afterwards nothing leaked, the key nowhere."""
    monkeypatch.setenv("DASHSCOPE_API_KEY", SECRET_KEY)
    ip.run_line_magic("config", "QwenMagics.max_retries = 2")
    port = port_of(dashscope)
    SEEN.clear()
    before = snapshot(port)
    with _Logs() as logs:
        yield ip
    # Leftovers are measured before anything is cleaned up: a stream that a lost Ctrl-C left running goes
    # on streaming past the settling time (the tests that press Ctrl-C stream for longer than that), so it
    # is reported here as a task left on the package's loop.  Only then is it cancelled, for the next test.
    leaks = settled_leaks(lambda: snapshot(port), before, allowance.connections)
    cancel_package_tasks()
    printed = capsys.readouterr()
    texts = ([json.dumps(o["data"], default=str) for o in ip.display_pub.outputs] + logs.texts + SEEN
             + _reprs(ip.user_ns) + [printed.out, printed.err])
    FIGURES.log_records += len(logs.texts)
    found = key_fragments_in(texts, "in-process")
    SEEN.clear()
    # IPython keeps every shell for an atexit gc.collect(): hundreds of shells made the exit take minutes
    atexit.unregister(ip.atexit_operations)
    ip.user_ns.clear()
    assert not found, found
    assert not leaks, leaks


@pytest.fixture(scope="package")
def _kernel(server, accept_the_secret_key, tmp_path_factory):
    from jupyter_client.manager import start_new_kernel

    env = dict(os.environ, QWEN_MAGICS_DASHSCOPE_URL=server.url, DASHSCOPE_API_KEY=SECRET_KEY, PYTHONUNBUFFERED="1",
               QWEN_MAGICS_LOG=str(tmp_path_factory.mktemp("kernel-runlog") / "log.db"))
    km, kc = start_new_kernel(kernel_name="python3", env=env)
    kernel = Kernel(km, kc, port_of(server))
    kernel.ok("%load_ext qwen_magics\n" + SNAPSHOT_SOURCE)
    yield kernel
    kc.stop_channels()
    km.shutdown_kernel(now=True)


@pytest.fixture
def kernel(_kernel, dashscope, allowance):
    """A real kernel (shared by the suite) with the fake key; afterwards nothing leaked in it, the key nowhere."""
    _kernel.ok("%config QwenMagics.max_retries = 2\n%config QwenMagics.timeout = 60.0\n"
               "%config QwenMagics.api = 'chat'")
    before = _kernel.snapshot()
    _kernel.sent.clear()
    yield _kernel
    leaks = settled_leaks(_kernel.snapshot, before, allowance.connections)
    found = key_fragments_in([json.dumps(m, default=str) for m in _kernel.sent], "kernel iopub")
    _kernel.sent.clear()
    assert not found, found
    assert not leaks, leaks


# ------------------------------------------------------------------------------------------ figures

class _Run:
    """Which reliability tests were collected, how each one ended, and when the first one started."""

    def __init__(self) -> None:
        self.collected: set[str] = set()
        self.modules: set[str] = set()
        self.outcomes: dict[str, str] = {}  # nodeid -> passed | failed | skipped | xfailed | xpassed
        self.deselected = False
        self.started: float | None = None
        self.lines: list[str] = []  # what the terminal summary says about the figures


_RUN = _Run()


def _ours(nodeid: str) -> bool:
    return nodeid.replace("\\", "/").startswith("tests/reliability/") or nodeid.startswith("reliability/")


def pytest_collection_modifyitems(session, config, items):
    """Run this suite after the other tests (it is the slowest, and it uses the package's loop and SDK sessions
    the way a long-lived kernel does), and note what it collected."""
    items[:] = [item for item in items if not _ours(item.nodeid)] + [item for item in items if _ours(item.nodeid)]
    _RUN.collected = {item.nodeid for item in items if _ours(item.nodeid)}
    _RUN.modules = {item.path.name for item in items if _ours(item.nodeid)}


def pytest_deselected(items):
    if any(_ours(item.nodeid) for item in items):
        _RUN.deselected = True


def pytest_runtest_logstart(nodeid, location):
    if _ours(nodeid) and _RUN.started is None:
        _RUN.started = time.monotonic()


def pytest_runtest_logreport(report):
    """A failure in any phase makes the test failed; pytest-timeout stopping it counts as a hang."""
    if not _ours(report.nodeid):
        return
    if report.failed:
        _RUN.outcomes[report.nodeid] = "failed"
        if "from pytest-timeout" in report.longreprtext:
            FIGURES.hangs[f"{report.nodeid} · the whole test"] = "stopped by pytest-timeout"
    elif _RUN.outcomes.get(report.nodeid) != "failed":
        if hasattr(report, "wasxfail"):
            _RUN.outcomes[report.nodeid] = "xpassed" if report.passed else "xfailed"
        elif report.skipped:
            _RUN.outcomes[report.nodeid] = "skipped"
        elif report.when == "call":
            _RUN.outcomes[report.nodeid] = "passed"


def report_of_the_run() -> dict:
    """The run's figures and test outcomes, as ``publish.py`` reads them."""
    figures = {name: sorted(value) if isinstance(value, set) else value
               for name, value in dataclasses.asdict(FIGURES).items()}
    counts = Counter(_RUN.outcomes.values())
    return {"tests": len(_RUN.collected), "outcomes": {k: counts[k] for k in ("passed", "failed", "skipped",
                                                                                "xfailed", "xpassed")},
            "failed": sorted(n for n, o in _RUN.outcomes.items() if o in ("failed", "xpassed")),
            "seconds": time.monotonic() - (_RUN.started or time.monotonic()), "cores": os.cpu_count(),
            "figures": figures}


def pytest_sessionfinish(session, exitstatus):
    """After a full run (every module, nothing deselected, every test ended), write the figures; after any
    run of the suite, fail it when a figure is not clean."""
    if not _RUN.outcomes:
        return
    report = report_of_the_run()
    every_module = {p.name for p in HERE.glob("test_*.py")}
    full = _RUN.modules == every_module and not _RUN.deselected and set(_RUN.outcomes) == _RUN.collected
    if full:
        path = figures_path()
        path.write_text(json.dumps(report, indent=1), encoding="utf-8")
        _RUN.lines.append(f"reliability figures written to {path}; `python -m tests.reliability.publish` "
                          "puts them into README.md")
    else:
        _RUN.lines.append("reliability figures not written: not a full run of tests/reliability")
    unclean = problems(report)
    _RUN.lines += [f"reliability figure not clean: {line}" for line in unclean]
    if unclean and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter):
    for line in _RUN.lines:
        terminalreporter.write_line(line, red=line.startswith("reliability figure not clean"))
