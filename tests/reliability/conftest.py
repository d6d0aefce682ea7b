"""Fixtures of the reliability suite, and the hooks that publish its figures in the README.

Every in-process test (fixture ``ip``) and every real-kernel test (fixture ``kernel``) runs with a
known fake key and is checked afterwards: no fragment of the key in anything shown, logged, repr'd or
raised, and no thread, task or socket left behind.  The suite runs after the other tests; when all of it
ran and passed, its figures go into the README's "Reliability" section.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import re
import time
from pathlib import Path

import pytest

from .support import (FIGURES, SECRET_KEY, SEEN, SNAPSHOT_SOURCE, Kernel, key_fragments_in, settled_leaks,
                      snapshot)

HERE = Path(__file__).resolve().parent
README = HERE.parents[1] / "README.md"
BEGIN, END = "<!-- reliability -->", "<!-- /reliability -->"


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
    problems = settled_leaks(lambda: snapshot(port), before, allowance.connections)
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
    assert not problems, problems


@pytest.fixture(scope="package")
def _kernel(server, accept_the_secret_key):
    from jupyter_client.manager import start_new_kernel

    env = dict(os.environ, QWEN_MAGICS_DASHSCOPE_URL=server.url, DASHSCOPE_API_KEY=SECRET_KEY, PYTHONUNBUFFERED="1")
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
    problems = settled_leaks(_kernel.snapshot, before, allowance.connections)
    found = key_fragments_in([json.dumps(m, default=str) for m in _kernel.sent], "kernel iopub")
    _kernel.sent.clear()
    assert not found, found
    assert not problems, problems


# ------------------------------------------------------------------------------ figures in the README

class _Run:
    """Which reliability tests were collected and ran, and whether any failed."""

    def __init__(self) -> None:
        self.collected: set[str] = set()
        self.done: set[str] = set()
        self.failed = False
        self.deselected = False
        self.started: float | None = None
        self.xfailed: dict[str, str] = {}  # nodeid -> reason, for the tests that failed as expected


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
    if not _ours(report.nodeid):
        return
    if report.failed:
        _RUN.failed = True
    elif report.when == "call" and (report.passed or hasattr(report, "wasxfail")):
        _RUN.done.add(report.nodeid)
        if report.skipped:  # xfailed
            _RUN.xfailed[report.nodeid] = report.wasxfail.removeprefix("reason: ")


def pytest_sessionfinish(session, exitstatus):
    every_module = {p.name for p in HERE.glob("test_*.py")}
    whole = (_RUN.collected and _RUN.done == _RUN.collected and getattr(_RUN, "modules", set()) == every_module
             and not _RUN.deselected and not _RUN.failed and session.testsfailed == 0)
    if whole:
        seconds = time.monotonic() - (_RUN.started or time.monotonic())
        write_readme(figures_markdown(FIGURES, len(_RUN.collected), seconds, _RUN.xfailed))


def figures_markdown(f, tests: int, seconds: float, xfailed: dict[str, str] | None = None) -> str:
    gaps = len(f.faults_tried) - len(f.faults_survived)
    handled = list(f.bad_handled.values())
    before, service, warned = (handled.count(h) for h in ("before sending", "by the service", "warned"))
    bad_gaps = len(f.bad_tried) - len(handled)
    load = f.load
    rows = [
        ("Faults tried and survived: HTTP 500/502/503, 429 with and without Retry-After, refused connection, "
         "DNS failure, read timeout before the first byte and mid-stream, cut stream, stream without a finish "
         "reason, malformed SSE line, empty stream, moderation of the input and of the answer, Ctrl-C before the "
         "first byte, in the reasoning and in the answer; over `--api chat`, `responses` and `dashscope`, in "
         "`%%qwen`, the panel and the comparison, in-process and in a real kernel",
         f"**{len(f.faults_survived)} of {len(f.faults_tried)} survived**: what streamed stays shown, the result "
         f"says `incomplete`/`stopped` and why, one clear line, the next cell runs"
         + (f"; {gaps} known gap{'s' if gaps > 1 else ''} (below)" if gaps else "")),
        ("Bad inputs tried: sampling values out of range, negative or huge max tokens, unknown options, unknown "
         "model, empty prompts, unresolved `{name}`, raising expressions, a 50 MB variable, bytes and non-UTF-8 "
         "text, missing and non-image files, malformed JSON schemas, odd conversation names",
         f"**{len(handled)} of {len(f.bad_tried)} handled in one line**: {before} refused before anything was sent, "
         f"{service} refused by the service, {warned} sent with a one-line warning"
         + (f"; {bad_gaps} known gap{'s' if bad_gaps > 1 else ''} (below)" if bad_gaps else "")),
        ("Secrets: a known fake key, scanned for in every iopub message, log record (DEBUG), repr, exception "
         "message and a saved .ipynb",
         f"{f.key_chars / 1e6:.1f} MB scanned after each of {f.key_scans} tests, {f.log_records:,} log records and "
         f"a {f.notebook_chars / 1e3:.0f} kB .ipynb among them: **{f.key_found} fragments of the key found**"),
        ("Untrusted output: `<script>`, event handlers, `javascript:` links, iframes and more, in answers and "
         "reasoning, streamed into cells, columns and the panel",
         f"{len(f.payloads)} hostile payloads, {f.html_audited:,} rendered HTML bundles and widget values audited: "
         f"**{f.unsafe} executable or injected elements**"),
        ("Load: 16 concurrent comparison columns per protocol and 200 sequential cells in a real kernel, random "
         "faults in 10% of requests",
         f"{load['complete'] + load['clear_errors']} runs ({load['columns']} columns, {load['cells']} cells) making "
         f"{load['requests']} requests, {load['injected']} of them with an injected fault: {load['complete']} "
         f"complete answers, {load['clear_errors']} clear one-line errors, **{load['hangs']} hangs**"),
        ("Leaks: threads, tasks on the package's loop, sockets (beyond the SDKs' keep-alive pools), checked "
         "after every test", f"{f.leak_checks} checks: **{f.leaks} leaks found**"),
    ]
    lines = ["| what was tried | outcome |", "|---|---|"] + [f"| {what} | {outcome} |" for what, outcome in rows]
    lines.append(f"\n{tests} tests, {seconds:.0f} s on this machine ({os.cpu_count()} cores).")
    if xfailed:
        lines.append("\nKnown gaps, each an `xfail` test that names the bug: "
                     + "; ".join(f"`{nodeid.split('::')[-1]}`: {reason}" for nodeid, reason in sorted(xfailed.items())))
    return "\n".join(lines)


SECTION = """## Reliability

`tests/reliability/` runs with the other tests (`python -m pytest`). It drives `%%qwen`, the panel and
`%%qwen_compare`, in-process and in real kernels, against the loopback server's fault switches over every
protocol, and checks what a person would see: the partial answer, one clear line, a usable kernel, no
leaked key, thread, task or socket. The suite writes these figures itself, after a run in which all of
it passed.

{begin}
{body}
{end}
"""


def write_readme(body: str, readme: Path = README) -> None:
    """Put ``body`` between the markers; create the section (after the benchmarks, before the next section)."""
    text = readme.read_text(encoding="utf-8")
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        new = f"{head}{BEGIN}\n{body}\n{END}{rest.split(END, 1)[1]}"
    else:
        section = SECTION.format(begin=BEGIN, body=body, end=END)
        bench = re.search(r"^## Benchmarks\b.*?(?=^## |\Z)", text, flags=re.S | re.M)
        at = bench.end() if bench else len(text)
        new = text[:at].rstrip("\n") + "\n\n" + section + ("\n" + text[at:] if text[at:] else "")
    if new != text:
        readme.write_text(new, encoding="utf-8")
