"""How long %%qwen_eval's scoring, statistics and tables take for 100,000 answers (target: under 1 s).

    python benchmarks/evaluate_stats.py

Not a timed test; ``benchmarks/run.py`` runs :func:`measure` in a kernel as
measurement 14 (:mod:`evaluate`).  It builds an evaluation's
answers in memory (10 settings x 10,000 rows of sums, each answered once;
then 10 settings x 5,000 rows x 2 repeats, whose row scores are not 0/1 and
get bootstrap intervals) and times scoring every answer with the ``number``
scorer, then the statistics and the ``.table`` and ``.answers`` DataFrames,
then the significance sentence (a paired test).  scipy and pandas are imported,
and the made-up answers go through one garbage collection, before the clock
starts (in a kernel, a run's answers arrive over minutes; built at once, their
first full collection would land in the timed part).  Nothing is sent.
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import sys
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from qwen_magics.datamap import run as datamap  # noqa: E402
from qwen_magics import events as ev  # noqa: E402
from qwen_magics.evaluation import run  # noqa: E402
from qwen_magics.evaluation.report import Evaluation  # noqa: E402
from qwen_magics.evaluation.scorers import scorer_for  # noqa: E402
from qwen_magics.result import Result  # noqa: E402
from qwen_magics.options.settings import expand  # noqa: E402


def evaluation(settings: int, rows: int, repeats: int, seed: int = 0) -> run.Plan:
    """An evaluation whose every request has been answered: a sum, right with a probability that falls with t."""
    rng = random.Random(seed)
    temperatures = [f"{0.2 * s:.1f}" for s in range(settings)]
    choices = expand({"temperature": temperatures}, grid=False)
    values = [{"a": i, "b": i % 97, "total": i + i % 97} for i in range(rows)]
    data = datamap.Rows(values, values, ["a", "b", "total"], [f"q{i}" for i in range(rows)])
    units, outcomes = [], []
    for repeat in range(repeats):
        for row in range(rows):
            for s in range(settings):
                units.append(run.Unit(s, row, repeat))
                right = rng.random() < 0.95 - 0.05 * s
                total = values[row]["total"] + (0 if right else 1)
                outcomes.append(Result(model="qwen-flash", parameters={}, text=f"{values[row]['a']} + "
                                       f"{values[row]['b']} = {total}", usage=ev.Usage(12, 6, 0, 0), state="complete",
                                       elapsed=0.4))
    request = SimpleNamespace(model="qwen-flash")
    job = datamap.Job(data, [request] * len(units), [""] * len(units), [""] * len(units), "bench", "text",
                      outcomes=outcomes)
    args = [SimpleNamespace(temperature=float(t), model="qwen-flash") for t in temperatures]
    return run.Plan(job, units, choices, args, data, rows, "total", scorer_for("number", {}), repeats)


def measure(settings: int, rows: int, repeats: int) -> dict[str, float]:
    plan = evaluation(settings, rows, repeats)
    gc.collect()  # the answers made up here are a run's, gathered over its minutes: their collection is not timed
    started, cpu = time.perf_counter(), time.process_time()
    scored = run.score_all(plan)
    after_scoring = time.perf_counter()
    result = Evaluation(plan, scored)
    after_table = time.perf_counter()
    sentence = result.sentence()
    done = time.perf_counter()
    return {"answers": len(scored), "scoring": after_scoring - started, "statistics and tables": after_table -
            after_scoring, "sentence": done - after_table, "total": done - started,
            "cpu": time.process_time() - cpu, "line": sentence}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args()
    measure(2, 50, 1)  # scipy and pandas imported first: a kernel imports them once, at its first evaluation
    worst = 0.0
    for settings, rows, repeats in ((10, 10_000, 1), (10, 5_000, 2)):
        times = measure(settings, rows, repeats)
        worst = max(worst, times["total"])
        print(f"{times['answers']:,} answers ({settings} settings x {rows:,} rows x {repeats} repeats): "
              f"scoring {times['scoring']:.3f} s, statistics and tables {times['statistics and tables']:.3f} s, "
              f"sentence {times['sentence']:.3f} s, total {times['total']:.3f} s ({times['cpu']:.3f} s of CPU)")
        print(f"  {times['line']}")
    print(f"target: under 1 s for 100,000 answers: {'met' if worst < 1 else 'missed'} (worst {worst:.3f} s; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
    return 0 if worst < 1 else 1


if __name__ == "__main__":
    raise SystemExit(main())
