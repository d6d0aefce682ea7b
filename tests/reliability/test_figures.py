"""The figures can show a failure: the watchdog counts and names hangs (of magics, panel runs and kernel
cells), the leak check sees a stream left running, and a run with failures is written up as one, named,
and is not clean.  The table says what each number counts.

The hangs planted here are taken out of the run's figures again (they test the counting, not the package).
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import json
from contextlib import contextmanager
from typing import Iterator

import pytest
from loopback import Script

from .publish import BEGIN, END, main, markdown, problems
from .support import FIGURES, ask, current_test, run_panel, settled_leaks, snapshot


@contextmanager
def planted() -> Iterator[None]:
    """Whatever the block adds to the figures is taken out again afterwards."""
    saved = copy.deepcopy(FIGURES)
    try:
        yield
    finally:
        for name in (f.name for f in dataclasses.fields(FIGURES)):
            setattr(FIGURES, name, getattr(saved, name))


def test_a_magic_that_does_not_end_is_a_hang_counted_under_its_test_and_stopped(ip, dashscope):
    dashscope.enqueue(Script(first_byte_delay=20))
    with planted():
        with pytest.raises(AssertionError, match=r"hang: '%qwen -m qwen-plus --timeout 30 hi' did not end within 0.5 s"):
            ask(ip, "-m qwen-plus --timeout 30 hi", hang_after=0.5)
        assert FIGURES.hangs == {f"{current_test()} · %qwen -m qwen-plus --timeout 30 hi": "no end within 0.5 s"}
    assert ask(ip, "-m qwen-plus the next cell").value.complete  # the watchdog's Ctrl-C stopped it


def test_a_magic_that_ends_in_time_is_watched_and_is_no_hang(ip, dashscope):
    with planted():
        watched = FIGURES.watched
        assert ask(ip, "-m qwen-plus hi", hang_after=30).value.complete
        assert FIGURES.watched == watched + 1 and FIGURES.hangs == {}


def test_a_panel_run_that_does_not_end_is_a_hang_counted_under_its_test_and_stopped(ip, dashscope, allowance):
    allowance.connections = 4  # the panel lists the models too
    dashscope.enqueue(Script(first_byte_delay=20))
    panel = ip.magics_manager.registry["QwenWidgetMagics"].make_panel()
    panel.model.value, panel.prompt.value = "qwen-plus", "hi"
    with planted():
        watched, panel_runs = FIGURES.watched, FIGURES.panel_runs
        with pytest.raises(AssertionError, match=r"hang: '%qwen_panel run: hi' did not end within 0.5 s"):
            run_panel(panel, hang_after=0.5)
        assert FIGURES.hangs == {f"{current_test()} · %qwen_panel run: hi": "no end within 0.5 s"}
        assert (FIGURES.watched, FIGURES.panel_runs) == (watched + 1, panel_runs + 1)
    assert run_panel(panel).results[0].complete  # the watchdog's Stop ended it; the panel runs again


def test_a_kernel_cell_that_does_not_end_is_a_hang_and_the_kernel_is_interrupted(kernel):
    with planted():
        with pytest.raises(AssertionError, match=r"hang: 'import time; time.sleep\(60\)' did not end within 1 s"):
            kernel.run("import time; time.sleep(60)", timeout=1)
        assert list(FIGURES.hangs) == [f"{current_test()} · import time; time.sleep(60)"]
    assert kernel.printed("print('usable')").strip() == "usable"


def test_a_stream_left_running_on_the_package_loop_is_reported_as_a_leak(dashscope):
    """What a lost Ctrl-C leaves behind (a task that goes on past the settling time) is a leak: the fixtures
    measure before they cancel anything."""
    from qwen_magics import runner

    port = int(dashscope.url.rsplit(":", 1)[1])
    with planted():
        before = snapshot(port)
        left = asyncio.run_coroutine_threadsafe(asyncio.sleep(30), runner.background_loop())
        try:
            found = settled_leaks(lambda: snapshot(port), before, settle=0.5)
        finally:
            left.cancel()
        assert len(found) == 1 and found[0].startswith("tasks left on the package loop: [") and "sleep" in found[0]
        assert FIGURES.leaks == 1


def a_report(**changes) -> dict:
    figures = {"faults_tried": ["%%qwen · chat · cut", "%%qwen · chat · empty"], "faults_survived": ["%%qwen · chat · cut"],
               "bad_tried": ["%%qwen · -t 5"], "bad_handled": {"%%qwen · -t 5": "before sending"},
               "leak_checks": 10, "leaks": 0, "key_scans": 10, "key_chars": 2_000_000, "key_found": 0,
               "log_records": 500, "notebook_chars": 300_000, "payloads": ["script"], "html_audited": 40, "unsafe": 0,
               "load": {"requests": 1250, "injected": 125, "complete": 1120, "clear_errors": 128, "columns": 48,
                        "cells": 200, "map_rows": 1000},
               "watched": 900, "panel_runs": 40, "hangs": {"tests/reliability/test_load.py::test_x · %qwen cell 7": "no end within 30 s"}}
    report = {"tests": 3, "outcomes": {"passed": 1, "failed": 2, "skipped": 0, "xfailed": 0, "xpassed": 0},
              "failed": ["tests/reliability/test_faults.py::test_a", "tests/reliability/test_load.py::test_x"],
              "seconds": 250.4, "cores": 2, "figures": figures}
    report["figures"].update(changes)
    return report


def test_a_run_with_failures_a_lost_fault_and_a_hang_is_written_up_as_such_and_not_clean():
    report = a_report()
    table = markdown(report)
    assert "**1 of 2 survived**" in table and "not survived: `%%qwen · chat · empty`" in table
    assert "**1 hang**: `tests/reliability/test_load.py::test_x · %qwen cell 7` (no end within 30 s)" in table
    assert "900 runs watched (40 of them panel runs): **1 hang**" in table
    assert table.endswith("3 tests (1 passed, 2 failed), 250 s on this machine (2 cores). Failed: "
                          "`tests/reliability/test_faults.py::test_a`, `tests/reliability/test_load.py::test_x`.")
    assert [line.split(":")[0] for line in problems(report)] == ["2 tests failed", "1 fault not survived", "1 hang"]


def test_the_table_says_what_each_number_counts():
    table = markdown(a_report())
    assert "2.0 MB in 10 scans (after each test: its outputs, log records, reprs and errors, or its kernel's " \
           "messages)" in table and " tests, 500 log records" not in table
    assert "a 1,000-row `%%qwen_map` at concurrency 16" in table
    assert "1,248 runs (48 columns, 200 cells, 1,000 map rows) making 1,250 requests, 125 of them" in table
    assert "every magic run in-process, every panel run and every cell in a kernel" in table
    assert "900 runs watched (40 of them panel runs): **1 hang**" in table


def a_clean_report() -> dict:
    report = a_report(faults_survived=["%%qwen · chat · cut", "%%qwen · chat · empty"], hangs={})
    report.update(failed=[], outcomes={"passed": 3})
    return report


def test_a_clean_run_has_no_problems():
    assert problems(a_clean_report()) == []
    assert "**0 hangs**" in markdown(a_clean_report())


@pytest.mark.parametrize("figure, line", [("key_found", "1 fragments of the key found"),
                                          ("unsafe", "1 executable or injected elements"), ("leaks", "1 leaks found")])
def test_a_key_fragment_an_unsafe_element_or_a_leak_is_not_clean(figure, line):
    report = a_clean_report()
    report["figures"][figure] = 1
    assert problems(report) == [line]


def test_publish_rewrites_only_the_section_between_the_markers(tmp_path, capsys):
    readme = tmp_path / "README.md"
    before, after = "# Title\n\nText above.\n\n", "\n\n## Next\n\nText below.\n"
    readme.write_text(f"{before}{BEGIN}\nold figures\n{END}{after}", encoding="utf-8")
    figures = tmp_path / "figures.json"
    figures.write_text(json.dumps(a_report()), encoding="utf-8")
    assert main(["--figures", str(figures), "--readme", str(readme)]) == 0
    text = readme.read_text(encoding="utf-8")
    assert text == f"{before}{BEGIN}\n{markdown(a_report())}\n{END}{after}"
    assert "not clean: 3 problems" in capsys.readouterr().out
    assert main(["--figures", str(tmp_path / "none.json"), "--readme", str(readme)]) == 1
    assert "run `python -m pytest tests/reliability` first" in capsys.readouterr().err
    assert readme.read_text(encoding="utf-8") == text
