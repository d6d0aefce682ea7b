"""The sampling lab's speed on the local 0.5B: one lab step against one plain llama.cpp token, and a slider move.

    python benchmarks/lab.py [--tokens 24] [--rounds 3]

- **step**: ``LabWidget.step()`` (the model evaluates the token in a short-lived thread, the lab copies the
  151,936 logits, shapes them with the settings and the widget redraws its bars, stages and text), against the
  time between two tokens of ``Llama.generate`` on the same model with the same settings, run in a thread as the
  local backend runs it.  Rounds alternate (plain, lab, plain, lab, ...) so drift hits both; target <= 1.2x.
- **entropy**: what ``--logprobs K`` on the local model adds per token to record the whole vocabulary's entropy
  (the dot product of the exponentials it already computes with the logits), against a plain token; target <= 5%.
- **reshape**: one slider move (temperature, with top_p 0.9 on so the stage sorts the whole vocabulary),
  from the slider's new value to the redrawn widget; target <= 50 ms.

Prints one JSON line with the medians.  The machine's other load shows in both sides of the ratio.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from qwen_magics.local.model import load, resolve  # noqa: E402
from qwen_magics.sampling.lab import open_lab  # noqa: E402
from qwen_magics.widgets.lab import LabWidget  # noqa: E402

PROMPT = "Write a short story about a lighthouse keeper who finds a message in a bottle."
SETTINGS = {"temp": 1.0, "top_k": 0, "top_p": 1.0, "min_p": 0.0, "typical_p": 1.0, "repeat_penalty": 1.0}


def plain_token_times(n: int) -> list[float]:
    """Seconds between successive tokens of ``Llama.generate`` in a worker thread (the first excluded)."""
    model = load(resolve("local:0.5b"))
    times: list[float] = []

    def work() -> None:
        with model.lock:
            llm = model.llm
            llm.reset()
            llm.set_seed(1)
            tokens = llm.generate(llm.tokenize(PROMPT.encode(), special=True), **SETTINGS)
            last = None
            for i, _ in enumerate(tokens):
                now = time.perf_counter()
                if last is not None:
                    times.append(now - last)
                last = now
                if i == n:
                    break
            tokens.close()

    worker = threading.Thread(target=work)
    worker.start()
    worker.join()
    return times


def lab_step_times(n: int) -> list[float]:
    widget = LabWidget(open_lab(PROMPT, "local:0.5b", seed=1))
    times = []
    for _ in range(n):
        started = time.perf_counter()
        widget.step()
        times.append(time.perf_counter() - started)
    return times


def reshape_times(moves: int = 20) -> list[float]:
    widget = LabWidget(open_lab(PROMPT, "local:0.5b", seed=1, top_p=0.9))
    times = []
    for i in range(moves):
        started = time.perf_counter()
        widget.sliders["temperature"].value = round(0.3 + 0.05 * (i % 20), 2)
        times.append(time.perf_counter() - started)
    return times


def entropy_times(runs: int = 200) -> list[float]:
    """The entropy's extra work in ``backends.local._Alternatives.entry``, on real logits."""
    import math

    import numpy as np

    lab = open_lab(PROMPT, "local:0.5b")
    logits = lab.logits
    shifted = logits - float(logits.max())
    weights = np.exp(shifted)
    total = float(weights.sum(dtype=np.float64))
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        (math.log(total) - float(np.dot(weights, shifted)) / total) / math.log(2)
        times.append(time.perf_counter() - started)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=24)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    plain: list[float] = []
    lab: list[float] = []
    plain_token_times(4)  # warm: the model loaded, the piece table made
    lab_step_times(2)
    for _ in range(args.rounds):
        plain += plain_token_times(args.tokens)
        lab += lab_step_times(args.tokens)
    reshape = reshape_times()
    entropy = entropy_times()
    result = {
        "plain_token_ms": round(statistics.median(plain) * 1000, 1),
        "lab_step_ms": round(statistics.median(lab) * 1000, 1),
        "step_ratio": round(statistics.median(lab) / statistics.median(plain), 2),
        "reshape_ms_median": round(statistics.median(reshape) * 1000, 1),
        "reshape_ms_max": round(max(reshape) * 1000, 1),
        "entropy_ms": round(statistics.median(entropy) * 1000, 3),
        "entropy_share_of_token": round(statistics.median(entropy) / statistics.median(plain), 4),
    }
    result["step_target_met"] = result["step_ratio"] <= 1.2
    result["reshape_target_met"] = result["reshape_ms_median"] <= 50
    result["entropy_target_met"] = result["entropy_share_of_token"] <= 0.05
    print(json.dumps(result))


if __name__ == "__main__":
    main()
