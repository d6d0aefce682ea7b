"""What the reliability suite shares: the fake key and the scan for it, clear-line checks, a watchdog
that counts hangs, leak probes, a real kernel to drive, an audit of rendered HTML, and the figures the
suite records (``publish.py`` puts them into the README).
"""

from __future__ import annotations

import inspect
import json
import os
import queue
import re
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any, Callable, Iterable, Iterator

from IPython.core.error import UsageError

APIS = ["chat", "responses", "dashscope"]
#: Response headers of a retryable error that ask for a retry in 10 ms: the openai SDK reads the first,
#: the native backend the second.  Tests of the backoff itself send neither.
FAST_RETRY = {"retry-after-ms": "10", "Retry-After": "0.01"}

# ------------------------------------------------------------------------------------------- the key

#: The fake key every reliability test runs with (the loopback server accepts it).  Random-looking, so
#: any 6 of its characters in a row found anywhere are the key leaking, not a coincidence.
SECRET_KEY = "sk-R7vQz2Lm9XwT4pKc8NbJ"
#: A second fake key that the server rejects (401): it must not show either.
WRONG_KEY = "sk-W4rgN8eXq3Lz6Tb1Ym5H"
SHOWN_PREFIX = 5  # "sk-R7": the most of a key a person may ever see (masked forms like "sk-***" are fine)
_FRAGMENTS = re.compile("|".join(re.escape(key[i:i + SHOWN_PREFIX + 1]) for key in (SECRET_KEY, WRONG_KEY)
                                 for i in range(len(key) - SHOWN_PREFIX)))


def key_fragments_in(texts: Iterable[str], where: str) -> list[str]:
    """Every place where a fragment of either fake key (beyond the short prefix) appears; counted in the figures."""
    found, chars = [], 0
    for text in texts:
        chars += len(text)
        for match in _FRAGMENTS.finditer(text):
            found.append(f"{where}: {match.group()!r} in …{text[max(0, match.start() - 40):match.end() + 40]!r}…")
    FIGURES.key_scans += 1
    FIGURES.key_chars += chars
    FIGURES.key_found += len(found)
    return found


def exception_texts(err: BaseException) -> list[str]:
    """What a person could ever read of an exception: str, repr and formatted traceback of it and its causes."""
    import traceback

    out, seen = ["".join(traceback.format_exception(err))], set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        out += [str(err), repr(err)]
        err = err.__cause__ or (None if err.__suppress_context__ else err.__context__)  # as Python shows it
    return out


# ------------------------------------------------------------------------------------------ hangs

def current_test() -> str:
    """The node id of the test running now (pytest sets it in the environment)."""
    return os.environ.get("PYTEST_CURRENT_TEST", "outside a test").rsplit(" (", 1)[0]


class Watch:
    """One run under the watchdog: ``hung`` turns true when its time ran out before it ended."""

    def __init__(self, what: str, seconds: float) -> None:
        self.what, self.seconds = what, seconds
        self.hung = False
        self.ended = threading.Event()
        self.lock = threading.Lock()

    def fail_if_hung(self) -> None:
        assert not self.hung, f"hang: {self.what!r} did not end within {self.seconds:g} s"


@contextmanager
def watchdog(what: str, seconds: float, on_hang: Callable[[], None]) -> Iterator[Watch]:
    """Run the block under a watchdog thread: if it has not ended after ``seconds``, the hang is counted in
    the figures under the test's name and ``what``, and ``on_hang()`` (Ctrl-C, a kernel interrupt) ends it."""
    watch = Watch(what, seconds)
    FIGURES.watched += 1

    def guard() -> None:
        if watch.ended.wait(seconds):
            return
        with watch.lock:  # the block may end meanwhile: then it did not hang
            if watch.ended.is_set():
                return
            watch.hung = True
            FIGURES.hangs[f"{current_test()} · {what}"] = f"no end within {seconds:g} s"
            on_hang()

    thread = threading.Thread(target=guard, name="reliability-watchdog", daemon=True)
    thread.start()
    try:
        yield watch
    finally:
        with watch.lock:
            watch.ended.set()
        thread.join()


# ------------------------------------------------------------------------------------ running magics

#: Exception texts of the cells run by :func:`ask` in the current test (scanned for the key afterwards).
SEEN: list[str] = []


@dataclass
class Asked:
    """One magic run in-process: what it returned, the one-line error it raised (if any), how long it took."""

    value: Any
    error: str | None
    seconds: float


def ask(ip, line: str, cell: str | None = None, magic: str = "qwen", hang_after: float = 60.0) -> Asked:
    """Run a magic as a cell would; a ``UsageError`` (the one-line message a person sees) is returned, not raised.

    Any other exception propagates: a traceback where one line was due fails the test.  A run still going
    after ``hang_after`` seconds is a hang: counted and named in the figures, stopped with Ctrl-C, and the
    test fails.
    """
    started, watch = time.monotonic(), None
    try:
        with watchdog(f"%{'%' if cell is not None else ''}{magic} {line}"[:80], hang_after, _press_ctrl_c) as watch:
            try:
                value = ip.run_cell_magic(magic, line, cell) if cell is not None else ip.run_line_magic(magic, line)
                error = None
            except UsageError as err:
                value, error = None, str(err)
                SEEN.extend(exception_texts(err))
    except KeyboardInterrupt:  # the watchdog's Ctrl-C, when it lands after the magic ended
        if watch is None or not watch.hung:
            raise
    watch.fail_if_hung()
    return Asked(value, error, time.monotonic() - started)


def _press_ctrl_c() -> None:
    os.kill(os.getpid(), signal.SIGINT)


def run_panel(panel, hang_after: float = 30.0) -> Any:
    """Run every column of the panel as its Run all button does and return the comparison, under the watchdog: a run still going
    after ``hang_after`` seconds is a hang, counted and named in the figures, stopped with the panel's Stop
    button, and the test fails."""
    import concurrent.futures

    FIGURES.panel_runs += 1
    with watchdog(f"%qwen_panel run: {panel.prompt.value}"[:80], hang_after, panel.stop_button.click) as watch:
        try:
            result = panel.run().result(timeout=hang_after + 10)
        except concurrent.futures.CancelledError:  # the watchdog's Stop
            result = None
    watch.fail_if_hung()
    return result


#: How every message a person may see starts; anything else (an "Unexpected error") is not a clear line.
CLEAR_STARTS = (
    "Model Studio had a server error (", "Rate limited (", "The account has no quota left", "Could not reach ",
    "No answer from ", "The stream ended ", "The connection dropped in the middle of the answer",
    "The service sent a malformed stream event", "Content moderation refused the ", "Stopped by user",
    "The API key was rejected", "Model '", "Access to '", "The request was rejected (",
)


def assert_clear_line(message: str | None, *fragments: str) -> None:
    """``message`` is one line that names a known cause (and holds every fragment), never a traceback."""
    assert message, "expected a one-line message, got none"
    assert "\n" not in message and "\r" not in message, f"not one line: {message!r}"
    assert "Traceback" not in message and not message.startswith(("Unexpected error", "The service reported")), message
    assert message.startswith(CLEAR_STARTS), f"not a known, clear cause: {message!r}"
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


def visible(ip) -> list[str]:
    """The text/plain of every display in the cell as it finally stands (updates replace what they update)."""
    shown: dict[str, str] = {}
    for n, out in enumerate(ip.display_pub.outputs):
        key = (out.get("transient") or {}).get("display_id") or f"#{n}"
        shown[key] = str(out["data"].get("text/plain", ""))
    return list(shown.values())


def generation_requests(server) -> list:
    """The requests that asked for an answer (the panel also lists the endpoint's models, with a GET)."""
    return [r for r in server.requests if r.method == "POST"]


@dataclass
class Press:
    """When :func:`ctrl_c_when` pressed Ctrl-C (``time.monotonic()``), or None if it did not."""

    at: float | None = None


@contextmanager
def ctrl_c_when(ready: Callable[[], bool], delay: float = 0.0, timeout: float = 30.0) -> Iterator[Press]:
    """Press Ctrl-C (SIGINT to this process) ``delay`` seconds after ``ready()`` is true, while the block runs."""
    done = threading.Event()
    press = Press()

    def watch() -> None:
        deadline = time.monotonic() + timeout
        while not done.is_set() and time.monotonic() < deadline:
            if ready():
                if not done.wait(delay):
                    press.at = time.monotonic()
                    os.kill(os.getpid(), signal.SIGINT)
                return
            time.sleep(0.005)

    watcher = threading.Thread(target=watch, name="reliability-ctrl-c", daemon=True)
    watcher.start()
    try:
        yield press
    finally:
        done.set()
        watcher.join(5)


def cancel_package_tasks(timeout: float = 5.0) -> list[str]:
    """Cancel what is still running on qwen_magics' loop (cleaning up after a known bug); what was there."""
    import asyncio

    from qwen_magics import runner

    async def cancel_all() -> list[str]:
        me = asyncio.current_task()
        left = [t for t in asyncio.all_tasks() if t is not me]
        for task in left:
            task.cancel()
        return [repr(t) for t in left]

    found: list[str] = []
    deadline = time.monotonic() + timeout
    while (left := asyncio.run_coroutine_threadsafe(cancel_all(), runner.background_loop()).result(5)):
        found += left
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    return found


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0, what: str = "the condition") -> Any:
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)
    return value


def widget_html(widget) -> list[str]:
    """The HTML of every HTML widget inside ``widget`` (a column, the panel, a whole comparison)."""
    out = [widget.value] if hasattr(widget, "value") and type(widget).__name__ == "HTML" else []
    for child in getattr(widget, "children", ()):
        out += widget_html(child)
    return out


# ------------------------------------------------------------------------------------------- leaks

def _reliability_snapshot(port: int) -> dict:
    """Threads, tasks on qwen_magics' loop and sockets of this process (self-contained: kernels get its source)."""
    import asyncio
    import os
    import threading

    from qwen_magics import runner

    async def others() -> list[str]:
        me = asyncio.current_task()
        return [repr(t) for t in asyncio.all_tasks() if t is not me]

    tasks = asyncio.run_coroutine_threadsafe(others(), runner.background_loop()).result(5)
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    loopback = server_side = 0
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        try:
            lines = open(table).read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if cols[9] not in inodes:
                continue
            local, remote = int(cols[1].rsplit(":", 1)[1], 16), int(cols[2].rsplit(":", 1)[1], 16)
            if remote == port:
                loopback += 1
            elif local == port:
                server_side += 1  # the loopback server's own end (tests run it in-process)
    return {"threads": [[t.ident, t.name] for t in threading.enumerate()], "tasks": tasks,
            "loopback_sockets": loopback, "other_sockets": len(inodes) - loopback - server_side}


snapshot = _reliability_snapshot
SNAPSHOT_SOURCE = inspect.getsource(_reliability_snapshot)

#: Threads that pools keep (bounded by the pool), and this suite's own.
_POOLED = ("qwen-magics-loop", "asyncio_", "AnyIO worker thread", "ThreadPoolExecutor-")
_IGNORED = ("loopback-", "reliability-")
POOLED_THREAD_BOUND = 40


def leak_problems(before: dict, after: dict, connections: int = 2) -> list[str]:
    """What ``after`` holds that ``before`` did not: threads, tasks, and sockets beyond the keep-alive pools.

    ``connections``: how many more pooled keep-alive connections to the loopback server the run may leave
    (one per SDK client it used for the first time; the concurrency of a comparison).
    """
    problems = []
    known = {tuple(t) for t in before["threads"]}
    threads = [tuple(t) for t in after["threads"] if not t[1].startswith(_IGNORED)]
    new = sorted(name for ident, name in threads if (ident, name) not in known and not name.startswith(_POOLED))
    if new:
        problems.append(f"threads left running: {new}")
    pooled = [name for _, name in threads if name.startswith(_POOLED)]
    if len(pooled) > POOLED_THREAD_BOUND:
        problems.append(f"{len(pooled)} pool threads: {sorted(pooled)}")
    if after["tasks"]:
        problems.append(f"tasks left on the package loop: {after['tasks']}")
    if after["loopback_sockets"] - before["loopback_sockets"] > connections:
        problems.append(f"connections to the server: {before['loopback_sockets']} before, "
                        f"{after['loopback_sockets']} after (at most {connections} more may be kept alive)")
    if after["other_sockets"] > before["other_sockets"] + 2:
        problems.append(f"other sockets: {before['other_sockets']} before, {after['other_sockets']} after")
    return problems


def settled_leaks(measure: Callable[[], dict], before: dict, connections: int = 2, settle: float = 3.0) -> list[str]:
    """:func:`leak_problems`, once things had up to ``settle`` seconds to wind down (cancellations, closes)."""
    deadline = time.monotonic() + settle
    while True:
        problems = leak_problems(before, measure(), connections)
        if not problems or time.monotonic() > deadline:
            FIGURES.leak_checks += 1
            FIGURES.leaks += len(problems)
            return problems
        time.sleep(0.05)


# ------------------------------------------------------------------------------------------- kernels

@dataclass
class Cell:
    """One cell executed in a real kernel: its execute_reply content and every iopub message it caused."""

    reply: dict
    messages: list[dict]

    @property
    def status(self) -> str:
        return self.reply["status"]

    @property
    def evalue(self) -> str:
        return self.reply.get("evalue", "")

    def of_type(self, *types: str) -> list[dict]:
        return [m for m in self.messages if m["msg_type"] in types]

    @property
    def bundles(self) -> list[dict]:
        """Every rich bundle sent: displays, their updates and results."""
        return [m["content"]["data"] for m in self.of_type("display_data", "update_display_data", "execute_result")]

    @property
    def visible(self) -> list[str]:
        """text/plain of each display as it finally stands."""
        shown: dict[str, str] = {}
        for n, m in enumerate(self.of_type("display_data", "update_display_data", "execute_result")):
            key = (m["content"].get("transient") or {}).get("display_id") or f"#{n}"
            shown[key] = m["content"]["data"].get("text/plain", "")
        return list(shown.values())

    def stream(self, name: str) -> str:
        return "".join(m["content"]["text"] for m in self.of_type("stream") if m["content"]["name"] == name)

    @property
    def widget_html(self) -> list[str]:
        """The HTML values that widget state messages carried (HTML widgets of columns and panels)."""
        out = []
        for m in self.of_type("comm_open", "comm_msg"):
            state = (m["content"].get("data") or {}).get("state") or {}
            if isinstance(state.get("value"), str) and (state.get("_model_name") in (None, "HTMLModel")):
                out.append(state["value"])
        return out

    def one_error_line(self) -> str:
        """The cell failed with exactly one line, shown as IPython shows a UsageError; that line."""
        assert self.status == "error" and self.reply["ename"] == "UsageError", self.reply
        assert not self.of_type("error"), "a traceback was sent"
        lines = [line for line in self.stream("stderr").splitlines() if line.strip()]
        assert lines == [f"UsageError: {self.evalue}"], lines
        return self.evalue


class Kernel:
    """A real IPython kernel (ipykernel) with qwen_magics loaded, driven over ZMQ as a front end would."""

    def __init__(self, km, kc, port: int) -> None:
        self.km, self.kc, self.port = km, kc, port
        self.sent: list[dict] = []  # every iopub message and reply of the kernel, for the key scan

    def run(self, code: str, timeout: float = 60.0, watch: Callable[[list[dict]], None] | None = None) -> Cell:
        """Execute ``code``; ``watch(messages so far)`` is called every 20 ms and on every message.

        A cell still running after ``timeout`` seconds is a hang: the watchdog counts and names it and
        interrupts the kernel (so the next test finds it usable), and the test fails.
        """
        msg_id = self.kc.execute(code)
        messages: list[dict] = []
        with watchdog(code.splitlines()[0][:80] if code.strip() else "(empty cell)", timeout,
                      self.km.interrupt_kernel) as dog:
            reply = self._until_idle(msg_id, messages, time.monotonic() + timeout + 30, watch)
        dog.fail_if_hung()
        return Cell(reply, messages)

    def _until_idle(self, msg_id: str, messages: list[dict], deadline: float,
                    watch: Callable[[list[dict]], None] | None) -> dict:
        """Collect the cell's iopub messages until the kernel is idle again; its execute_reply."""
        while True:
            left = deadline - time.monotonic()
            assert left > 0, "the kernel did not answer even to an interrupt"
            try:
                msg = self.kc.get_iopub_msg(timeout=min(0.02, left) if watch else left)
            except queue.Empty:
                if watch:
                    watch(messages)
                continue
            self.sent.append(msg)
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            messages.append(msg)
            if watch:
                watch(messages)
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                break
        while True:
            reply = self.kc.get_shell_msg(timeout=max(1.0, deadline - time.monotonic()))
            self.sent.append(reply)
            if reply["parent_header"].get("msg_id") == msg_id:
                return reply["content"]

    def ok(self, code: str, timeout: float = 60.0) -> Cell:
        cell = self.run(code, timeout)
        assert cell.status == "ok", cell.reply
        return cell

    def printed(self, code: str) -> str:
        return self.ok(code).stream("stdout")

    def snapshot(self) -> dict:
        return json.loads(self.printed(f"print(__import__('json').dumps(_reliability_snapshot({self.port})))"))


# --------------------------------------------------------------------------------------- untrusted HTML

# Inline SVG is allowed (the package draws its charts as static SVG from escaped text); what lets SVG run or
# load something is not: scripts and handlers (checked for every tag), foreignObject, animation that can set
# an attribute (an href) and <use> of another document.
UNSAFE_TAGS = {"script", "iframe", "frame", "frameset", "object", "embed", "applet", "base", "meta", "link", "style",
               "form", "input", "button", "textarea", "select", "math", "template", "audio", "video",
               "foreignobject", "animate", "set", "use"}
URL_ATTRS = {"href", "src", "action", "formaction", "xlink:href", "data", "poster", "background", "srcset", "ping"}
_SAFE_DATA = re.compile(r"^data:image/(png|gif|jpeg|webp);", re.I)


class _Audit(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.problems: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in UNSAFE_TAGS:
            self.problems.append(f"<{tag}> element")
        for name, value in attrs:
            if name.startswith("on"):
                self.problems.append(f"<{tag} {name}=…> event handler")
            elif name == "srcdoc":
                self.problems.append(f"<{tag} srcdoc=…>")
            elif name in URL_ATTRS and value:
                url = re.sub(r"[\x00-\x20]", "", value).lower()  # browsers skip these inside a scheme
                scripted = url.startswith(("javascript:", "vbscript:"))
                if scripted or (url.startswith("data:") and not _SAFE_DATA.match(url)):
                    self.problems.append(f"<{tag} {name}={value[:40]!r}>")

    handle_startendtag = handle_starttag

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def audit_html(html: str) -> tuple[list[str], str]:
    """(what in ``html`` could run or inject, the text a reader sees)."""
    audit = _Audit()
    audit.feed(html)
    audit.close()
    return audit.problems, "".join(audit.text)


# ------------------------------------------------------------------------------------------ figures

@dataclass
class Figures:
    """What the suite tried and how it went; ``conftest.py`` writes them to a file after a full run."""

    faults_tried: set[str] = field(default_factory=set)
    faults_survived: set[str] = field(default_factory=set)
    bad_tried: set[str] = field(default_factory=set)
    bad_handled: dict[str, str] = field(default_factory=dict)  # case -> "before sending" | "by the service" | "warned"
    leak_checks: int = 0
    leaks: int = 0
    key_scans: int = 0
    key_chars: int = 0
    key_found: int = 0
    log_records: int = 0
    notebook_chars: int = 0
    payloads: set[str] = field(default_factory=set)
    html_audited: int = 0
    unsafe: int = 0
    load: dict[str, int] = field(default_factory=lambda: {"requests": 0, "injected": 0, "complete": 0,
                                                          "clear_errors": 0, "columns": 0, "cells": 0,
                                                          "map_rows": 0})
    watched: int = 0  # runs (magics in-process, panel runs, cells in kernels) done under the watchdog
    panel_runs: int = 0  # of them, panel runs
    hangs: dict[str, str] = field(default_factory=dict)  # "test · what ran" -> how it hung


FIGURES = Figures()


@contextmanager
def fault_case(surface: str, api: str, fault: str) -> Iterator[None]:
    """A fault tried on a surface over a protocol; it counts as survived when the block completes."""
    case = f"{surface} · {api} · {fault}"
    FIGURES.faults_tried.add(case)
    yield
    FIGURES.faults_survived.add(case)


@dataclass
class BadInput:
    case: str
    how: str = "before sending"


@contextmanager
def bad_input_case(surface: str, case: str) -> Iterator[BadInput]:
    """A bad input tried; it counts as handled clearly when the block completes (``how`` says where)."""
    record = BadInput(f"{surface} · {case}")
    FIGURES.bad_tried.add(record.case)
    yield record
    FIGURES.bad_handled[record.case] = record.how


def audited(htmls: Iterable[str], payload_names: Iterable[str] = ()) -> str:
    """Audit every HTML text (counted in the figures); return the text they show, joined."""
    problems, shown = [], []
    for html in htmls:
        found, text = audit_html(html)
        problems += found
        shown.append(text)
        FIGURES.html_audited += 1
    FIGURES.unsafe += len(problems)
    FIGURES.payloads.update(payload_names)
    assert not problems, problems
    return "\n".join(shown)
