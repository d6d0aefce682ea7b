"""The six measurements; each starts its own kernel(s) and returns rows for the table.

Every timing is taken inside the kernel (``time.perf_counter`` around the work)
unless it is about what the front end sees, which is timed here on arrival of
the iopub messages.  Ratios compare runs alternated in the same kernel (see
:mod:`pairs`).
"""

from __future__ import annotations

import importlib.util
import json
import os
from typing import Callable

import instructions
from cells import COMPARE, LOCAL_PROMPT, LOCAL_RAW, MAGIC, PROBE, QWEN, SDK, SDK_SETUP, SETUP, STARTUP
from harness import DEFAULT_KEY, BenchTimeout, Kernel, LoopbackServer, Row, Script, median, settle, text_of
from pairs import QUIET, alternate, fastest_ratio, median_interval, usable

Log = Callable[[str], None]


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def _ratio(ratio: float, target: float, noisy: bool, digits: int = 3) -> str:
    """``digits`` decimals, or one more when they would round across the target (1.0504 is not 1.050 ≤ 1.05)."""
    if round(ratio, digits) == target and ratio != target:
        digits += 1
    return f"{ratio:.{digits}f}" + (" (noisy)" if noisy else "")


def _check(ok: bool, what: str) -> None:
    if not ok:
        raise RuntimeError(what)


def _value(ex) -> dict:
    return {**ex.value(), "others": ex.others}


def _calm(k: Kernel, quick: bool) -> Callable[[float], float]:
    """Before each pair: wait for a quiet moment, briefly in a quick run."""
    return lambda quiet: k.settle(quiet, 2 if quick else 5)


def stream_overhead(server: LoopbackServer, env: dict, quick: bool, log: Log) -> list[Row]:
    """1. A 4,000-chunk unthrottled answer, %%qwen vs a bare AsyncOpenAI loop: instructions, wall time, first text."""
    rows = _instructions(server, env, quick, log)
    server.reset()
    return rows + _wall_and_first(server, env, quick, log)


def _instructions(server: LoopbackServer, env: dict, quick: bool, log: Log) -> list[Row]:
    """1a: the two cells of the wall-time pairs, counted under callgrind (:mod:`instructions`)."""
    chunks = 1000 if quick else 4000
    what = (f"1a. stream overhead in instructions: `%%qwen` / bare AsyncOpenAI loop, {chunks:,} chunks unthrottled "
            f"(callgrind, all kernel threads{'; --quick: fewer chunks, so fixed costs weigh more' if quick else ''})")
    if why := instructions.missing():
        return [Row(what, f"not measured: {why}", "≤ 1.03", False)]
    log(f"  instructions, {chunks:,} chunks under callgrind:")
    got = instructions.count(server, env, ["A", "D"], chunks, log=log)
    bare, magic = got["A"][0], got["D"][0]
    ratio = magic.instructions / bare.instructions
    row = Row(what, _ratio(ratio, 1.03, False, digits=4), "≤ 1.03", ratio <= 1.03)
    extra = magic.instructions - bare.instructions
    row.notes += [f"bare loop {bare.instructions / 1e6:,.0f} M instructions, `%%qwen` {magic.instructions / 1e6:,.0f} M"
                  f" ({extra / chunks / 1e3:,.1f} k more per chunk, fixed costs and display messages included); "
                  f"`%%qwen` sent {magic.displays} display messages (update_interval {instructions.INTERVAL:g} s "
                  "under valgrind, which runs the kernel about 50 times slower)"]
    return [row]


def _wall_and_first(server: LoopbackServer, env: dict, quick: bool, log: Log) -> list[Row]:
    """1a in wall time, 1b and 1c: the two cells alternated in one kernel."""
    def runner(code: str, script: Script) -> Callable[[], dict]:
        def run() -> dict:
            server.enqueue(script)
            ex = k.execute(code)
            value = _value(ex)
            chars = len(script.text)
            _check(value["chars"] == chars, f"got {value['chars']} of {chars} characters")
            first = ex.displays()[0][0] if code is QWEN else ex.first_stream("FIRST")
            return {**value, "first": first - ex.sent}
        return run

    fast = Script(reasoning="", text=text_of(20_000), chunk_chars=5, chunk_delay=0)
    paced = Script(reasoning="", text=text_of(1_000), chunk_chars=5, chunk_delay=0.005)
    with Kernel(env) as k:
        calm = _calm(k, quick)
        k.execute(SETUP)
        k.execute(SDK_SETUP.format(base=server.url + "/compatible-mode/v1", key=DEFAULT_KEY))
        for _ in range(2):  # warm-up: imports, connections, caches
            runner(QWEN, fast)(), runner(SDK, fast)()
        log("  wall time, alternated pairs:")
        pairs = alternate(runner(QWEN, fast), runner(SDK, fast), want=5 if quick else 40, least=5,
                          most=7 if quick else 52, budget=30 if quick else 260, log=log, names=("%%qwen", "sdk"),
                          settle=calm)
        log("  paced, for the time to first output:")
        slow = alternate(runner(QWEN, paced), runner(SDK, paced), want=3 if quick else 5, least=3,
                         most=4 if quick else 8, budget=10 if quick else 30, log=log, names=("%%qwen", "sdk"),
                         settle=calm)
    used, noisy, note = usable(pairs)
    ratio = median([p.ratio() for p in used])
    low, high = median_interval([p.ratio() for p in used])
    diffs = [p.a["first"] - p.b["first"] for p in used]
    diff = median(diffs)
    bare = [p.b["elapsed"] for p in used]
    m_med, s_med = median([p.a["elapsed"] for p in used]), median(bare)
    overhead = Row(f"1a. stream overhead in wall time, for context: the same two cells, 4,000 chunks (median of "
                   f"{len(used)} alternated pairs, with its 90% bootstrap interval)",
                   f"{_ratio(ratio, 1.10, False)} ({low:.2f}–{high:.2f})" + (" (noisy)" if noisy else ""), "≤ 1.10",
                   ratio <= 1.10, noisy=noisy)
    overhead.notes += [
        f"%%qwen {m_med:.3f} s (its stream, request to last event, {median([p.a['stream'] for p in used]):.3f} s); "
        f"bare SDK loop {s_med:.3f} s (from {min(bare):.2f} to {max(bare):.2f} s); per-pair ratios "
        f"{', '.join(f'{p.ratio():.2f}' for p in used)}; fastest %%qwen run / fastest bare run "
        f"{fastest_ratio(used):.2f}; {note}"]
    first = Row("1b. time to first visible output, same unthrottled stream: `%%qwen` first display − bare loop's "
                "first chunk printed (client side)", f"{diff * 1000:+.1f} ms", "within 10 ms", abs(diff) <= 0.010,
                noisy=noisy)
    first.notes += [f"first display {_ms(median([p.a['first'] for p in used]))} after the execute request; first "
                    f"printed chunk {_ms(median([p.b['first'] for p in used]))}; per-pair differences "
                    f"{', '.join(f'{d * 1000:+.1f}' for d in diffs)} ms"]
    used, noisy, note = usable(slow)
    diff = median([p.a["first"] - p.b["first"] for p in used])
    paced_row = Row("1c. time to first visible output, paced stream (200 chunks at 5 ms): same difference",
                    f"{diff * 1000:+.1f} ms", "within 10 ms", abs(diff) <= 0.010, noisy=noisy)
    paced_row.notes += [f"first display {_ms(median([p.a['first'] for p in used]))}, first printed chunk "
                        f"{_ms(median([p.b['first'] for p in used]))} after the execute request; {note}"]
    return [overhead, first, paced_row]


def _traffic(k: Kernel, server: LoopbackServer, chunks: int, delay: float) -> dict:
    server.enqueue(Script(reasoning="", text=text_of(chunks * 5), chunk_chars=5, chunk_delay=delay))
    ex = k.execute(QWEN, timeout=300)
    value = ex.value()
    _check(value["chars"] == chunks * 5, f"got {value['chars']} of {chunks * 5} characters")
    shown = ex.displays()
    sent = sum(len(json.dumps(m["content"])) for _, m in shown)
    return {"bytes": sent, "answer": value["chars"], "messages": len(shown), "stream": value["stream"],
            "per_second": len(shown) / value["stream"], "ratio": sent / value["chars"]}


def traffic(server: LoopbackServer, env: dict, quick: bool, log: Log) -> list[Row]:
    """2. Display bytes and messages for 4,000 chunks paced and unthrottled; the bytes/answer curve."""
    sizes = (1_000, 2_000, 4_000) if quick else (1_000, 4_000, 16_000)
    with Kernel(env) as k:
        k.execute(SETUP)
        _traffic(k, server, 200, 0)  # warm-up
        paced = {n: _traffic(k, server, n, 0.001) for n in sizes}
        fast = _traffic(k, server, 4_000, 0)
    rows = []
    for label, t in (("paced ~1,000 chunks/s", paced[4_000]), ("unthrottled", fast)):
        log(f"  4,000 chunks {label}: {t}")
        rows.append(Row(f"2. front-end bytes / answer size, 4,000 chunks {label}", f"{t['ratio']:.2f}×", "≤ 5×",
                        t["ratio"] <= 5, [f"{t['bytes']:,} bytes of display messages for a "
                                          f"{t['answer']:,}-character answer streamed in {t['stream']:.2f} s"]))
        rows.append(Row(f"2. display messages per streamed second, 4,000 chunks {label}",
                        f"{t['per_second']:.1f}/s", "≤ 25/s", t["per_second"] <= 25,
                        [f"{t['messages']} display messages over {t['stream']:.2f} s"]))
    ratios = [paced[n]["ratio"] for n in sizes]
    spread = max(ratios) / min(ratios)
    curve = Row("2. bytes / answer size for " + " / ".join(f"{n // 1000}k" for n in sizes) + " chunks (paced)",
                " / ".join(f"{r:.2f}×" for r in ratios), "roughly constant (max/min ≤ 1.5)", spread <= 1.5)
    curve.notes += [f"{n:,} chunks: {paced[n]['bytes']:,} bytes, {paced[n]['messages']} messages, "
                    f"{paced[n]['stream']:.1f} s" for n in sizes]
    return rows + [curve]


def compare_concurrency(server: LoopbackServer, env: dict, quick: bool, log: Log) -> list[Row]:
    """3. Four %%qwen_compare columns vs one, the server streaming 200 × 4 chars at 5 ms per chunk."""
    text = text_of(800)

    def runner(columns: int, models: str) -> Callable[[], dict]:
        def run() -> dict:
            server.enqueue(Script(reasoning="", text=text, chunk_chars=4, chunk_delay=0.005, repeat=columns))
            value = _value(k.execute(COMPARE.format(line=f"-m {models} --no-thinking")))
            _check(value["states"] == ["complete"] * columns and value["chars"] == [800] * columns,
                   f"columns ended {value['states']} with {value['chars']} characters")
            return value
        return run

    four, one = runner(4, "qwen-plus,qwen-flash,qwen-max,qwen3.5-plus"), runner(1, "qwen-plus")
    with Kernel(env) as k:
        k.execute(SETUP)
        four(), one()  # warm-up: widgets import, connections
        server.reset()
        pairs = alternate(four, one, want=3 if quick else 5, least=3, most=4 if quick else 10,
                          budget=15 if quick else 45, log=log, names=("4 columns", "1 column"), settle=_calm(k, quick))
    served = [rec.finished - rec.started for rec in server.requests if rec.finished]
    used, noisy, note = usable(pairs)
    ratio = median([p.ratio() for p in used])
    row = Row(f"3. `%%qwen_compare` 4 columns / 1 column, wall time (median of {len(used)} alternated pairs)",
              _ratio(ratio, 1.15, noisy, digits=2), "≤ 1.15", ratio <= 1.15, noisy=noisy)
    row.notes += [f"4 columns {median([p.a['elapsed'] for p in used]):.3f} s, 1 column "
                  f"{median([p.b['elapsed'] for p in used]):.3f} s; the server's own streaming time per request "
                  f"{min(served):.2f}–{max(served):.2f} s (200 chunks × 5 ms); {note}"]
    return [row]


def startup(server: LoopbackServer, env: dict, quick: bool, log: Log) -> list[Row]:
    """4. %load_ext qwen_magics in a fresh kernel, next to import openai (and jupyter_ai_magics if present)."""
    want, most = (2, 3) if quick else (3, 6)
    cases = {"qwen": "get_ipython().run_line_magic('load_ext', 'qwen_magics')", "openai": "import openai"}
    has_jai = importlib.util.find_spec("jupyter_ai_magics") is not None
    if has_jai:
        cases["jai"] = "get_ipython().run_line_magic('load_ext', 'jupyter_ai_magics')"
    got: dict[str, list[dict]] = {name: [] for name in cases}
    for i in range(most):
        if all(sum(v["others"] < QUIET for v in values) >= want for values in got.values()):
            break
        for name, statement in cases.items():
            settle([os.getpid()], QUIET, 2 if quick else 5)  # a fresh kernel's start-up is easily disturbed
            with Kernel(env) as k:
                got[name].append(_value(k.execute(STARTUP.format(statement=statement))))
            log(f"  sample {i + 1} {name}: {got[name][-1]['seconds'] * 1000:.0f} ms, "
                f"other processes {got[name][-1]['others']:.2f} cores")
    secs, notes, noisy = {}, {}, {}
    for name, values in got.items():
        quiet = [v for v in values if v["others"] < QUIET]
        use = quiet if len(quiet) >= want else values
        secs[name], noisy[name] = median([v["seconds"] for v in use]), use is not quiet
        notes[name] = (f"{len(quiet)} of {len(values)} fresh kernels undisturbed, median of "
                       f"{'those' if use is quiet else 'all (noisy)'}; {values[-1]['modules']} modules imported")
    qwen = got["qwen"][-1]
    row = Row("4. `%load_ext qwen_magics` in a fresh kernel", _ms(secs["qwen"]), "≤ 150 ms", secs["qwen"] <= 0.150,
              [f"{notes['qwen']}, heavy ones among them: {', '.join(qwen['heavy']) or 'none'}"], noisy=noisy["qwen"],
              slower_only=True)
    return [row, Row("4. `import openai` in a fresh kernel (for scale)", _ms(secs["openai"]), "—", None,
                     [notes["openai"]]),
            Row("4. `%load_ext jupyter_ai_magics` in a fresh kernel (for scale)",
                _ms(secs["jai"]) if has_jai else "not installed", "—", None, [notes["jai"]] if has_jai else [])]


def steady_state(server: LoopbackServer, env: dict, quick: bool, log: Log) -> list[Row]:
    """5. 200 short %%qwen cells in one kernel: sockets, loop tasks, threads and RSS from run 20 to run 200."""
    total, first = 200, 20
    probes = {}
    server.reset()
    with Kernel(env) as k:
        k.execute(SETUP + PROBE)
        for i in range(1, total + 1):
            k.execute(f"%%qwen -m qwen-plus --no-thinking\nshort question number {i}")
            if i in (first, total):
                probes[i] = k.value("print('BENCH ' + _b_json.dumps(_b_probe()))")
                log(f"  after run {i}: {probes[i]}")
    a, b = probes[first], probes[total]
    grow = {key: b[key] - a[key] for key in a}
    rows = [Row(f"5. open sockets, run {first} → {total}", f"{grow['sockets']:+d}", "+0..2",
                0 <= grow["sockets"] <= 2, [f"sockets {a['sockets']} → {b['sockets']}"]),
            Row(f"5. asyncio tasks on the package loop, run {first} → {total}", f"{a['tasks']} → {b['tasks']}",
                "0", b["tasks"] == 0 and a["tasks"] == 0),
            Row(f"5. threads, run {first} → {total}", f"{grow['threads']:+d}", "+0..1", 0 <= grow["threads"] <= 1,
                [f"threads {a['threads']} → {b['threads']}"]),
            Row(f"5. RSS growth, run {first} → {total}", f"{grow['rss'] / 2**20:+.1f} MB", "≤ 20 MB",
                grow["rss"] <= 20 * 2**20, [f"RSS {a['rss'] / 2**20:.1f} → {b['rss'] / 2**20:.1f} MB (after gc.collect())"])]
    return rows


def local_overhead(server: LoopbackServer, env: dict, quick: bool, log: Log) -> list[Row]:
    """6. %%qwen -m local:0.5b vs raw llama-cpp-python streaming the same prompt and settings, alternated."""
    from qwen_magics.local.model import MODELS, is_assembled

    if not is_assembled(MODELS["0.5b"]):
        return [Row("6. local backend overhead", "skipped: local 0.5b not installed", "≤ 1.05", None)]
    magic = MAGIC.format(magic="qwen", line="-m local:0.5b -t 0 --seed 1 --max-tokens 64", prompt=LOCAL_PROMPT,
                         extra=', "text": _qwen.text')
    raw = LOCAL_RAW.format(prompt=LOCAL_PROMPT)
    limit = 20  # seconds (a run takes about 3): one this slow was crushed by other work, it is no measurement

    def runner(code: str) -> Callable[[], dict]:
        def run() -> dict:
            try:
                return _value(k.execute(code, timeout=limit))
            except BenchTimeout:
                return {"elapsed": float(limit), "others": float("inf"), "text": None, "tokens": 0, "pieces": 0}
        return run

    with Kernel(env) as k:
        k.execute(SETUP)
        k.execute(magic, timeout=120)  # warm-up: load the model once
        logprobs = _local_logprobs(k, runner, quick, log)
        if runner(raw)()["text"] is None and quick:  # crushed by other work: no time for that in a quick run
            return [Row("6. local backend: `%%qwen -m local:0.5b` / raw llama-cpp-python", "not measured", "≤ 1.05",
                        False, [f"the warm-up raw run took over {limit} s: the machine is too busy"], noisy=True),
                    logprobs]
        pairs = alternate(runner(magic), runner(raw), want=3 if quick else 9, least=3, most=3 if quick else 14,
                          budget=30 if quick else 200, log=log, names=("%%qwen", "raw"), settle=_calm(k, quick))
    used, noisy, note = usable(pairs)
    ratio = median([p.ratio() for p in used])
    low, high = median_interval([p.ratio() for p in used])
    both = [p for p in used if p.a["text"] is not None and p.b["text"] is not None]
    same = "not compared" if not both else "yes" if all(p.a["text"] == p.b["text"] for p in both) else "no"
    row = Row(f"6. local backend: `%%qwen -m local:0.5b` / raw llama-cpp-python, 64 tokens at t=0 "
              f"(median of {len(used)} alternated pairs)", _ratio(ratio, 1.05, noisy),
              "≤ 1.05", ratio <= 1.05, noisy=noisy)
    row.notes += [f"%%qwen {median([p.a['elapsed'] for p in used]):.2f} s ({used[-1].a['tokens']} tokens), raw "
                  f"{median([p.b['elapsed'] for p in used]):.2f} s ({used[-1].b['pieces']} pieces), same text: "
                  f"{same}; per-pair ratios {', '.join(f'{p.ratio():.2f}' for p in used)}; fastest %%qwen "
                  f"run / fastest raw run {fastest_ratio(used):.2f}; 90% bootstrap interval of the median "
                  f"{low:.2f}–{high:.2f}; {note}"]
    return [row, logprobs]


def _local_logprobs(k: Kernel, runner: Callable[[str], Callable[[], dict]], quick: bool, log: Log) -> Row:
    """6b. The same local cell with and without ``--logprobs 5``, alternated: what the top-5 per token costs."""
    line = "-m local:0.5b -t 0 --seed 1 --max-tokens 64"
    plain, with_logprobs = (MAGIC.format(magic="qwen", line=line + extra, prompt=LOCAL_PROMPT,
                                         extra=', "text": _qwen.text') for extra in ("", " --logprobs 5"))
    pairs = alternate(runner(with_logprobs), runner(plain), want=3 if quick else 9, least=3,
                      most=3 if quick else 14, budget=30 if quick else 200, log=log, names=("--logprobs 5", "plain"),
                      settle=_calm(k, quick))
    used, noisy, note = usable(pairs)
    rates = [_rate(p.b) / _rate(p.a) if _rate(p.a) else float("inf") for p in used]
    ratio = median(rates)
    same = all(p.a["text"] is not None and p.a["text"] == p.b["text"] for p in used)
    row = Row(f"6b. local `--logprobs 5`: tokens/s of the plain run / tokens/s with top-5 logprobs, 64 tokens at "
              f"t=0 (median of {len(used)} alternated pairs)", _ratio(ratio, 1.2, noisy, digits=2), "≤ 1.2",
              ratio <= 1.2, noisy=noisy)
    row.notes += [f"--logprobs 5 {median([_rate(p.a) for p in used]):.1f} tokens/s, plain "
                  f"{median([_rate(p.b) for p in used]):.1f} tokens/s, same text: "
                  f"{'yes' if same else 'no'}; per-pair ratios {', '.join(f'{r:.2f}' for r in rates)}; {note}"]
    return row


def _rate(run: dict) -> float:
    """Output tokens per second of streaming; 0 for a run that timed out."""
    return run["tokens"] / run["stream"] if run.get("stream") else 0.0


ALL = [stream_overhead, traffic, compare_concurrency, startup, steady_state, local_overhead]
