"""Where the time of a fast stream goes: per-thread CPU and cProfile of `%%qwen` vs the bare SDK loop.

    python benchmarks/diagnostics/profile_stream.py              # 4,000 chunks, unthrottled, as in measurement 1
    python benchmarks/diagnostics/profile_stream.py --chunks 1000 --top 30

Runs in a real kernel against the loopback server.  Prints, for each side,
the CPU each kernel thread used (from /proc/self/task), then cProfile of the
cell's thread and of the package's loop thread (``qwen-magics-loop``) sorted
by own time, and the package's own functions alone.  cProfile inflates
everything several-fold; read the shares, not the seconds.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the benchmarks' own modules

from cells import QWEN, SDK, SDK_SETUP, SETUP  # noqa: E402
from harness import DEFAULT_KEY, Kernel, LoopbackServer, Script, kernel_env, text_of  # noqa: E402

TOOLS = r'''
import cProfile as _b_cp, io as _b_io, pstats as _b_ps
from qwen_magics import runner as _b_runner

def _b_cpu():
    names = {t.native_id: t.name for t in _b_threading.enumerate()}
    out = {}
    for tid in _b_os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/schedstat") as f:  # nanoseconds on the CPU (/stat counts 10-ms ticks)
                ns = int(f.read().split()[0])
        except OSError:  # the thread ended meanwhile
            continue
        out[names.get(int(tid), f"thread {tid}")] = ns / 1e9
    return out

def _b_on_loop(fn):
    """Run fn on the package's loop thread and wait for it."""
    async def call():
        fn()
    _b_asyncio.run_coroutine_threadsafe(call(), _b_runner.background_loop()).result(10)

def _b_report(title, profs, top, only=None):
    out = _b_io.StringIO()
    stats = _b_ps.Stats(*profs, stream=out).sort_stats("tottime")
    stats.print_stats(only, top) if only else stats.print_stats(top)
    lines = [l for l in out.getvalue().splitlines() if l.strip() and not l.startswith(("   Ordered", "   List reduced"))]
    print(f"--- {title}\n" + "\n".join(lines))
'''

PROFILE = r'''
_b_before = _b_cpu()
_b_main, _b_loop = _b_cp.Profile(), _b_cp.Profile()
{loop_on}
_b_main.enable()
{body}
_b_main.disable()
{loop_off}
_b_after = _b_cpu()
print("--- CPU seconds per kernel thread: " + ", ".join(f"{{n}} {{_b_after[n] - _b_before.get(n, 0):.2f}}"
      for n in sorted(_b_after, key=lambda n: _b_before.get(n, 0) - _b_after[n]) if _b_after[n] - _b_before.get(n, 0) >= 0.01))
_b_report("cell thread, by own time", [_b_main], {top})
{loop_report}
'''


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=4000, help="chunks of 5 characters (default 4000)")
    parser.add_argument("--delay", type=float, default=0.0, help="server delay between chunks, seconds")
    parser.add_argument("--top", type=int, default=20, help="rows per profile")
    args = parser.parse_args(argv)
    script = Script(reasoning="", text=text_of(args.chunks * 5), chunk_chars=5, chunk_delay=args.delay)
    sides = {
        "%%qwen": PROFILE.format(
            body=QWEN, top=args.top, loop_on="_b_on_loop(_b_loop.enable)", loop_off="_b_on_loop(_b_loop.disable)",
            loop_report=f'_b_report("package loop thread, by own time", [_b_loop], {args.top})\n'
                        f'_b_report("package functions only (both threads)", [_b_main, _b_loop], {args.top}, '
                        f'"qwen_magics")'),
        "bare SDK loop": PROFILE.format(body=SDK, top=args.top, loop_on="", loop_off="", loop_report=""),
    }
    with LoopbackServer() as server, Kernel(kernel_env(server)) as k:
        k.execute(SETUP + TOOLS)
        k.execute(SDK_SETUP.format(base=server.url + "/compatible-mode/v1", key=DEFAULT_KEY))
        for code in (QWEN, SDK):  # warm-up
            server.enqueue(script)
            k.execute(code)
        for name, code in sides.items():
            server.enqueue(script)
            out = k.execute(code, timeout=600).stdout()
            print(f"===== {name}: {args.chunks} chunks, delay {args.delay} s")
            print("\n".join(line for line in out.splitlines() if line != "FIRST"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
