"""What the display refreshes of a fast `%%qwen` stream cost, measured without a profiler.

    python benchmarks/refresh_cost.py               # 6 runs of 4,000 unthrottled chunks
    python benchmarks/refresh_cost.py --runs 10

Runs in a real kernel against the loopback server.  The kernel's copies of
``Renderer.refresh_if_due``, ``Chain._bundle``, ``parts.block_starts`` and
ipykernel's ``OutStream.flush`` are wrapped with timers, so the output says,
per run: the wall time of the cell, the time spent in refreshes (the stream is
held meanwhile), within it the markdown (block splitting and rendering) and
ipykernel's stream flushes, two round trips to its I/O thread before every
display message, and how long the stream stood aside in all.  Not seen here:
the I/O thread's own work for each message, which competes with the stream for
the GIL (see "Where the stream overhead goes" in benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import sys

from cells import SETUP
from harness import Kernel, LoopbackServer, Script, kernel_env, text_of

TIMERS = r'''
import ipykernel.iostream as _b_io
from qwen_magics.render import base as _b_base, parts as _b_parts

_b_acc = {}

def _b_timed(name, fn):
    def timed(*args, **kw):
        t = _b_time.perf_counter()
        try:
            return fn(*args, **kw)
        finally:
            _b_acc[name] = _b_acc.get(name, 0.0) + _b_time.perf_counter() - t
            _b_acc[name + " calls"] = _b_acc.get(name + " calls", 0) + 1
    return timed

_b_due = _b_base.Renderer.refresh_if_due

def _b_refresh_if_due(self, result, waited=None):
    if self._dirty and self.clock() - self._last_refresh >= self._gap:
        return _b_timed("refresh", _b_due)(self, result, waited)
    return _b_due(self, result, waited)

_b_base.Renderer.refresh_if_due = _b_refresh_if_due
_b_parts.Chain._bundle = _b_timed("markdown", _b_parts.Chain._bundle)
_b_parts.block_starts = _b_timed("markdown", _b_parts.block_starts)
_b_io.OutStream.flush = _b_timed("flush", _b_io.OutStream.flush)

from qwen_magics import runner as _b_runner
_b_step_aside = _b_runner._Inbox.step_aside

async def _b_timed_step_aside(self):
    t = _b_time.perf_counter()
    try:
        return await _b_step_aside(self)
    finally:  # on the loop thread; read by the cell after the stream ended
        _b_acc["waited"] = _b_acc.get("waited", 0.0) + _b_time.perf_counter() - t

_b_runner._Inbox.step_aside = _b_timed_step_aside
'''

RUN = r'''
_b_acc.clear()
_b_t0 = _b_time.perf_counter()
get_ipython().run_cell_magic("qwen", "-m qwen-plus --no-thinking", "bench")
_b_wall = _b_time.perf_counter() - _b_t0
print("BENCH " + _b_json.dumps({"wall": _b_wall, **_b_acc}))
'''


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=6)
    args = parser.parse_args(argv)
    script = Script(reasoning="", text=text_of(20_000), chunk_chars=5)
    print(f"{'wall':>7s} {'refreshes':>9s} {'in refresh':>10s} {'markdown':>9s} {'flushes':>8s} {'flush time':>10s} "
          f"{'stream waited':>13s}")
    with LoopbackServer() as server, Kernel(kernel_env(server)) as k:
        k.execute(SETUP + TIMERS)
        server.enqueue(script)
        k.execute(RUN)  # warm-up
        for _ in range(args.runs):
            server.enqueue(script)
            v = k.execute(RUN).value()
            wall = v["wall"]
            print(f"{wall:6.3f}s {v.get('refresh calls', 0):9d} {v.get('refresh', 0) / wall:9.1%} "
                  f"{v.get('markdown', 0) / wall:8.1%} {v.get('flush calls', 0):8d} {v.get('flush', 0) / wall:9.1%} "
                  f"{v.get('waited', 0) / wall:12.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
