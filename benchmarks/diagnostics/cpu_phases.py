"""How fast each vCPU of this machine runs, tenth of a second by tenth of a second.

    python benchmarks/diagnostics/cpu_phases.py               # 6 s, every vCPU at once
    python benchmarks/diagnostics/cpu_phases.py --seconds 20

Some virtual machines run each vCPU at one of two speeds, about 2x apart, switching every second or few,
whatever runs inside the machine (no steal time shows in /proc/stat).  A run of measurement 1 then lands in
a fast phase, a slow one or across both, which is why wall-time ratios need many alternated pairs there and
why 1a is decided by instruction counts.

This times one fixed piece of Python work (a 50,000-step loop) over and over, in one process pinned to each
vCPU, all at once; it prints a letter per 100 ms (F: within 25% of the fastest time seen, S: 1.6x it or
slower, m: between), and for each vCPU the median time of the work and the shares of time it spent fast and
slow.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

FAST, SLOW = 1.25, 1.6  # times the fastest piece of work seen: at full speed, at half speed or worse
BIN = 0.1


def _work(steps: int = 50_000) -> int:
    total = 0
    for i in range(steps):
        total += i
    return total


def _child(cpu: int, start: float, seconds: float) -> None:
    """Pinned to ``cpu``: from wall-clock ``start``, time the work for ``seconds``; print [[offset, duration], ...]."""
    os.sched_setaffinity(0, {cpu})
    while time.time() < start:
        time.sleep(0.001)
    out = []
    while (now := time.time()) < start + seconds:
        t0 = time.perf_counter()
        _work()
        out.append((now - start, time.perf_counter() - t0))
    print(json.dumps(out))


def sample(seconds: float) -> dict[int, list[tuple[float, float]]]:
    """Every vCPU this process may use, timed at once for ``seconds``: cpu -> [(offset, duration), ...]."""
    cpus = sorted(os.sched_getaffinity(0))
    start = time.time() + 0.5  # every child started and pinned before the first piece of work
    children = {cpu: subprocess.Popen([sys.executable, __file__, "--child", str(cpu), str(start), str(seconds)],
                                      stdout=subprocess.PIPE, text=True) for cpu in cpus}
    return {cpu: [tuple(x) for x in json.loads(child.communicate(timeout=seconds + 30)[0])]
            for cpu, child in children.items()}


def fastest(samples: dict[int, list[tuple[float, float]]]) -> float:
    """The shortest time the work took on any vCPU: the reference for full speed."""
    return min(d for runs in samples.values() for _, d in runs)


def shares(samples: dict[int, list[tuple[float, float]]]) -> dict[int, tuple[float, float]]:
    """cpu -> (share of the time at full speed, share at half speed or worse), against the fastest seen anywhere."""
    top = fastest(samples)
    out = {}
    for cpu, runs in samples.items():
        total = sum(d for _, d in runs) or 1.0
        out[cpu] = (sum(d for _, d in runs if d < FAST * top) / total,
                    sum(d for _, d in runs if d >= SLOW * top) / total)
    return out


def describe(samples: dict[int, list[tuple[float, float]]]) -> str:
    """``cpu0 1.45 ms, fast 100% · cpu1 2.61 ms, fast 40%, slow 55%``: median time of the work, and the shares.

    The shares are against the fastest time seen in the sample, so a sample spent wholly at the slow
    speed reads as "fast 100%"; the median time tells which speed that was.
    """
    parts = []
    for cpu, (fast, slow) in shares(samples).items():
        median = statistics.median(d for _, d in samples[cpu])
        parts.append(f"cpu{cpu} {median * 1000:.2f} ms, fast {fast:.0%}"
                     + (f", slow {slow:.0%}" if slow >= 0.005 else ""))
    return " · ".join(parts)


def timeline(runs: list[tuple[float, float]], fastest: float) -> str:
    """One letter per ``BIN`` seconds: F, m or S by the mean duration of the work in it."""
    bins: dict[int, list[float]] = {}
    for offset, duration in runs:
        bins.setdefault(int(offset / BIN), []).append(duration)
    letters = []
    for _, durations in sorted(bins.items()):
        mean = sum(durations) / len(durations)
        letters.append("F" if mean < FAST * fastest else "S" if mean >= SLOW * fastest else "m")
    return "".join(letters)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6.0, help="how long to watch (default 6)")
    parser.add_argument("--child", nargs=3, metavar=("CPU", "START", "SECONDS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(int(args.child[0]), float(args.child[1]), float(args.child[2]))
        return 0
    samples = sample(args.seconds)
    top = fastest(samples)
    print(f"fastest piece of work {top * 1000:.2f} ms; one letter per {BIN * 1000:.0f} ms "
          f"(F full speed, S half speed or slower, m between)")
    for cpu, runs in samples.items():
        print(f"cpu{cpu} {timeline(runs, top)}")
    print(describe(samples))
    return 0


if __name__ == "__main__":
    sys.exit(main())
