"""Count the instructions of measurement 1's stream in a real kernel under valgrind: no timing noise.

    python benchmarks/instructions.py                        # A, B and D below, 4,000 chunks (about 3 minutes)
    python benchmarks/instructions.py --chunks 500 --variants A,D --repeat 2

The kernel runs under callgrind (``valgrind --tool=callgrind``, Debian package ``valgrind``), and each
counted cell dumps the counters of all kernel threads just before and just after its work
(``callgrind_control -d``).  The same run repeated gives the same count to within about 0.2%, where wall
times on a shared virtual machine scatter by ±20% per run.  The variants:

    A  the bare AsyncOpenAI loop on the kernel's own loop (the baseline; measurement 1's bare cell)
    B  the same loop on the package's background loop thread, the cell waiting for it
    D  `%%qwen` as in a notebook (measurement 1's magic cell)

B − A is what running on another thread costs, D − B the package's own work and the display.  A count
cannot show time spent waiting (thread hand-offs, the GIL changing hands) nor how fast the instructions run.
Under valgrind the kernel runs about 50 times slower, so ``QwenMagics.update_interval`` is scaled up
(``--interval``) to keep the number of display updates close to a normal run's; the count is printed.
``run.py`` calls :func:`count` for measurement 1a.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from cells import QWEN, SDK, SDK_ON_LOOP, SDK_ON_LOOP_SETUP, SDK_SETUP, SETUP
from harness import DEFAULT_KEY, Kernel, LoopbackServer, Script, kernel_env, text_of

KERNEL = "qwen-bench-callgrind"
VARIANTS = {"A": ("bare SDK loop, kernel's loop", SDK), "B": ("bare SDK loop, package's loop", SDK_ON_LOOP),
            "D": ("%%qwen", QWEN)}
INTERVAL = 5.0  # seconds between display updates under valgrind: about as many as 0.1 s natively

MARKS = r'''
import subprocess as _b_subprocess
def _b_mark(label):
    """Dump callgrind's counters (all threads) under ``label`` and start counting afresh."""
    _b_subprocess.run(["callgrind_control", "-d", label, str(_b_os.getpid())], capture_output=True, check=True)
'''

COUNTED = """\
_b_mark("start")
{body}
_b_mark({label!r})
"""


@dataclass
class Count:
    """One counted cell: instructions of all kernel threads from its start to its end, and its display messages."""

    instructions: int
    displays: int


def missing() -> str | None:
    """Why instructions cannot be counted here, or None."""
    if shutil.which("valgrind") and shutil.which("callgrind_control"):
        return None
    return "valgrind is not installed (Debian/Ubuntu: apt-get install valgrind)"


def kernelspec(folder: Path, dumps: Path) -> None:
    """A kernelspec in ``folder`` that starts ipykernel under callgrind, dumping into ``dumps``."""
    spec = folder / KERNEL
    spec.mkdir(parents=True)
    argv = ["valgrind", "-q", "--tool=callgrind", f"--callgrind-out-file={dumps}/cg.%p",
            os.path.realpath(sys.executable), "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": KERNEL, "language": "python"}))


def totals(dumps: Path) -> dict[str, int]:
    """Instructions per dump label, from callgrind's dump files."""
    out = {}
    for path in dumps.glob("cg.*"):
        text = path.read_text(errors="replace")
        label = re.search(r"^desc: Trigger: dump (\S+)", text, re.M)
        total = re.search(r"^(?:summary|totals): (\d+)", text, re.M)
        if label and total:
            out[label.group(1)] = int(total.group(1))
    return out


def count(server: LoopbackServer, env: dict[str, str], variants: list[str], chunks: int, *, repeat: int = 1,
          interval: float = INTERVAL, log: Callable[[str], None] = print) -> dict[str, list[Count]]:
    """Each of ``variants`` (keys of :data:`VARIANTS`) on a ``chunks``-chunk unthrottled answer, ``repeat`` times.

    One kernel under callgrind runs them all, in turn, after one warm-up each (first use imports
    the SDK, opens connections, fills caches).
    """
    answer = Script(reasoning="", text=text_of(chunks * 5), chunk_chars=5)
    warm = Script(reasoning="", text=text_of(1000), chunk_chars=5)
    got: dict[str, list[int]] = {v: [] for v in variants}
    with tempfile.TemporaryDirectory(prefix="qwen-bench-vg-") as tmp:
        folder, dumps = Path(tmp) / "kernels", Path(tmp) / "dumps"
        dumps.mkdir()
        kernelspec(folder, dumps)
        started = time.monotonic()
        with Kernel(env, kernel_name=KERNEL, ready_timeout=600, kernel_dirs=[str(folder)]) as k:
            k.execute(SETUP + MARKS, timeout=900)
            k.execute(SDK_SETUP.format(base=server.url + "/compatible-mode/v1", key=DEFAULT_KEY) + SDK_ON_LOOP_SETUP
                      + f"\nget_ipython().run_line_magic('config', 'QwenMagics.update_interval={interval}')",
                      timeout=900)
            for v in variants:
                server.enqueue(warm)
                k.execute(VARIANTS[v][1], timeout=900)
            log(f"  kernel ready under callgrind in {time.monotonic() - started:.0f} s")
            for run in range(repeat):
                for v in variants:
                    server.enqueue(answer)
                    t0 = time.monotonic()
                    ex = k.execute(COUNTED.format(body=VARIANTS[v][1], label=f"{v}-{run}"), timeout=1800)
                    chars = ex.value()["chars"]
                    if chars != len(answer.text):
                        raise RuntimeError(f"variant {v} got {chars} of {len(answer.text)} characters")
                    got[v].append(len(ex.displays()))
                    log(f"  {v} run {run + 1}: {time.monotonic() - t0:.0f} s under valgrind, "
                        f"{got[v][-1]} display messages")
        time.sleep(1)  # the last dump file is written as the kernel exits
        counted = totals(dumps)
    return {v: [Count(counted[f"{v}-{run}"], shown) for run, shown in enumerate(got[v])] for v in variants}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=4000, help="chunks of 5 characters in the answer (default 4000)")
    parser.add_argument("--variants", default="A,B,D", help="which of A, B, D (default all; the first is the base)")
    parser.add_argument("--repeat", type=int, default=1, help="counted runs per variant (default 1)")
    parser.add_argument("--interval", type=float, default=INTERVAL,
                        help=f"QwenMagics.update_interval under valgrind (default {INTERVAL:g} s)")
    args = parser.parse_args(argv)
    if why := missing():
        print(why, file=sys.stderr)
        return 2
    chosen = [v.strip().upper() for v in args.variants.split(",")]
    if unknown := [v for v in chosen if v not in VARIANTS]:
        print(f"unknown variant(s) {', '.join(unknown)}: choose from {', '.join(VARIANTS)}", file=sys.stderr)
        return 2
    with LoopbackServer() as server:
        got = count(server, kernel_env(server), chosen, args.chunks, repeat=args.repeat, interval=args.interval)
    base = min(c.instructions for c in got[chosen[0]])
    print(f"\n{args.chunks:,} chunks; instructions of all kernel threads, from the cell's start to its end")
    print(f"{'variant':34s} {'instructions':>14s} {'ratio to ' + chosen[0]:>11s}  display messages")
    for v in chosen:
        runs = [c.instructions for c in got[v]]
        spread = f"  (runs: {', '.join(f'{r / 1e6:,.1f} M' for r in runs)})" if len(runs) > 1 else ""
        print(f"{v} {VARIANTS[v][0]:32s} {min(runs) / 1e6:12,.1f} M {min(runs) / base:11.4f}  "
              f"{', '.join(str(c.displays) for c in got[v])}{spread}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
