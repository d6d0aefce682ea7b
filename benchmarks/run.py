"""Run the qwen-magics benchmarks in real kernels and rewrite the results table in benchmarks/README.md.

    python benchmarks/run.py            # the full run (about 25 minutes, more when busy; 1a and 7 need valgrind)
    python benchmarks/run.py --quick    # fewer pairs, fewer chunks under valgrind, fewer rows (about 10 minutes)
    python benchmarks/run.py --only 1,3 # some measurements only (their table is the README block of that command)

Exit status: 0 every target met, 1 a target missed, 2 none missed but some were inconclusive (the machine
was too busy for enough undisturbed runs).

A loopback DashScope server runs in this process; every kernel is started with
jupyter_client and shut down, and the server stopped, whatever happens.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
import traceback
from pathlib import Path

import evaluate
import logbench
import many
import measurements
from harness import LoopbackServer, Row, kernel_env, machine_line, results_markdown, write_results

ALL = measurements.ALL + logbench.ALL + many.ALL + evaluate.ALL  # numbered 1, 2, ... in this order

HERE = Path(__file__).resolve().parent


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _terminate(signum, frame):  # SIGTERM unwinds like Ctrl-C, so kernels and the server are cleaned up
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="fewer rounds, fewer chunks under valgrind and a smaller curve")
    parser.add_argument("--only", help=f"comma-separated measurement numbers, e.g. 1,3 (default: all {len(ALL)})")
    parser.add_argument("--readme", type=Path, default=HERE / "README.md", help="the README whose results to rewrite")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args(argv)
    chosen = [int(n) for n in args.only.split(",")] if args.only else list(range(1, len(ALL) + 1))
    signal.signal(signal.SIGTERM, _terminate)

    started = time.monotonic()
    mode = (" --quick" if args.quick else "") + (f" --only {args.only}" if args.only else "")
    machine = machine_line(mode)
    if args.quick:
        machine += "\n\n**A quick run**: fewer pairs and chunks than `python benchmarks/run.py`, so looser figures."
    log(machine)
    rows: list[Row] = []
    with LoopbackServer() as server:
        env = kernel_env(server)
        for number in chosen:
            measure = ALL[number - 1]
            log(f"{number}. {measure.__doc__.splitlines()[0].split('. ', 1)[1]}")
            server.reset()
            t0 = time.monotonic()
            try:
                rows += measure(server, env, args.quick, log)
            except Exception as err:  # noqa: BLE001 - one broken measurement must not hide the others
                traceback.print_exc()
                rows.append(Row(f"{number}. {measure.__name__}", f"error: {type(err).__name__}: {err}"[:200],
                                "—", False))
            log(f"   ({time.monotonic() - t0:.0f} s)")
    seconds = time.monotonic() - started
    body = results_markdown(rows, machine, seconds)
    write_results(args.readme, body, mode)
    if args.json:
        args.json.write_text(json.dumps([row.__dict__ for row in rows], indent=2, ensure_ascii=False))
    print(body)
    if any(row.passed is False and not row.noisy for row in rows):
        return 1
    return 2 if any(row.verdict.startswith("inconclusive") for row in rows) else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt as stop:  # kernels and the server are already shut down by then
        log(f"interrupted ({stop or 'Ctrl-C'}): the README was not rewritten")
        sys.exit(130)
