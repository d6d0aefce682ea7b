"""Token probabilities kept in the run log: a --logprobs run reopens with %qwen_probs and %qwen_log show in a
new kernel (two real kernels against the loopback server), and an older log gains the column."""

from __future__ import annotations

import math
import sqlite3

import nbformat
import pytest
from IPython.core.error import UsageError
from nbclient import NotebookClient

from qwen_magics.runlog import RunLog


def execute(tmp_path, *sources: str) -> list[dict[str, str]]:
    """Run cells in a fresh kernel; each cell's outputs by mime type (printed text as text/plain)."""
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])
    NotebookClient(nb, timeout=90, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    cells = []
    for cell in nb.cells:
        shown: dict[str, str] = {}
        for output in cell.outputs:
            for mime, value in {"text/plain": output.get("text", ""), **output.get("data", {})}.items():
                shown[mime] = shown.get(mime, "") + str(value)
        cells.append(shown)
    return cells


def test_a_logprobs_run_reopens_in_a_new_kernel(dashscope, tmp_path, run_log_in_a_temporary_folder):
    execute(tmp_path, "%load_ext qwen_magics", "%%qwen -m qwen-plus --logprobs 3\nWhat is entropy, <b>here</b>?")
    [record] = RunLog(run_log_in_a_temporary_folder).recent(1)
    assert len(record.logprobs) > 3
    token, logprob, top, entropy = record.logprobs[0]
    assert token == top[0][0] and logprob == top[0][1] and len(top) == 3 and entropy is None

    _, probs, shown, plain = execute(
        tmp_path, "%load_ext qwen_magics", f"%qwen_probs {record.id[:8]} --position 1",
        f"%qwen_log show {record.id[:8]}",
        "import qwen_magics\nr = qwen_magics.log().get(%r)\nprint(len(r.logprobs))" % record.id)
    assert "application/vnd.jupyter.widget-view+json" in probs
    assert "position 1" in probs["text/html"] and "renormalised over the top K = 3" in probs["text/html"]
    page = shown["text/html"]
    assert "Token probabilities (" in page and "Entropy of the next-token distribution" in page
    assert "approximation" in page and "<b>here</b>" not in page and "&lt;b&gt;here&lt;/b&gt;" in page
    assert plain["text/plain"].strip() == str(len(record.logprobs))


def test_a_run_without_logprobs_or_an_unknown_id_is_one_clear_line(ip, run_log_in_a_temporary_folder):
    ip.run_cell_magic("qwen", "-m qwen-plus", "No probabilities asked.")
    ip.run_line_magic("qwen_log", "")
    [record] = RunLog(run_log_in_a_temporary_folder).recent(1)
    assert record.logprobs == []
    with pytest.raises(UsageError, match=f"Run {record.id[:8]} has no token probabilities"):
        ip.run_line_magic("qwen_probs", record.id[:8])
    with pytest.raises(UsageError, match="No result or logged run named 'abcdef12'"):
        ip.run_line_magic("qwen_probs", "abcdef12")


def test_a_log_of_the_version_before_gains_the_column_and_keeps_its_runs(tmp_path):
    path = tmp_path / "old.db"
    RunLog(path).write({"model": "qwen-plus", "messages": [{"role": "user", "content": "old"}], "answer": "a"})
    with sqlite3.connect(path) as conn:  # made as version 2 made it: no logprobs column
        conn.execute("ALTER TABLE runs DROP COLUMN logprobs")
        conn.execute("PRAGMA user_version = 2")
    log = RunLog(path)
    [old] = log.recent(1)
    assert old.prompt == "old" and not old.logprobs
    log.write({"model": "local", "messages": [{"role": "user", "content": "new"}], "answer": "b",
               "logprobs": [["b", math.log(0.5), [["b", math.log(0.5)], ["c", math.log(0.25)]], 1.5]]})
    assert log.recent(2)[0].logprobs == [["b", math.log(0.5), [["b", math.log(0.5)], ["c", math.log(0.25)]], 1.5]]
