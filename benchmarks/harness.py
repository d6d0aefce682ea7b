"""What every measurement shares: real kernels, the loopback server, statistics and the README table.

A :class:`Kernel` is a real ipykernel started with jupyter_client, its
environment pointing every DashScope endpoint at the loopback server.  Cells
print one ``BENCH {json}`` line with what they measured inside the kernel;
:meth:`Kernel.execute` also keeps every iopub message with its arrival time
on this side, which is what a front end would receive.
"""

from __future__ import annotations

import atexit
import datetime
import json
import os
import platform
import queue
import re
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from loopback import DEFAULT_KEY, LoopbackServer, Script  # noqa: E402

__all__ = ["Kernel", "Execution", "Row", "LoopbackServer", "Script", "DEFAULT_KEY", "ROOT", "kernel_env",
           "median", "Meter", "settle", "text_of", "machine_line", "write_results", "BenchError", "BenchTimeout"]

MARK = "BENCH "
DISPLAY_TYPES = ("display_data", "update_display_data")


class BenchError(RuntimeError):
    """A benchmark cell failed in the kernel (its error is in the message)."""


class BenchTimeout(BenchError):
    """A cell ran past its timeout; the kernel was interrupted."""


@dataclass
class Row:
    """One line of the results table; ``passed`` is None for a value reported without a target."""

    measurement: str
    value: str
    target: str
    passed: bool | None
    notes: list[str] = field(default_factory=list)
    noisy: bool = False
    """Too few undisturbed runs: the value is shown, but it decides nothing..."""
    slower_only: bool = False
    """...unless other work can only have made it worse (an absolute time) and it passed anyway."""

    @property
    def verdict(self) -> str:
        if self.noisy and self.passed and self.slower_only:
            return "pass (machine busy)"
        if self.noisy and self.passed is not None:
            return "inconclusive (machine busy)"
        return {True: "pass", False: "**FAIL**", None: "info"}[self.passed]


@dataclass
class Execution:
    """One executed cell: its reply, its iopub messages with arrival times, and when it was sent."""

    reply: dict
    messages: list[tuple[float, dict]]
    sent: float
    others: float = 0.0
    """Cores' worth of CPU that processes other than this one and the kernel used while the cell ran."""

    def displays(self) -> list[tuple[float, dict]]:
        return [(t, m) for t, m in self.messages if m["msg_type"] in DISPLAY_TYPES]

    def stdout(self) -> str:
        return "".join(m["content"]["text"] for _, m in self.messages
                       if m["msg_type"] == "stream" and m["content"]["name"] == "stdout")

    def first_stream(self, marker: str) -> float | None:
        """Arrival time of the first stdout message containing ``marker``."""
        return next((t for t, m in self.messages if m["msg_type"] == "stream" and marker in m["content"]["text"]),
                    None)

    def value(self) -> dict[str, Any]:
        """The cell's ``BENCH {json}`` line."""
        lines = [line[len(MARK):] for line in self.stdout().splitlines() if line.startswith(MARK)]
        if not lines:
            raise BenchError(f"the cell printed no {MARK.strip()} line; stdout: {self.stdout()[-500:]!r}")
        return json.loads(lines[-1])


def kernel_env(server: LoopbackServer) -> dict[str, str]:
    """This process's environment, with every DashScope host replaced by the loopback server.

    The kernels' run log goes to a temporary folder, removed when the benchmark ends: a benchmark never
    writes the user's own log (and every measurement runs with the log on, as a user's cells do).
    """
    folder = tempfile.mkdtemp(prefix="qwen-bench-log-")
    atexit.register(shutil.rmtree, folder, True)
    env = dict(os.environ)
    env.update(QWEN_MAGICS_DASHSCOPE_URL=server.url, DASHSCOPE_API_KEY=DEFAULT_KEY, PYTHONUNBUFFERED="1",
               QWEN_MAGICS_LOG=os.path.join(folder, "log.db"))
    return env


class Kernel:
    """A fresh kernel (python3 unless named, its kernelspec looked up in ``kernel_dirs`` when given).

    Use it as a context manager, so it is always shut down.
    """

    def __init__(self, env: dict[str, str], kernel_name: str = "python3", ready_timeout: float = 60,
                 kernel_dirs: list[str] | None = None) -> None:
        self._cwd = tempfile.TemporaryDirectory(prefix="qwen-bench-")
        specs = {"kernel_spec_manager": KernelSpecManager(kernel_dirs=kernel_dirs)} if kernel_dirs else {}
        self.km = KernelManager(kernel_name=kernel_name, **specs)
        self.kc = None
        try:
            self.km.start_kernel(env=env, cwd=self._cwd.name)
            self.kc = self.km.client()
            self.kc.start_channels()
            self.kc.wait_for_ready(timeout=ready_timeout)
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> "Kernel":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        try:
            if self.kc is not None:
                self.kc.stop_channels()
        finally:
            try:
                if self.km.has_kernel:
                    self.km.shutdown_kernel(now=True)
            finally:
                self._cwd.cleanup()

    def execute(self, code: str, timeout: float = 180) -> Execution:
        """Run ``code``; raise :class:`BenchError` if it fails."""
        meter = Meter([os.getpid(), self.km.provisioner.pid])
        sent = time.monotonic()
        msg_id = self.kc.execute(code)
        messages, deadline, interrupted = [], sent + timeout, False
        while True:
            left = deadline - time.monotonic()
            if left <= 0 and interrupted:
                raise BenchTimeout(f"the kernel did not stop {timeout} s after an interrupt: {code[:80]!r}")
            if left <= 0:  # stop the cell, then wait for it to end so the kernel stays usable
                self.km.interrupt_kernel()
                deadline, interrupted = time.monotonic() + 30, True
                continue
            try:
                msg = self.kc.get_iopub_msg(timeout=left)
            except queue.Empty:
                continue
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            messages.append((time.monotonic(), msg))
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                break
        while True:  # skip stray replies (e.g. extra kernel_info replies from start-up)
            reply = self.kc.get_shell_msg(timeout=30)
            if reply["parent_header"].get("msg_id") == msg_id:
                break
        if interrupted:
            raise BenchTimeout(f"interrupted after {timeout} s: {code[:80]!r}")
        if reply["content"]["status"] != "ok":
            content = reply["content"]
            raise BenchError(f"{content.get('ename')}: {content.get('evalue')} in cell {code[:80]!r}")
        return Execution(reply, messages, sent, meter.others())

    def value(self, code: str, timeout: float = 180) -> dict[str, Any]:
        return self.execute(code, timeout).value()

    def settle(self, quiet: float, most: float = 5.0) -> float:
        return settle([os.getpid(), self.km.provisioner.pid], quiet, most)


class Meter:
    """How busy the rest of the machine is: CPU used by every process except ``pids``, in cores, since creation.

    The machine is shared; a run during which other work took CPU is disturbed
    (llama.cpp's two spin-synchronised threads slow down several-fold), so the
    measurements prefer undisturbed runs and say how many they had.
    """

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self._start = time.monotonic(), self._busy(), sum(map(self._jiffies, pids))

    @staticmethod
    def _busy() -> int:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
        return sum(fields) - fields[3] - fields[4]  # all but idle and iowait

    @staticmethod
    def _jiffies(pid: int) -> int:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0
        return int(fields[11]) + int(fields[12])  # utime + stime, all threads

    def others(self) -> float:
        t0, busy0, ours0 = self._start
        wall = time.monotonic() - t0
        spent = (self._busy() - busy0) - (sum(map(self._jiffies, self.pids)) - ours0)
        return max(0.0, spent / os.sysconf("SC_CLK_TCK") / wall) if wall > 0 else 0.0


def settle(pids: list[int], quiet: float, most: float = 5.0) -> float:
    """Wait (at most ``most`` seconds) for half a second in which processes other than ``pids`` use < ``quiet`` cores."""
    deadline = time.monotonic() + most
    while True:
        meter = Meter(pids)
        time.sleep(0.5)
        others = meter.others()
        if others < quiet or time.monotonic() > deadline:
            return others


def median(values: list[float]) -> float:
    return statistics.median(values)


def text_of(chars: int, words_per_paragraph: int = 50) -> str:
    """A markdown answer of exactly ``chars`` characters: numbered words in paragraphs."""
    out, i = [], 0
    while sum(map(len, out)) < chars:
        out.append(f"w{i:05d}" + ("\n\n" if i % words_per_paragraph == words_per_paragraph - 1 else " "))
        i += 1
    return "".join(out)[:chars]


def machine_line(mode: str) -> str:
    cpu = "unknown CPU"
    try:
        found = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
        cpu = found.group(1).strip() if found else cpu
    except OSError:
        pass
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    now = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    return (f"Machine: {cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, {now}; "
            f"load average at start {load} (the machine is shared); `python benchmarks/run.py{mode}`.")


def results_markdown(rows: list[Row], machine: str, seconds: float) -> str:
    lines = [machine, "", "| measurement | ratio / value | target | result |", "|---|---|---|---|"]
    lines += [f"| {r.measurement} | {r.value} | {r.target} | {r.verdict} |" for r in rows]
    lines += ["", "Context (absolute numbers, for reading the ratios):", ""]
    lines += [f"- {r.measurement.split(':')[0].split(' (')[0]}: {note}" for r in rows for note in r.notes]
    lines += ["", f"Whole run: {seconds:.0f} s."]
    return "\n".join(lines)


def write_results(readme: Path, body: str, mode: str = "") -> None:
    """Replace the block of the run made with ``mode`` (``""``: the full run; ``" --only 12"``...) with ``body``.

    Each command has a block of its own, between ``<!-- results{mode} -->`` and
    ``<!-- /results{mode} -->`` (appended if absent), so a table always holds the rows of one run of the
    command its machine line names, and a partial run never replaces the full run's table.
    """
    text = readme.read_text() if readme.exists() else "# Benchmarks\n"
    block = f"<!-- results{mode} -->\n{body}\n<!-- /results{mode} -->"
    pattern = re.compile(re.escape(f"<!-- results{mode} -->") + ".*?" + re.escape(f"<!-- /results{mode} -->"), re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    else:  # after the last table there is, else at the end
        ends = list(re.finditer(r"<!-- /results[^>]*-->", text))
        at = ends[-1].end() if ends else len(text.rstrip("\n"))
        text = text[:at] + "\n\n" + block + text[at:] if ends else text[:at] + "\n\n" + block + "\n"
    readme.write_text(text)
