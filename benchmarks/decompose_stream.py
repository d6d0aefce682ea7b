"""Split the `%%qwen` overhead into its layers: a 4,000-chunk unthrottled stream, or the local model.

    python benchmarks/decompose_stream.py            # 8 undisturbed rounds (at most 5 minutes)
    python benchmarks/decompose_stream.py --local    # the same for -m local:0.5b (measurement 6)
    python benchmarks/decompose_stream.py --pin      # the kernel on one vCPU, its speed watched: see below

Variants run in rotating order in one kernel, each round after a quiet moment; rounds during which other
processes took CPU are dropped.  For the stream (measurement 1):

    A  the bare AsyncOpenAI loop on the kernel's own loop (the baseline)
    B  the same loop run on the package's background loop thread, the cell waiting for it
    C  `%%qwen` with a renderer that shows nothing (backend, event queue, result; no display traffic)
    D  `%%qwen` as in a notebook

B − A is the cost of the background thread itself, C − B the backend's events and the hand-over to the
cell's thread, D − C the display path (markdown, display messages, ipykernel's stream flushes).
For the local model (measurement 6): A raw llama-cpp-python streaming in the cell's thread, B the same
in a new thread (as the local backend does), C and D as above with `-m local:0.5b -t 0 --seed 1 --max-tokens 64`.
Prints wall and CPU seconds (all live kernel threads) per variant, and medians of the ratios to A.  Two
columns are ratios within each run, so the vCPUs' speed phases do not blur them: the CPU of the other
kernel threads over the busiest one's (the stream's), and the busiest thread's CPU over the wall time.  (With
--local the first is about 100%: llama.cpp computes on two threads.)

With ``--pin``, every thread of the kernel runs on the last vCPU and this process (the loopback server) on
the others, and a :class:`cpu_phases.Probe` times a small piece of work on the kernel's vCPU every 20 ms.
Each run's wall time is then also weighed by how fast that vCPU ran meanwhile (its mean speed), which takes
out most of the scatter of this host's two speeds: a last column gives the medians of those speed-normalised
ratios to A.  Pinned, a variant's extra threads share the stream's vCPU rather than run beside it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time

from cells import LOCAL_PROMPT, SDK, SDK_SETUP, SETUP
from cpu_phases import Probe
from harness import DEFAULT_KEY, Kernel, LoopbackServer, Script, kernel_env, text_of
from pairs import QUIET, median_interval
from profile_stream import TOOLS

HELPERS = r'''
from qwen_magics.magics import QwenMagics as _b_QM
from qwen_magics.render.base import Renderer as _b_Null

_b_real_renderer = _b_QM._renderer
_b_loop_client = None

async def _b_sdk_on_loop():
    global _b_loop_client
    if _b_loop_client is None:  # a client of its own: connections belong to the loop that opened them
        _b_loop_client = _b_openai.AsyncOpenAI(base_url=_b_client.base_url, api_key=_b_client.api_key)
    parts = []
    async for chunk in await _b_loop_client.chat.completions.create(
            model="qwen-plus", messages=[{"role": "user", "content": "bench"}], stream=True,
            stream_options={"include_usage": True}, extra_body={"enable_thinking": False}):
        if chunk.choices and chunk.choices[0].delta.content:
            parts.append(chunk.choices[0].delta.content)
    return len("".join(parts))
'''

TIMED = """\
_b_c0 = _b_cpu()
_b_t0 = _b_time.perf_counter()
{body}
_b_dt = _b_time.perf_counter() - _b_t0
_b_c1 = _b_cpu()
_b_used = [_b_c1[n] - _b_c0.get(n, 0) for n in _b_c1]
print("BENCH " + _b_json.dumps({{"elapsed": _b_dt, "t0": _b_t0, "cpu": sum(_b_used), "busiest": max(_b_used)}}))
"""

PIN = """\
for _b_task in _b_os.listdir("/proc/self/task"):  # threads started later inherit it
    _b_os.sched_setaffinity(int(_b_task), {{{cpu}}})
"""

LOCAL_HELPERS = f"""
from qwen_magics.local_model import load as _b_load, resolve as _b_resolve
_b_llm = _b_load(_b_resolve("local:0.5b")).llm

def _b_raw():
    _b_llm.reset()
    for _ in _b_llm.create_chat_completion(messages=[{{"role": "user", "content": {LOCAL_PROMPT!r}}}], stream=True,
                                           temperature=0, seed=1, max_tokens=64):
        pass
"""


def variants(local: bool) -> dict[str, str]:
    """Variant name -> cell body."""
    if local:
        magic = f"get_ipython().run_cell_magic('qwen', '-m local:0.5b -t 0 --seed 1 --max-tokens 64', {LOCAL_PROMPT!r})"
        first = {"A raw llama-cpp, cell's thread": "_b_raw()",
                 "B raw llama-cpp, a new thread": "_b_th = _b_threading.Thread(target=_b_raw)\n_b_th.start()\n_b_th.join()"}
    else:
        magic = "get_ipython().run_cell_magic('qwen', '-m qwen-plus --no-thinking', 'bench')"
        first = {"A bare SDK loop, kernel's loop": SDK.split("_b_t0 = _b_time.perf_counter()\n", 1)[1].split("_b_dt =")[0],
                 "B bare SDK loop, package loop": "_b_asyncio.run_coroutine_threadsafe(_b_sdk_on_loop(), "
                                                  "_b_runner.background_loop()).result()"}
    return {**first,
            "C %%qwen, renderer shows nothing": "_b_QM._renderer = lambda self, fmt: _b_Null()\ntry:\n    "
                                                f"{magic}\nfinally:\n    _b_QM._renderer = _b_real_renderer",
            "D %%qwen": magic}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8, help="undisturbed rounds wanted (default 8)")
    parser.add_argument("--budget", type=float, default=300, help="give up after this many seconds")
    parser.add_argument("--local", action="store_true", help="decompose measurement 6 (the local model) instead")
    parser.add_argument("--pin", action="store_true", help="the kernel on one vCPU, its speed watched (see above)")
    args = parser.parse_args(argv)
    cpus = sorted(os.sched_getaffinity(0))
    if args.pin and (len(cpus) < 2 or args.local):
        parser.error("--pin needs two vCPUs or more, and is for the stream (llama.cpp computes on two threads)")
    script = Script(reasoning="", text=text_of(20_000), chunk_chars=5)
    codes = {name: TIMED.format(body=body) for name, body in variants(args.local).items()}
    rounds: list[dict[str, dict]] = []  # the undisturbed ones: variant -> what its cell printed
    order = list(codes)
    with contextlib.ExitStack() as stack:
        setup = SETUP + TOOLS
        if args.pin:
            os.sched_setaffinity(0, cpus[:-1])  # before the server's thread starts: it inherits this
            setup += PIN.format(cpu=cpus[-1])
            probe = stack.enter_context(Probe(cpus[-1]))
        server = stack.enter_context(LoopbackServer())
        k = stack.enter_context(Kernel(kernel_env(server)))
        k.execute(setup)
        k.execute(SDK_SETUP.format(base=server.url + "/compatible-mode/v1", key=DEFAULT_KEY))
        k.execute(HELPERS)
        if args.local:
            k.execute(LOCAL_HELPERS, timeout=300)
        for code in codes.values():  # warm-up (and the model loaded once)
            if not args.local:
                server.enqueue(script)
            k.execute(code, timeout=300)
        deadline = time.monotonic() + args.budget
        while len(rounds) < args.rounds and time.monotonic() < deadline:
            k.settle(QUIET, 20)
            row = {}
            for name in order:
                if not args.local:
                    server.enqueue(script)
                ex = k.execute(codes[name], timeout=300)
                row[name] = {**ex.value(), "others": ex.others, "displays": len(ex.displays())}
            order = order[1:] + order[:1]  # rotate, so no variant always runs first
            quiet = max(v["others"] for v in row.values()) < QUIET
            print("  ".join(f"{name[0]} {v['elapsed']:.2f} s" for name, v in row.items())
                  + ("" if quiet else "  (disturbed, dropped)"), flush=True)
            if quiet:
                rounds.append(row)
        normalised = _normalised(rounds, list(codes), probe) if args.pin else {}
    print(f"\n{'variant':34s} {'wall':>7s} {'CPU':>7s} {'ratio to A':>10s} {'others/busiest':>14s} {'busiest/wall':>12s}"
          f" {'displays':>8s}" + (f" {'speed-normalised':>16s}" if args.pin else "") + f"   ({len(rounds)} rounds)")
    base = next(iter(codes))
    for name in codes if rounds else ():
        med = [statistics.median(column) for column in zip(*(_columns(row[name], row[base]) for row in rounds))]
        print(f"{name:34s} {med[0]:6.3f}s {med[1]:6.3f}s {med[2]:10.3f} {med[3]:14.2%} {med[4]:12.2%} {med[5]:8.0f}"
              + (f" {normalised[name]:16s}" if args.pin else ""))
    return 0


def _columns(run: dict, base: dict) -> tuple:
    """Wall, CPU, ratio to A, other threads' CPU over the busiest one's, busiest over wall, display messages."""
    return (run["elapsed"], run["cpu"], run["elapsed"] / base["elapsed"], (run["cpu"] - run["busiest"]) / run["busiest"],
            run["busiest"] / run["elapsed"], run["displays"])


def _normalised(rounds: list[dict[str, dict]], names: list[str], probe: Probe) -> dict[str, str]:
    """Variant -> median and 90% bootstrap interval of its ratio to the first, each run's wall time times its vCPU's speed."""
    speeds = iter(probe.speeds([(row[name]["t0"], row[name]["elapsed"]) for row in rounds for name in names]))
    timed = [{name: (row[name]["elapsed"], next(speeds)) for name in names} for row in rounds]
    work = [{name: elapsed * speed for name, (elapsed, speed) in row.items()}
            for row in timed if all(speed is not None for _, speed in row.values())]
    out = {}
    for name in names:
        ratios = [row[name] / row[names[0]] for row in work]
        if not ratios:
            out[name] = "no samples"
            continue
        lo, hi = median_interval(ratios)
        out[name] = f"{statistics.median(ratios):.3f} ({lo:.2f}-{hi:.2f})"
    return out


if __name__ == "__main__":
    sys.exit(main())
