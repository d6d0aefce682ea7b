"""Load: many requests at once and many in a row, with random faults in a tenth of them.

The loopback server injects a fault (a broken stream, an HTTP error, a stall) into each request with
probability 0.1, seeded so a run is repeatable.  Every request must end in a complete answer or one
clear line, nothing may hang, and nothing may pile up: threads, tasks and connections stay bounded.
"""

from __future__ import annotations

import http.client
import json
import random
from collections import Counter

import pytest
from loopback import Script

from .support import (APIS, FAST_RETRY, FIGURES, assert_clear_line, ask, ctrl_c_when, generation_requests,
                      settled_leaks, snapshot, wait_for)

RATE = 0.10
TEXT = "alpha beta gamma delta epsilon"
FAULTS = ([Script(reasoning="", text=TEXT, chunk_chars=6, fault=fault, fault_after=2)
           for fault in ("cut", "reset", "no_finish", "malformed", "empty", "moderation_mid")]
          + [Script(status=status, headers=FAST_RETRY) for status in (500, 503, 429)]
          + [Script(reasoning="", text=TEXT, chunk_chars=6, fault="stall", fault_after=2, stall_seconds=1.5)])
PACED = Script(reasoning="", text="word " * 60, chunk_chars=10, chunk_delay=0.01)  # 30 pieces over 0.3 s


def seed_injecting(faults: int, draws: int) -> int:
    """The first seed with which the server injects exactly ``faults`` faults in its first ``draws`` requests."""
    for seed in range(1000):
        rng, hits = random.Random(seed), 0
        for _ in range(draws):
            if rng.random() < RATE:
                rng.choice(FAULTS)
                hits += 1
        if hits == faults:
            return seed
    raise AssertionError("no such seed")


def record(results_complete: int, clear: int, server) -> None:
    FIGURES.load["requests"] += len(generation_requests(server))
    FIGURES.load["injected"] += len(server.injected)
    FIGURES.load["complete"] += results_complete
    FIGURES.load["clear_errors"] += clear


def test_the_loopback_injects_seeded_faults_into_about_a_tenth_of_requests(dashscope):
    host, port = dashscope.url.rsplit("/", 1)[1].split(":")
    statuses = []
    for seed in (7, 7):
        dashscope.reset()
        dashscope.inject_faults(RATE, [Script(status=500)], seed=seed)
        connection = http.client.HTTPConnection(host, int(port), timeout=10)
        run = []
        for _ in range(300):
            body = json.dumps({"model": "qwen-plus", "messages": [{"role": "user", "content": "hi"}]})
            connection.request("POST", "/compatible-mode/v1/chat/completions", body,
                               {"Authorization": f"Bearer {next(iter(dashscope.valid_keys))}",
                                "Content-Type": "application/json"})
            response = connection.getresponse()
            response.read()
            run.append(response.status)
        connection.close()
        assert run.count(500) == len(dashscope.injected)
        statuses.append(run)
    assert statuses[0] == statuses[1]  # seeded: the same faults in the same places
    assert 15 <= statuses[0].count(500) <= 45  # about 10% of 300


@pytest.mark.parametrize("api", APIS)
def test_sixteen_columns_at_once_with_random_faults_each_end_complete_or_in_one_clear_line(ip, dashscope,
                                                                                          allowance, api):
    allowance.connections = 18  # the client keeps the 16 connections it opened at once
    dashscope.inject_faults(RATE, FAULTS, seed=seed_injecting(2, 16), otherwise=PACED)
    asked = ask(ip, f"--api {api} -m qwen-plus -n 16 --concurrency 16 --timeout 1", "under load",
                magic="qwen_compare", hang_after=30)  # longer is a hang: counted, named and failed
    assert asked.error is None
    results = [column.result for column in asked.value.columns]
    assert len(results) == 16 and all(r is not None and r.state != "streaming" for r in results)
    for result in results:
        if result.complete:
            assert result.text == "word " * 60
        else:
            assert result.state == "incomplete"
            assert_clear_line(result.error)
    requests = generation_requests(dashscope)
    peak = max(sum(1 for other in requests if other.started <= r.started < other.finished) for r in requests)
    # more at once than the comparison's default of 4: --concurrency 16 took effect (how many more overlap
    # depends on how busy the machine is while the 0.3 s streams run)
    assert peak > 4, f"only {peak} requests were open at once"
    assert len(dashscope.injected) >= 2
    FIGURES.load["columns"] += 16
    record(sum(r.complete for r in results), sum(not r.complete for r in results), dashscope)


ROUND = {  # what one round runs on every protocol: (script, when to press Ctrl-C)
    "cut": (FAULTS[0], None), "reset": (FAULTS[1], None), "malformed": (FAULTS[3], None),
    "moderation": (FAULTS[5], None), "HTTP 500": (Script(status=500, headers=FAST_RETRY, repeat=3), None),
    "Ctrl-C": (Script(reasoning="", text="word " * 100, chunk_chars=5, fault="stall", fault_after=4, stall_seconds=3),
               lambda r: r and len(r.text) >= 20),  # pressed while the answer pauses (see the race in test_faults)
    "fine": (Script(), None),
}


def test_repeating_every_fault_on_every_protocol_grows_nothing(ip, dashscope, allowance):
    """Pools fill in the first round; after that, rounds of faults leave no more threads, tasks or sockets."""
    allowance.connections = 6
    port = int(dashscope.url.rsplit(":", 1)[1])
    after_first = None
    for round_ in range(3):
        for api in APIS:
            for name, (script, ready) in ROUND.items():
                dashscope.reset()
                dashscope.enqueue(script)
                ip.user_ns["_qwen"] = None
                with ctrl_c_when(lambda: ready and ready(ip.user_ns.get("_qwen")), delay=0.2):
                    asked = ask(ip, f"--api {api} -m qwen-plus {name}")
                assert (asked.error is None) is (name == "fine"), (api, name, asked.error)
        if round_ == 0:
            after_first = wait_for(lambda: (now := snapshot(port))["tasks"] == [] and now, 5, "the first round to end")
    assert settled_leaks(lambda: snapshot(port), after_first, connections=0) == []


def test_two_hundred_cells_in_a_real_kernel_with_random_faults_never_hang_and_leave_nothing_behind(
        kernel, dashscope, allowance):
    allowance.connections = 4  # one client per protocol for --timeout 1
    dashscope.inject_faults(RATE, FAULTS, seed=seed_injecting(20, 200))
    outcomes, early = Counter(), None
    for i in range(200):
        api = APIS[i % 3]
        cell = kernel.run(f"%qwen --api {api} -m qwen-plus --timeout 1 cell {i}", timeout=30)  # longer: a hang
        if cell.status == "ok":
            assert cell.visible[-1].startswith("qwen-plus · ") and " incomplete: " not in cell.visible[-1]
            outcomes["complete"] += 1
        else:
            assert_clear_line(cell.one_error_line())
            outcomes["clear"] += 1
        if i == 29:
            early = kernel.snapshot()
    # no growth from cell 30 to cell 200, once the run log's writer thread (it ends a second after its last row)
    # and the last cell's connections had their time to wind down
    assert settled_leaks(kernel.snapshot, early, connections=0) == []
    assert len(dashscope.injected) >= 20 and outcomes["clear"] >= 10
    FIGURES.load["cells"] += 200
    record(outcomes["complete"], outcomes["clear"], dashscope)


def test_a_thousand_row_map_with_random_faults_answers_or_explains_every_row_and_loses_none(ip, dashscope, allowance):
    """%%qwen_map over 1,000 rows while a tenth of the requests fail: each row ends answered or failed with its
    one line (no row lost, none left "not run"), and the end line counts the failures by kind."""
    allowance.connections = 18  # the client keeps the connections the map opened at once
    dashscope.inject_faults(RATE, FAULTS, seed=3, otherwise=Script(reasoning="", text=TEXT))
    ip.user_ns["rows"] = [f"row {i}" for i in range(1000)]
    asked = ask(ip, "rows -m qwen-plus --no-thinking --concurrency 16 --timeout 1", "Answer {item}",
                magic="qwen_map", hang_after=240)
    assert asked.error is None
    frame = asked.value
    assert len(frame) == 1000 and list(frame["item"]) == ip.user_ns["rows"]
    assert set(frame["state"]) <= {"complete", "failed"}  # nothing lost, nothing left unrun
    answered = frame[frame["state"] == "complete"]
    assert (answered["answer"] == TEXT).all()
    failed = frame[frame["state"] == "failed"]
    for error in failed["error"]:
        assert_clear_line(error)
    assert len(dashscope.injected) >= 50  # about a tenth of the requests (retries included) were faulted
    assert 0 < len(failed) < 150
    end = [o["data"]["text/plain"] for o in ip.display_pub.outputs if "qwen-map" in o["data"].get("text/html", "")]
    assert end[-1].splitlines()[-1].startswith(f"1,000 rows: {len(answered):,} answered, {len(failed):,} failed (")
    FIGURES.load["map_rows"] += 1000
    record(len(answered), len(failed), dashscope)
