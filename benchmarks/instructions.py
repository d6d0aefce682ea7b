"""Count the instructions of measurement 1's layers in a real kernel run under valgrind: no timing noise.

    python benchmarks/instructions.py                 # A, B, C, D below, 4,000 chunks (about 7 minutes)
    python benchmarks/instructions.py --chunks 1000 --variants A,D --repeat 2

Wall times on this host scatter by ±20% per run (see "A shared machine" in benchmarks/README.md), so a change
worth 1% cannot be seen in 40 pairs.  Instruction counts can: the kernel runs under callgrind
(``valgrind --tool=callgrind``, Debian package ``valgrind``), and each variant's cell dumps the counters of all
kernel threads just before and just after its work (``callgrind_control -d``).  The same run repeated gives the
same count to within about 0.2%.  The variants are those of ``decompose_stream.py``:

    A  the bare AsyncOpenAI loop on the kernel's own loop (the baseline)
    B  the same loop on the package's background loop thread
    C  `%%qwen` with a renderer that shows nothing
    D  `%%qwen` as in a notebook

What a count cannot show: time spent waiting (thread hand-offs, the GIL changing hands, a vCPU waking up)
and how fast the instructions run.  The difference between D's wall-time ratio (``decompose_stream.py``) and its
instruction ratio is that part.  Under valgrind the kernel runs about 50 times slower, so the refresh interval
is scaled up (``--interval``) to keep display updates close to a normal run's (6–7 here against 9–11 natively);
the count is printed, and each display message costs about 0.12% of A.
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
from pathlib import Path

from cells import SDK_SETUP, SETUP
from decompose_stream import HELPERS, variants
from harness import DEFAULT_KEY, Kernel, LoopbackServer, Script, kernel_env, text_of
from profile_stream import TOOLS

KERNEL = "qwen-bench-callgrind"

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


def kernelspec(folder: Path, dumps: Path) -> None:
    """A kernelspec that starts ipykernel under callgrind, dumping into ``dumps``."""
    spec = folder / "kernels" / KERNEL
    spec.mkdir(parents=True)
    argv = ["valgrind", "-q", "--tool=callgrind", f"--callgrind-out-file={dumps}/cg.%p",
            os.path.realpath(sys.executable), "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": KERNEL, "language": "python"}))


def counts(dumps: Path) -> dict[str, int]:
    """Instructions per dump label, from callgrind's dump files."""
    out = {}
    for path in dumps.glob("cg.*"):
        text = path.read_text(errors="replace")
        label = re.search(r"^desc: Trigger: dump (\S+)", text, re.M)
        total = re.search(r"^(?:summary|totals): (\d+)", text, re.M)
        if label and total:
            out[label.group(1)] = int(total.group(1))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=4000, help="chunks of 5 characters in the answer (default 4000)")
    parser.add_argument("--variants", default="A,B,C,D", help="which of A, B, C, D (default all)")
    parser.add_argument("--repeat", type=int, default=1, help="counted runs per variant (default 1)")
    parser.add_argument("--interval", type=float, default=5.0,
                        help="QwenMagics.update_interval under valgrind (default 5 s: about as many updates as 0.1 s natively)")
    args = parser.parse_args(argv)
    if not shutil.which("valgrind") or not shutil.which("callgrind_control"):
        print("valgrind is not installed: apt-get install valgrind", file=sys.stderr)
        return 2
    named = {name[0]: (name, body) for name, body in variants(local=False).items()}  # "A" -> (its name, its cell)
    chosen = [v.strip().upper() for v in args.variants.split(",")]
    if unknown := [v for v in chosen if v not in named]:
        print(f"unknown variant(s) {', '.join(unknown)}: choose from {', '.join(named)}", file=sys.stderr)
        return 2
    answer = Script(reasoning="", text=text_of(args.chunks * 5), chunk_chars=5)
    warm = Script(reasoning="", text=text_of(1000), chunk_chars=5)
    with tempfile.TemporaryDirectory(prefix="qwen-bench-vg-") as tmp:
        folder, dumps = Path(tmp) / "jupyter", Path(tmp) / "dumps"
        dumps.mkdir()
        kernelspec(folder, dumps)
        os.environ["JUPYTER_PATH"] = os.pathsep.join(filter(None, [str(folder), os.environ.get("JUPYTER_PATH")]))
        displays: dict[str, list[int]] = {v: [] for v in chosen}
        started = time.monotonic()
        with LoopbackServer() as server, Kernel(kernel_env(server), kernel_name=KERNEL, ready_timeout=600) as k:
            k.execute(SETUP + TOOLS + MARKS, timeout=900)
            k.execute(SDK_SETUP.format(base=server.url + "/compatible-mode/v1", key=DEFAULT_KEY), timeout=900)
            k.execute(HELPERS + f"\nget_ipython().run_line_magic('config', 'QwenMagics.update_interval={args.interval}')",
                      timeout=900)
            for v in chosen:  # warm-up: first use imports the SDK, opens connections, fills caches
                server.enqueue(warm)
                k.execute(named[v][1], timeout=900)
            print(f"kernel ready under callgrind in {time.monotonic() - started:.0f} s", flush=True)
            for run in range(args.repeat):
                for v in chosen:
                    server.enqueue(answer)
                    t0 = time.monotonic()
                    ex = k.execute(COUNTED.format(body=named[v][1], label=f"{v}-{run}"), timeout=1800)
                    displays[v].append(len(ex.displays()))
                    print(f"  {v} run {run + 1}: {time.monotonic() - t0:.0f} s under valgrind, "
                          f"{displays[v][-1]} display messages", flush=True)
        time.sleep(1)  # the last dump file is written as the kernel exits
        got = counts(dumps)
    base = min(got[f"{chosen[0]}-{run}"] for run in range(args.repeat))
    print(f"\n{args.chunks:,} chunks; instructions of all kernel threads, from the cell's start to its end")
    print(f"{'variant':34s} {'instructions':>14s} {'ratio to ' + chosen[0]:>11s}  display messages")
    for v in chosen:
        runs = [got[f"{v}-{run}"] for run in range(args.repeat)]
        spread = f"  (runs: {', '.join(f'{r / 1e6:,.1f} M' for r in runs)})" if len(runs) > 1 else ""
        print(f"{named[v][0]:34s} {min(runs) / 1e6:12,.1f} M {min(runs) / base:11.4f}  "
              f"{', '.join(map(str, displays[v]))}{spread}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
