"""Evaluations: ``%%qwen_eval`` against the same maps run one after another, its traffic and memory over 10,000
answers, and its statistics on 100,000 answers.

The loopback server answers every request after 20 ms in two chunks with a
sentence ending in a number, so the ``number`` scorer has something to read
and the CPU, not the waiting, decides.  Every kernel writes its run log to a
temporary folder (``QWEN_MAGICS_LOG``).
"""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Callable

from cells import PROBE, SETUP
from harness import Kernel, LoopbackServer, Row, Script
from loopback import CHAT_PATH
from many import best_cpu_ratio, cpu_runs, front_end_bytes
from pairs import QUIET

Log = Callable[[str], None]

HERE = Path(__file__).resolve().parent
ROWS, SETTINGS, CONCURRENCY, TARGET = 300, ("0", "1.2"), 8, 1.05
ANSWER = Script(reasoning="", text="The sum is 42.", chunk_chars=8, first_byte_delay=0.02)
TEMPLATE = "What is {a} + {b}? Answer with the number. ({_b_tag})"
OPTIONS = f"-m qwen-plus --no-thinking --concurrency {CONCURRENCY}"

SUMS = "_b_sums = [{{'a': i, 'b': i % 97, 'total': i + i % 97}} for i in range({rows})]"

# The evaluation as a notebook cell runs it, its result displayed (table, chart, sentence), timed inside.
EVAL = """\
_b_t0, _b_cpu = _b_time.perf_counter(), _b_time.process_time()
_b_result = get_ipython().run_cell_magic("qwen_eval", {line!r}, {template!r})
display(_b_result)
_b_dt, _b_cpu = _b_time.perf_counter() - _b_t0, _b_time.process_time() - _b_cpu
_b_out = {{"elapsed": _b_dt, "cpu": _b_cpu, "complete": int((_b_result.answers["state"] == "complete").sum()),
           "scored": int(_b_result.table["n"].sum())}}
"""

# The same settings as maps, one after another in one cell, each result displayed.
MAPS = """\
_b_t0, _b_cpu = _b_time.perf_counter(), _b_time.process_time()
_b_complete = 0
for _b_line in {lines!r}:
    _b_frame = get_ipython().run_cell_magic("qwen_map", _b_line, {template!r})
    display(_b_frame)
    _b_complete += int((_b_frame["state"] == "complete").sum())
_b_dt, _b_cpu = _b_time.perf_counter() - _b_t0, _b_time.process_time() - _b_cpu
_b_out = {{"elapsed": _b_dt, "cpu": _b_cpu, "complete": _b_complete}}
"""

OUT = "print('BENCH ' + _b_json.dumps(_b_out))"


def _check(ok: bool, what: str) -> None:
    if not ok:
        raise RuntimeError(what)


def eval_vs_maps(server: LoopbackServer, env: dict, quick: bool, log: Log) -> list[Row]:
    """13. %%qwen_eval over R rows x S settings vs the S maps one after another, in process CPU time."""
    rows = 100 if quick else ROWS
    requests = rows * len(SETTINGS)
    cells = {"eval": EVAL.format(line=f"_b_sums --expect total --score number -t {','.join(SETTINGS)} {OPTIONS}",
                                 template=TEMPLATE),
             "maps": MAPS.format(lines=[f"_b_sums -t {t} {OPTIONS}" for t in SETTINGS], template=TEMPLATE)}
    cpu: dict[str, list[tuple[float, float]]] = {"eval": [], "maps": []}  # CPU seconds, other processes' cores

    def run(k: Kernel, kind: str, tag: str) -> dict:
        """One run over prompts not asked before (``tag``), so nothing comes from the run log."""
        server.reset()
        server.enqueue(replace(ANSWER, repeat=requests))
        k.execute(f"_b_tag = {tag!r}")
        ex = k.execute(cells[kind], timeout=max(180, requests / CONCURRENCY * 0.1))
        value = {**k.value(OUT), "others": ex.others}
        sent = [r.body for r in server.requests if r.path == CHAT_PATH]
        _check(value["complete"] == requests == len(sent),
               f"{kind}: {value['complete']:,} of {requests:,} requests answered, {len(sent):,} sent")
        _check(sorted(b.get("temperature") for b in sent) == sorted(float(t) for t in SETTINGS for _ in range(rows)),
               f"{kind}: the requests were not {rows} at each of the temperatures {', '.join(SETTINGS)}")
        _check(kind == "maps" or value["scored"] == requests, f"eval: {value.get('scored')} of {requests} scored")
        return value

    with tempfile.TemporaryDirectory(prefix="qwen-bench-eval-") as tmp, \
            Kernel({**env, "QWEN_MAGICS_LOG": str(Path(tmp) / "log.db")}) as k:
        k.execute(SETUP + SUMS.format(rows=rows))
        k.execute(f"_b_full, _b_sums = _b_sums, _b_sums[:{rows // 10}]")  # warm-up: imports (scipy), connections
        server.reset()
        server.enqueue(replace(ANSWER, repeat=rows // 10 * len(SETTINGS) * 2))
        for kind in cells:
            k.execute(f"_b_tag = 'warm-{kind}'")
            k.execute(cells[kind], timeout=300)
        k.execute("_b_sums = _b_full")
        for i in range(3):  # alternated; each run asks prompts not asked before
            for kind in ("eval", "maps") if i % 2 == 0 else ("maps", "eval"):
                k.settle(QUIET, 2 if quick else 5)
                value = run(k, kind, f"{kind}-{i}")
                cpu[kind].append((value["cpu"], value["others"]))
                log(f"   {kind}: {value['cpu']:.2f} s CPU, {value['elapsed']:.2f} s")
    ratio, noisy = best_cpu_ratio(cpu["eval"], cpu["maps"])
    row = Row(f"13. `%%qwen_eval` over {rows} rows x {len(SETTINGS)} settings (`-t {','.join(SETTINGS)} --score "
              f"number`) / the same {len(SETTINGS)} `%%qwen_map` runs one after another, run log on, results "
              "displayed: the kernel's process CPU time (best of 3 alternated runs each)",
              f"{ratio:.3f}" + (" (noisy)" if noisy else ""), f"≤ {TARGET:.2f}", ratio <= TARGET, noisy=noisy)
    row.notes += [f"%%qwen_eval {cpu_runs(cpu['eval'])}, maps {cpu_runs(cpu['maps'])} (all the kernel's threads); "
                  f"{requests:,} requests each, the server answering each after "
                  f"{ANSWER.first_byte_delay * 1000:.0f} ms in two chunks"]
    return [row]


# The evaluation of measurement 15: the RSS around it (after gc.collect()), then its result displayed as the cell's
# output would be.  Its values go to _b_out, printed by the next cell, so the cell's iopub messages are its own.
LARGE = """\
_b_before = _b_probe()["rss"]
_b_result = get_ipython().run_cell_magic("qwen_eval", {line!r}, {template!r})
_b_after = _b_probe()["rss"]
display(_b_result)
_b_out = {{"rss": _b_after - _b_before, "complete": int((_b_result.answers["state"] == "complete").sum()),
           "scored": int(_b_result.table["n"].sum())}}
"""
LARGE_ROWS, LARGE_CONCURRENCY = 5_000, 32
BYTES_TARGET, RSS_TARGET = 200_000, 100 * 2**20


def eval_traffic(server: LoopbackServer, env: dict, quick: bool, log: Log) -> list[Row]:
    """15. The front-end bytes and the kernel's memory growth of a %%qwen_eval of 10,000 answers."""
    rows = 1_000 if quick else LARGE_ROWS
    requests = rows * len(SETTINGS)
    line = (f"_b_sums --expect total --score number -t {','.join(SETTINGS)} -m qwen-plus --no-thinking "
            f"--concurrency {LARGE_CONCURRENCY}")
    with tempfile.TemporaryDirectory(prefix="qwen-bench-eval-") as tmp, \
            Kernel({**env, "QWEN_MAGICS_LOG": str(Path(tmp) / "log.db")}) as k:
        k.execute(SETUP + PROBE + SUMS.format(rows=rows))
        k.execute("_b_full, _b_sums = _b_sums, _b_sums[:50]")  # warm-up: imports (scipy), connections
        server.reset()
        server.enqueue(replace(ANSWER, repeat=50 * len(SETTINGS)))
        k.execute("_b_tag = 'warm'")
        k.execute(LARGE.format(line=line, template=TEMPLATE), timeout=300)
        k.execute("_b_sums = _b_full; _b_tag = 'large'")
        server.reset()
        server.enqueue(replace(ANSWER, repeat=requests))
        ex = k.execute(LARGE.format(line=line, template=TEMPLATE), timeout=max(300, requests / LARGE_CONCURRENCY))
        value = k.value(OUT)
    _check(value["complete"] == value["scored"] == requests == len(
        [r for r in server.requests if r.path == CHAT_PATH]), f"eval: {value} of {requests:,} requests")
    total, table, messages = front_end_bytes(ex)
    log(f"   {total:,} bytes in {messages} messages, RSS {value['rss'] / 2**20:+.1f} MB")
    what = f"`%%qwen_eval` of {requests:,} answers ({rows:,} rows x {len(SETTINGS)} settings, concurrency " \
           f"{LARGE_CONCURRENCY})"
    shown = Row(f"15. front-end bytes of a whole {what}: progress view, table, chart and sentence",
                f"{total / 1000:.0f} kB", f"≤ {BYTES_TARGET // 1000} kB", total <= BYTES_TARGET)
    shown.notes.append(f"{messages} display and stream messages, {table:,} bytes of them the displayed result")
    memory = Row(f"15. kernel RSS growth over the same {what} (after gc.collect())",
                 f"{value['rss'] / 2**20:+.1f} MB", f"≤ {RSS_TARGET // 2**20} MB", value["rss"] <= RSS_TARGET)
    memory.notes.append("the result (its answers, one row per request) stays in _b_result and _qwen_eval")
    return [shown, memory]


STATS = """\
import sys as _b_sys
_b_sys.path.insert(0, {here!r})
import evaluate_stats as _b_stats
_b_stats.measure(2, 50, 1)  # scipy and pandas imported first, as a kernel's first evaluation does
_b_out = [_b_stats.measure(10, 10_000, 1), _b_stats.measure(10, 5_000, 2)]
print('BENCH ' + _b_json.dumps(_b_out))
"""


def eval_stats(server: LoopbackServer, env: dict, quick: bool, log: Log) -> list[Row]:
    """14. %%qwen_eval's scoring, statistics and tables for 100,000 answers (benchmarks/evaluate_stats.py)."""
    with Kernel(env) as k:
        k.execute(SETUP)
        k.settle(0.3, 2 if quick else 5)
        ex = k.execute(STATS.format(here=str(HERE)), timeout=600)
    runs = ex.value()
    worst = max(run["total"] for run in runs)
    busy = ex.others >= QUIET  # other work slows a wall time down, never up: a pass stands, a miss decides nothing
    row = Row("14. `%%qwen_eval`'s scoring (`number`), statistics, `.table`, `.answers` and significance sentence for "
              "100,000 answers (10 settings x 10,000 rows; x 5,000 rows x 2 repeats), in a kernel, nothing sent",
              f"{worst * 1000:.0f} ms" + (" (noisy)" if busy else ""), "< 1 s", worst < 1, noisy=busy,
              slower_only=True)
    row.notes += [f"{run['answers']:,} answers: scoring {run['scoring']:.3f} s, statistics and tables "
                  f"{run['statistics and tables']:.3f} s, sentence {run['sentence']:.3f} s ({run['cpu']:.3f} s of CPU)"
                  for run in runs]
    row.notes.append(f"other processes used {ex.others:.1f} cores meanwhile")
    return [row]


ALL = [eval_vs_maps, eval_stats, eval_traffic]
