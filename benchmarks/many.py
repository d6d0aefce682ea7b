"""Many prompts: ``%%qwen_map`` against a hand-written asyncio loop, its traffic and memory, resume, and --batch.

The loopback server answers every row after a fixed 200 ms (a short answer in
two chunks), so a map of N rows at concurrency 32 takes about N / 32 × 0.2 s
when nothing but the waiting costs.  Every kernel writes its run log to a
temporary folder (``QWEN_MAGICS_LOG``), never to the user's own.
"""

from __future__ import annotations

import json
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

from cells import PROBE, SETUP
from harness import DEFAULT_KEY, Execution, Kernel, LoopbackServer, Row, Script, median
from loopback import CHAT_PATH
from loopback_batch import BatchTiming
from pairs import QUIET, alternate, usable

Log = Callable[[str], None]

DELAY = 0.2  # seconds the server waits before answering each row
CONCURRENCY = 32
RATIO_TARGET, BYTES_TARGET, RSS_TARGET = 1.10, 200_000, 50 * 2**20
TEMPLATE = "Label this review: {item} ({_b_tag})"
MAP_LINE = f"_b_reviews -m qwen-plus --no-thinking --concurrency {CONCURRENCY}"
ANSWER = Script(reasoning="", text="positive", chunk_chars=4, first_byte_delay=DELAY)

CLIENT = """\
import openai as _b_openai
_b_client = _b_openai.AsyncOpenAI(base_url={base!r}, api_key={key!r})

async def _b_loop(prompts, limit):
    \"\"\"The hand-written loop: at most ``limit`` requests in flight, each answer read from its stream.\"\"\"
    gate = _b_asyncio.Semaphore(limit)

    async def one(prompt):
        async with gate:
            parts = []
            async for chunk in await _b_client.chat.completions.create(
                    model="qwen-plus", messages=[{{"role": "user", "content": prompt}}], stream=True,
                    stream_options={{"include_usage": True}}, extra_body={{"enable_thinking": False}}):
                if chunk.choices and chunk.choices[0].delta.content:
                    parts.append(chunk.choices[0].delta.content)
            return "".join(parts)

    return await _b_asyncio.gather(*(one(p) for p in prompts))
"""

REVIEWS = ("_b_reviews = [f'review {{i}}: the kettle {{\"broke\" if i % 3 == 0 else \"works\"}} after a week' "
           "for i in range({rows})]")

# The map as a notebook cell would run it, timed inside; the RSS around it (after gc.collect()); then the result
# table displayed, as the cell's output would be.  Its values go to _b_out, printed by the next cell, so the map
# cell's iopub messages are the map's own.
MAP = """\
_b_before = _b_probe()["rss"]
_b_t0, _b_cpu = _b_time.perf_counter(), _b_time.process_time()
_b_frame = get_ipython().run_cell_magic("qwen_map", {line!r}, {template!r})
_b_dt, _b_cpu = _b_time.perf_counter() - _b_t0, _b_time.process_time() - _b_cpu
_b_after = _b_probe()["rss"]
display(_b_frame)
_b_out = {{"elapsed": _b_dt, "cpu": _b_cpu, "rss": _b_after - _b_before, "rows": len(_b_frame),
           "complete": int((_b_frame["state"] == "complete").sum())}}
"""

LOOP = """\
_b_t0, _b_cpu = _b_time.perf_counter(), _b_time.process_time()
_b_answers = await _b_loop([{template!r}.format(item=r, _b_tag=_b_tag) for r in _b_reviews], {limit})
_b_dt, _b_cpu = _b_time.perf_counter() - _b_t0, _b_time.process_time() - _b_cpu
_b_out = {{"elapsed": _b_dt, "cpu": _b_cpu, "rows": len(_b_answers), "complete": sum(1 for a in _b_answers if a)}}
"""

OUT = "print('BENCH ' + _b_json.dumps(_b_out))"


def _check(ok: bool, what: str) -> None:
    if not ok:
        raise RuntimeError(what)


def _kernel(env: dict, tmp: str, server: LoopbackServer, rows: int) -> Kernel:
    k = Kernel({**env, "QWEN_MAGICS_LOG": str(Path(tmp) / "log.db")})
    try:
        k.execute(SETUP + PROBE + CLIENT.format(base=server.url + "/compatible-mode/v1", key=DEFAULT_KEY))
        k.execute(REVIEWS.format(rows=rows))
    except BaseException:
        k.close()
        raise
    return k


def _run(k: Kernel, server: LoopbackServer, cell: str, tag: str, rows: int, answer: Script = ANSWER
         ) -> tuple[dict, Execution, tuple]:
    """One run of ``cell`` over fresh prompts (``tag``): its values, its execution, and what the server got: the
    prompts, and the request bodies but for their messages."""
    server.reset()
    server.enqueue(replace(answer, repeat=rows))
    k.execute(f"_b_tag = {tag!r}")
    ex = k.execute(cell, timeout=max(180, rows / CONCURRENCY * DELAY * 5))
    value = {**k.value(OUT), "others": ex.others}
    chats = [r.body for r in server.requests if r.path == CHAT_PATH]
    _check(value["complete"] == rows == len(chats),
           f"{value['complete']:,} of {rows:,} rows answered, {len(chats):,} requests sent")
    rest = {json.dumps({key: v for key, v in body.items() if key != "messages"}, sort_keys=True) for body in chats}
    return value, ex, (sorted(body["messages"][-1]["content"] for body in chats), sorted(rest))


def front_end_bytes(ex: Execution) -> tuple[int, int, int]:
    """Bytes of every display, display update and stream message of the cell; of them, the result table's; count."""
    shown = [m for _, m in ex.messages if m["msg_type"] in ("display_data", "update_display_data", "stream")]
    sizes = [len(json.dumps(m["content"])) for m in shown]
    table = next((size for m, size in zip(reversed(shown), reversed(sizes)) if m["msg_type"] == "display_data"), 0)
    return sum(sizes), table, len(shown)


def map_vs_loop(server: LoopbackServer, env: dict, quick: bool, log: Log) -> list[Row]:
    """9. %%qwen_map vs a hand-written Semaphore + AsyncOpenAI loop at 200 ms a row; its traffic and memory."""
    rows = 2_000 if quick else 10_000
    traffic: list[tuple[int, int, int]] = []
    growth: list[int] = []
    sent: dict[str, list[tuple]] = {}
    counters = {"map": 0, "loop": 0}

    def runner(kind: str, cell: str) -> Callable[[], dict]:
        def run() -> dict:
            counters[kind] += 1  # the i-th map and the i-th loop ask the same new prompts (nothing in the log)
            tag = f"pair-{counters[kind]}"
            value, ex, got = _run(k, server, cell, tag, rows)
            sent.setdefault(tag, []).append(got)
            if kind == "map":
                traffic.append(front_end_bytes(ex))
                growth.append(value["rss"])
            return value
        return run

    map_cell = MAP.format(line=MAP_LINE, template=TEMPLATE)
    loop_cell = LOOP.format(template=TEMPLATE, limit=CONCURRENCY)
    with tempfile.TemporaryDirectory(prefix="qwen-bench-many-") as tmp, _kernel(env, tmp, server, rows) as k:
        k.execute("_b_full, _b_reviews = _b_reviews, _b_reviews[:200]")  # warm-up: imports, connections
        _run(k, server, map_cell, "warm", 200), _run(k, server, loop_cell, "warm", 200)
        k.execute("_b_reviews = _b_full")
        pairs = alternate(runner("map", map_cell), runner("loop", loop_cell), want=3, least=3, most=3, budget=0,
                          log=log, names=("%%qwen_map", "loop"),
                          settle=lambda quiet: k.settle(quiet, 2 if quick else 5))
    _check(all(len(both) == 2 and both[0][0] == both[1][0] for both in sent.values()),
           "the map and the loop of a pair did not send the same prompts")
    bodies = {body for both in sent.values() for _, kinds in both for body in kinds}
    used, noisy, note = usable(pairs)
    ratio = median([p.ratio() for p in used])
    ideal = rows / CONCURRENCY * DELAY
    what = f"{rows:,} rows at {DELAY * 1000:.0f} ms each, concurrency {CONCURRENCY}"
    timing = Row(f"9. `%%qwen_map` / hand-written asyncio.Semaphore + AsyncOpenAI loop, {what}, wall time "
                 f"(median of {len(used)} alternated pairs)", f"{ratio:.3f}" + (" (noisy)" if noisy else ""),
                 f"≤ {RATIO_TARGET:.2f}", ratio <= RATIO_TARGET, noisy=noisy)
    timing.notes += [f"%%qwen_map {median([p.a['elapsed'] for p in used]):.1f} s, loop "
                     f"{median([p.b['elapsed'] for p in used]):.1f} s ({ideal:.1f} s if only the waiting counted); "
                     f"kernel CPU (all threads) %%qwen_map {median([p.a['cpu'] for p in used]):.1f} s, loop "
                     f"{median([p.b['cpu'] for p in used]):.1f} s; "
                     f"per-pair ratios {', '.join(f'{p.ratio():.3f}' for p in used)}; both sent the same "
                     f"{rows:,} prompts in each pair, " + ("in the same request body" if len(bodies) == 1 else
                                                           f"in different request bodies: {' / '.join(bodies)[:300]}")
                     + f"; {note}"]
    total, table, messages = max(traffic)
    shown = Row(f"9. front-end bytes of a whole {rows:,}-row `%%qwen_map` run (progress view and result table)",
                f"{total / 1000:.0f} kB", f"≤ {BYTES_TARGET // 1000} kB", total <= BYTES_TARGET)
    shown.notes += [f"{messages} display and stream messages, {table:,} bytes of them the result table; "
                    f"runs: {', '.join(f'{b[0]:,}' for b in traffic)} bytes"]
    rss = max(growth)
    memory = Row(f"9. kernel RSS growth over a {rows:,}-row `%%qwen_map` run (after gc.collect())",
                 f"{rss / 2**20:+.1f} MB", f"≤ {RSS_TARGET // 2**20} MB", rss <= RSS_TARGET)
    memory.notes += [f"runs: {', '.join(f'{r / 2**20:+.1f}' for r in growth)} MB (the result stays in _b_frame "
                     "and _qwen_map)"]
    return [timing, shown, memory]


CPU_ROWS, CPU_CONCURRENCY, CPU_TARGET = 600, 8, 1.15
CPU_ANSWER = replace(ANSWER, first_byte_delay=0.02)


def map_cpu(server: LoopbackServer, env: dict, quick: bool, log: Log) -> list[Row]:
    """12. %%qwen_map vs the hand-written loop in process CPU time: 600 rows, concurrency 8, the run log on."""
    map_cell = MAP.format(line=f"_b_reviews -m qwen-plus --no-thinking --concurrency {CPU_CONCURRENCY}",
                          template=TEMPLATE)
    loop_cell = LOOP.format(template=TEMPLATE, limit=CPU_CONCURRENCY)
    cpu: dict[str, list[tuple[float, float]]] = {"map": [], "loop": []}  # CPU seconds, other processes' cores
    with tempfile.TemporaryDirectory(prefix="qwen-bench-many-") as tmp, _kernel(env, tmp, server, CPU_ROWS) as k:
        k.execute("_b_full, _b_reviews = _b_reviews, _b_reviews[:100]")  # warm-up: imports, connections
        _run(k, server, map_cell, "warm", 100, CPU_ANSWER), _run(k, server, loop_cell, "warm", 100, CPU_ANSWER)
        k.execute("_b_reviews = _b_full")
        for i in range(3):  # alternated, each run asking prompts not asked before (nothing comes from the log)
            for kind, cell in (("map", map_cell), ("loop", loop_cell)) if i % 2 == 0 else \
                    (("loop", loop_cell), ("map", map_cell)):
                k.settle(QUIET, 2 if quick else 5)
                value, _, _ = _run(k, server, cell, f"cpu-{i}", CPU_ROWS, CPU_ANSWER)
                cpu[kind].append((value["cpu"], value["others"]))
                log(f"   {kind}: {value['cpu']:.2f} s CPU, {value['elapsed']:.2f} s")
    ratio, noisy = best_cpu_ratio(cpu["map"], cpu["loop"])
    row = Row(f"12. `%%qwen_map` / hand-written asyncio.Semaphore + AsyncOpenAI loop, {CPU_ROWS} rows, concurrency "
              f"{CPU_CONCURRENCY}, run log on: the kernel's process CPU time (best of 3 alternated runs each)",
              f"{ratio:.2f}" + (" (noisy)" if noisy else ""), f"≤ {CPU_TARGET:.2f}", ratio <= CPU_TARGET, noisy=noisy)
    row.notes += [f"%%qwen_map {cpu_runs(cpu['map'])}, loop {cpu_runs(cpu['loop'])} (all the kernel's threads); the "
                  f"server answers each row after {CPU_ANSWER.first_byte_delay * 1000:.0f} ms in two chunks"]
    return [row]


def best_cpu_ratio(a: list[tuple[float, float]], b: list[tuple[float, float]]) -> tuple[float, bool]:
    """The best CPU time of ``a`` over the best of ``b`` (runs of (CPU seconds, other processes' cores)), and
    whether either best run was disturbed: other work on a shared core inflates a run's CPU time too, so a
    ratio of disturbed runs decides nothing."""
    best_a, best_b = min(a), min(b)
    return best_a[0] / best_b[0], max(best_a[1], best_b[1]) >= QUIET


def cpu_runs(runs: list[tuple[float, float]]) -> str:
    """``1.52, 1.61 (busy: 0.8 cores) s of CPU``: each run's CPU time, and the other processes' load where it was
    disturbed."""
    return ", ".join(f"{c:.2f}" + (f" (busy: {o:.1f} cores)" if o >= QUIET else "") for c, o in runs) + " s of CPU"


def resume(server: LoopbackServer, env: dict, quick: bool, log: Log) -> list[Row]:
    """10. A map interrupted when half its rows are answered, run again: how many requests the second run sends."""
    rows = 2_000 if quick else 10_000
    half = rows // 2
    cell = MAP.format(line=MAP_LINE, template=TEMPLATE)
    with tempfile.TemporaryDirectory(prefix="qwen-bench-many-") as tmp, _kernel(env, tmp, server, rows) as k:
        k.execute("_b_tag = 'resume'")
        server.reset()
        server.enqueue(replace(ANSWER, repeat=rows))
        stopped: list[int] = []
        watcher = threading.Thread(target=_interrupt_at, args=(k, server, half, stopped), daemon=True)
        watcher.start()
        t0 = time.monotonic()
        k.execute(cell, timeout=rows / CONCURRENCY * DELAY * 5 + 60)
        first_time = time.monotonic() - t0
        watcher.join(5)
        first = k.value(OUT)
        answered = _answered(server)
        _check(bool(stopped) and first["complete"] < rows,
               f"the first run ended ({first['complete']:,} rows answered) before it was interrupted")
        server.reset()
        server.enqueue(replace(ANSWER, repeat=rows))
        ex = k.execute(cell, timeout=rows / CONCURRENCY * DELAY * 5 + 60)
        second = k.value(OUT)
        sent = sum(r.path == CHAT_PATH for r in server.requests)
    bound = half + CONCURRENCY
    row = Row(f"10. resume: a {rows:,}-row `%%qwen_map` interrupted when the server had answered {half:,}, then run "
              "again: requests the second run sends", f"{sent:,}",
              f"≤ {bound:,} ({half:,} + {CONCURRENCY} in flight)", sent <= bound and second["complete"] == rows)
    row.notes += [f"the interrupt went when the server had answered {stopped[0]:,} rows ({first_time:.1f} s in); the "
                  f"stopped map returned {first['complete']:,} rows answered, the server having answered "
                  f"{answered:,}; the second run took {rows - sent:,} rows from the run log and ended with "
                  f"{second['complete']:,} of {rows:,} answered in {second['elapsed']:.1f} s "
                  f"({len(ex.displays())} display messages)"]
    return [row]


def _answered(server: LoopbackServer) -> int:
    return sum(r.path == CHAT_PATH and r.status == 200 and r.finished is not None for r in server.requests)


def _interrupt_at(k: Kernel, server: LoopbackServer, count: int, stopped: list[int], most: float = 600) -> None:
    """Interrupt the kernel (Ctrl-C, the notebook's Stop) once the server has answered ``count`` rows."""
    deadline = time.monotonic() + most
    while time.monotonic() < deadline:
        answered = _answered(server)
        if answered >= count:
            k.km.interrupt_kernel()
            stopped.append(answered)
            return
        time.sleep(0.02)


def batch(server: LoopbackServer, env: dict, quick: bool, log: Log) -> list[Row]:
    """11. A 10,000-row %%qwen_map --batch on the loopback's Batch API: every row matched back."""
    rows = 10_000
    per_line = 0.0001
    cell = MAP.format(line="_b_reviews -m qwen-plus --no-thinking --batch", template=TEMPLATE)
    with tempfile.TemporaryDirectory(prefix="qwen-bench-many-") as tmp, _kernel(env, tmp, server, rows) as k:
        k.execute("_b_tag = 'batch'")
        server.reset()
        server.batches.timing = BatchTiming(validate=0.05, per_line=per_line, finalize=0.05)
        ex = k.execute(cell, timeout=600)
        value = k.value(OUT)
    lines = sum(len(data.splitlines()) for data in server.batches.uploads())
    chats = sum(r.path == CHAT_PATH for r in server.requests)
    row = Row(f"11. `%%qwen_map --batch`, {rows:,} rows on the loopback Batch API: rows matched back from the "
              "output file", f"{value['complete']:,} of {rows:,}", f"{rows:,} of {rows:,}",
              value["complete"] == rows == value["rows"] and lines == rows and chats == 0)
    row.notes += [f"{value['elapsed']:.1f} s from the cell's start to the DataFrame (the job itself runs "
                  f"{rows * per_line:.0f} s at {per_line * 1000:g} ms a line); {lines:,} lines uploaded in "
                  f"{len(server.batches.uploads())} file(s), {chats} live chat requests; "
                  f"{len(ex.displays())} display messages"]
    return [row]


ALL = [map_vs_loop, resume, batch, map_cpu]
