"""Qwen's tokenizer: its first load, and counting 10,000 rows of 100 characters once loaded.

    python benchmarks/tokens.py            # 5 fresh processes; prints the medians and the targets

Each measurement runs in a fresh Python process (the first load is once per process), timed inside it with
``time.perf_counter()``.  The rows mix Chinese, English and code, as a dataset to be mapped might.  Targets:
first load <= 1 s; counting <= 1 s after the load; ``import qwen_magics`` loads nothing of the tokenizer.
Exit status 0 when the medians meet the targets, 1 otherwise.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNS = 5
LOAD_TARGET = COUNT_TARGET = 1.0

PROBE = r"""
import json, sys, time
t0 = time.perf_counter()
import qwen_magics
imported = time.perf_counter() - t0
assert "tiktoken" not in sys.modules
from qwen_magics.tokens import qwen
t0 = time.perf_counter()
qwen.encoding()
load = time.perf_counter() - t0
base = "今天天气很好，我们去公园散步吧。The quick brown fox jumps over the lazy dog. def f(x): return x * 2  # 代码\n"
rows = [(base * 3)[i % 40:i % 40 + 100] for i in range(10_000)]
assert all(len(r) == 100 for r in rows)
t0 = time.perf_counter()
counts = qwen.count_many(rows)
count = time.perf_counter() - t0
print(json.dumps({"import": imported, "load": load, "count": count, "tokens": sum(counts)}))
"""


def main() -> int:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    runs = [json.loads(subprocess.run([sys.executable, "-c", PROBE], env=env, check=True, capture_output=True,
                                      text=True).stdout) for _ in range(RUNS)]
    load = statistics.median(r["load"] for r in runs)
    count = statistics.median(r["count"] for r in runs)
    imported = statistics.median(r["import"] for r in runs)
    print(f"import qwen_magics            {imported * 1000:7.1f} ms (tokenizer not loaded)")
    print(f"tokenizer first load          {load:7.3f} s   target <= {LOAD_TARGET} s  "
          f"{'met' if load <= LOAD_TARGET else 'MISSED'}")
    print(f"count 10,000 rows x 100 chars {count:7.3f} s   target <= {COUNT_TARGET} s  "
          f"{'met' if count <= COUNT_TARGET else 'MISSED'}  ({runs[0]['tokens']:,} tokens)")
    print(f"medians of {RUNS} fresh processes; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    return 0 if load <= LOAD_TARGET and count <= COUNT_TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
