"""The run log wired into the package: every surface writes its run, --cache replays, %qwen_log reads.

Real parts only: the loopback server (counting requests), a real InteractiveShell with the
extension loaded, real SQLite files in temporary folders, and real kernels for the restart.
"""

from __future__ import annotations

import asyncio
import gc
import os
import re
import sqlite3
import subprocess
import sys
from datetime import date, timedelta

import nbformat
import pytest
from IPython.core.error import UsageError
from loopback import Script
from nbclient import NotebookClient
from test_runlog import file_bytes
from test_widgets import wait_for

from conftest import FAKE_KEY, outputs_text
from qwen_magics.runlog import RunLog


def records(path):
    """Every run in the log at ``path``, oldest first (after the queued ones are written)."""
    return RunLog(path).recent(1000)[::-1]


def flush(ip):
    import qwen_magics

    assert qwen_magics.log().flush(10)


def test_a_cell_writes_one_record_with_what_was_sent_and_where(ip, dashscope, run_log_in_a_temporary_folder,
                                                                 monkeypatch):
    monkeypatch.setenv("JPY_SESSION_NAME", "/home/ada/lesson.ipynb")
    result = ip.run_cell_magic("qwen", "-m qwen-plus -t 0.3 --seed 4 -c tutor -s 'Be brief.'", "What is entropy?")
    flush(ip)
    [rec] = records(run_log_in_a_temporary_folder)
    assert (rec.model, rec.protocol, rec.state, rec.finish_reason) == ("qwen-plus", "chat", "complete", "stop")
    assert rec.messages == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is entropy?"}]
    assert rec.parameters == result.parameters and rec.answer == result.text and rec.reasoning == result.reasoning
    assert (rec.input_tokens, rec.output_tokens, rec.reasoning_tokens) == (
        result.usage.input, result.usage.output, result.usage.reasoning)
    assert rec.request_id == result.request_id and rec.ttft == result.ttft and rec.elapsed == result.elapsed
    assert (rec.conversation, rec.notebook, rec.group_kind, rec.kernel_id) == ("tutor", "/home/ada/lesson.ipynb",
                                                                               None, None)
    assert rec.endpoint == "singapore"  # the region, not the URL (nor the key)


def test_a_tool_cell_is_one_record_carrying_its_tool_runs(ip, dashscope, run_log_in_a_temporary_folder):
    ip.user_ns["double"] = lambda x: 2 * x
    dashscope.enqueue(Script(tool_calls=[{"name": "double", "arguments": {"x": 21}}]))
    ip.run_line_magic("qwen", "-m qwen-plus --tools double -y double 21")
    flush(ip)
    [rec] = records(run_log_in_a_temporary_folder)
    assert [(run["name"], run["output"], run["ran"]) for run in rec.tool_runs] == [("double", "42", True)]
    assert rec.answer == "The tools returned: 42" and rec.prompt == "double 21"
    assert [m["role"] for m in rec.messages] == ["user", "assistant", "tool"]  # the whole exchange


def test_no_log_a_refused_cell_and_the_log_turned_off_write_nothing(ip, dashscope, run_log_in_a_temporary_folder):
    ip.run_cell_magic("qwen", "--no-log", "my salary is 1234")
    with pytest.raises(UsageError, match="temperature 5.0 is out of range"):
        ip.run_cell_magic("qwen", "-t 5", "refused")
    ip.run_line_magic("config", "QwenMagics.log = False")
    ip.run_cell_magic("qwen", "", "log off")
    ip.run_line_magic("config", "QwenMagics.log = True")
    ip.run_cell_magic("qwen", "", "logged")
    flush(ip)
    assert [r.prompt for r in records(run_log_in_a_temporary_folder)] == ["logged"]
    assert len(dashscope.requests) == 3
    assert b"1234" not in file_bytes(run_log_in_a_temporary_folder)


def test_comparison_columns_share_a_group_and_a_rerun_joins_it(ip, dashscope, run_log_in_a_temporary_folder):
    comparison = ip.run_cell_magic("qwen_compare", "-m qwen-plus -t 0,0.7", "Same prompt")
    comparison.start(comparison.columns[1])
    wait_for(lambda: len(dashscope.requests) == 3 and comparison.columns[1].result.state == "complete")
    ip.run_cell_magic("qwen_compare", "-m qwen-plus -t 0,0.7", "Another comparison")
    ip.run_cell_magic("qwen_compare", "-m qwen-plus -t 0,0.7 --no-log", "Not logged")
    flush(ip)
    runs = records(run_log_in_a_temporary_folder)
    assert [r.prompt for r in runs].count("Same prompt") == 3 and len(runs) == 5
    first = {r.group_id for r in runs if r.prompt == "Same prompt"}
    second = {r.group_id for r in runs if r.prompt == "Another comparison"}
    assert len(first) == len(second) == 1 and first != second
    assert {r.group_kind for r in runs} == {"comparison"}
    assert sorted(r.parameters["temperature"] for r in runs if r.prompt == "Same prompt") == [0.0, 0.7, 0.7]


def test_a_column_with_its_own_no_log_or_cache_is_refused_in_one_line(ip, dashscope):
    make = ip.magics_manager.registry["QwenWidgetMagics"].request_factory("hi")
    with pytest.raises(Exception, match=r"--no-log applies to a whole comparison.*%%qwen_compare line"):
        make("-m qwen-plus --no-log")
    with pytest.raises(Exception, match=r"--cache works in %%qwen cells, not in comparisons or the panel"):
        make("-m qwen-plus --cache")


def test_each_panel_run_is_logged_as_a_panel_run(ip, dashscope, run_log_in_a_temporary_folder):
    panel = ip.magics_manager.registry["QwenWidgetMagics"].make_panel()
    panel.model.value = "qwen-plus"
    answers = []
    for prompt in ("Name a colour.", "Name a fruit."):
        panel.prompt.value = prompt
        answers.append(panel.run().result(30).results[0].text)
    panel.prompt.value = ""  # refused: not a run
    panel.run().result(30)
    flush(ip)
    runs = records(run_log_in_a_temporary_folder)
    assert [(r.prompt, r.group_kind) for r in runs] == [("Name a colour.", "panel"), ("Name a fruit.", "panel")]
    assert len({r.group_id for r in runs}) == 2 and [r.answer for r in runs] == answers  # a group per Run


def test_cache_answers_an_identical_cell_from_the_log_without_a_request(ip, dashscope, run_log_in_a_temporary_folder):
    first = ip.run_cell_magic("qwen", "-m qwen-plus -t 0.5 --seed 1 --thinking --cache", "What is entropy?")
    flush(ip)
    assert len(dashscope.requests) == 1  # nothing logged yet: sent
    [earlier] = records(run_log_in_a_temporary_folder)
    ip.display_pub.outputs.clear()
    again = ip.run_cell_magic("qwen", "-m qwen-plus -t 0.5 --seed 1 --thinking --cache", "What is entropy?")
    assert len(dashscope.requests) == 1  # answered from the log
    assert again.cached_from == earlier.id and ip.user_ns["_qwen"] is again
    assert (again.text, again.reasoning, again.usage) == (first.text, first.reasoning, first.usage)
    shown = outputs_text(ip)
    assert f"from the run log (run {earlier.id[:8]}), not a new sample" in shown
    assert "<summary>Thinking (" in shown and "<strong>Echo:</strong> What is entropy?" in shown
    ip.run_cell_magic("qwen", "-m qwen-plus -t 0.5 --seed 2 --thinking --cache", "What is entropy?")
    ip.run_cell_magic("qwen", "-m qwen-plus -t 0.6 --seed 1 --thinking --cache", "What is entropy?")
    assert len(dashscope.requests) == 3  # another seed, another temperature: new samples
    ip.run_line_magic("config", "QwenMagics.cache = True")
    ip.run_cell_magic("qwen", "-m qwen-plus -t 0.5 --seed 1 --thinking", "What is entropy?")
    assert len(dashscope.requests) == 3
    flush(ip)
    assert len(records(run_log_in_a_temporary_folder)) == 3  # the replays are not runs


def test_qwen_log_lists_searches_and_shows_runs_escaped(ip, dashscope):
    ip.run_cell_magic("qwen", "-m qwen-plus --thinking", "What is entropy?\nAnswer briefly.")
    ip.run_cell_magic("qwen", "-m qwen-flash --no-thinking", "Is <script>alert(1)</script> safe?")
    table = ip.run_line_magic("qwen_log", "")
    text, page = repr(table), table._repr_html_()
    assert text.startswith("2 latest run(s) in ") and "What is entropy?…" in text and "qwen-flash" in text
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    found = ip.run_line_magic("qwen_log", "-q entropy")
    assert len(found.rows) == 1 and found.rows[0][1] == "qwen-plus"
    assert len(ip.run_line_magic("qwen_log", "-n 1").rows) == 1
    assert repr(ip.run_line_magic("qwen_log", "-q nothing-like-this")).startswith("No runs matching")
    entropy_id = found.rows[0][-1]
    bundle = ip.run_line_magic("qwen_log", f"show {entropy_id}")._repr_mimebundle_()
    assert "<summary>Thinking" in bundle["text/html"] and "<details " in bundle["text/html"]  # collapsed
    assert "<strong>Echo:</strong> What is entropy?" in bundle["text/html"]
    assert "qwen-plus · " in bundle["text/html"] and "tok/s" in bundle["text/plain"]
    unsafe = ip.run_line_magic("qwen_log", f"show {table.rows[0][-1]}")._repr_mimebundle_()["text/html"]
    assert "<script>" not in unsafe and "&lt;script&gt;" in unsafe


def test_qwen_log_cuts_a_long_prompt_at_a_word_and_shows_each_runs_group_and_temperature(ip, dashscope):
    prompt = ("Explain in plain words why the sky looks blue on a clear day but red and orange at sunset, "
              "for a curious child")
    ip.run_cell_magic("qwen", "-m qwen-plus -t 0.3", prompt)
    ip.run_cell_magic("qwen_compare", "-m qwen-plus -t 0,0.7", "Same prompt")
    ip.user_ns["words"] = ["kettle"]
    ip.run_cell_magic("qwen_map", "words -m qwen-flash", "Say {item}.")
    table = ip.run_line_magic("qwen_log", "")
    assert table.heads == ["time", "model", "prompt", "temperature", "group", "tokens in / out", "state", "id"]
    by_prompt = {row[2]: row for row in table.rows}
    cell = by_prompt["Explain in plain words why the sky looks blue on a clear day but red and orange…"]
    assert (cell[3], cell[4]) == ("0.3", "")  # a cell belongs to no group
    compared = [row for row in table.rows if row[2] == "Same prompt"]
    assert sorted(row[3] for row in compared) == ["0", "0.7"]
    assert len({row[4] for row in compared}) == 1 and re.fullmatch(r"compare [0-9a-f]{8}", compared[0][4])
    mapped = by_prompt["Say kettle."]
    assert mapped[3] == "default" and re.fullmatch(r"map [0-9a-f]{8}", mapped[4])
    assert 'min-width:24em">Explain in plain words' in table._repr_html_()  # the prompt column has room


def test_qwen_log_df_cost_rm_and_path(ip, dashscope, run_log_in_a_temporary_folder, capsys):
    ip.run_line_magic("config", "QwenMagics.prices = {'qwen-plus': [1.0, 2.0]}")
    for model in ("qwen-plus", "qwen-plus", "qwen-flash"):
        ip.run_cell_magic("qwen", f"-m {model}", f"hello from {model}")
    frame = ip.run_line_magic("qwen_log", "df")
    assert list(frame["model"]) == ["qwen-plus", "qwen-plus", "qwen-flash"]
    plus = frame[frame["model"] == "qwen-plus"]
    cost = ip.run_line_magic("qwen_log", f"cost --since {date.today() - timedelta(days=1)}")
    rows = {row[1]: row for row in cost.rows}
    assert rows["qwen-plus"][2] == "2" and rows["qwen-plus"][3] == str(plus["input_tokens"].sum())
    money = (plus["input_tokens"].sum() * 1.0 + plus["output_tokens"].sum() * 2.0) / 1e6
    assert rows["qwen-plus"][6] == f"{money:.4f}" and rows["qwen-flash"][6] == ""
    assert ip.run_line_magic("qwen_log", f"cost --since {date.today() + timedelta(days=2)}").rows == []
    ip.run_line_magic("qwen_log", f"rm {frame['id'][2][:10]}")
    ip.run_line_magic("qwen_log", "path")
    printed = capsys.readouterr().out
    assert f"Deleted run {frame['id'][2][:10]}." in printed and str(run_log_in_a_temporary_folder) in printed
    assert [r.model for r in records(run_log_in_a_temporary_folder)] == ["qwen-plus", "qwen-plus"]
    ip.run_line_magic("qwen_log", f"rm --before {date.today() + timedelta(days=1)}")
    assert "Deleted 2 run(s)" in capsys.readouterr().out and records(run_log_in_a_temporary_folder) == []


@pytest.mark.parametrize("line, message", [
    ("show zzzz", "No run with id 'zzzz' in the log. %qwen_log lists the runs and their ids."),
    ("rm zzzz", "No run with id 'zzzz' in the log"),
    ("show", "%qwen_log show needs a run id. Write e.g. %qwen_log show 1a2b3c4d"),
    ("cost --since yesterday", "Not a date: 'yesterday'"),
    ("rm --before 2025-13-40", "Not a date: '2025-13-40'"),
    ("-n 0", "-n 0 is not a number of runs"),
    ("remove 1", "invalid choice: 'remove'"),
])
def test_bad_log_input_is_one_line(ip, line, message):
    with pytest.raises(UsageError) as raised:
        ip.run_line_magic("qwen_log", line)
    assert type(raised.value) is UsageError and message in str(raised.value) and "\n" not in str(raised.value)


def test_help_is_the_docstring_with_every_option(ip):
    doc = ip.find_line_magic("qwen_log").__doc__
    assert "The run log" in doc and "%qwen_log show 1a2b3c4d" in doc
    for option in ("-n N", "--query", "--since", "--before"):
        assert option in doc
    qwen_doc = ip.find_line_magic("qwen").__doc__
    assert "--no-log" in qwen_doc and "--cache" in qwen_doc


def test_a_log_that_cannot_be_written_warns_once_and_the_answers_still_show(ip, dashscope, tmp_path, capsys):
    """A read-only folder (or, for root, whom file modes do not bind, a folder that cannot be created)."""
    folder = tmp_path / "locked"
    if os.geteuid() == 0:
        folder.write_text("a file where the folder should be")
    else:
        folder.mkdir()
        folder.chmod(0o555)
    ip.run_line_magic("config", f"QwenMagics.log_path = {str(folder / 'log.db')!r}")
    try:
        for prompt in ("first", "second", "third"):
            assert ip.run_cell(f"%%qwen\n{prompt}").success
    finally:
        if folder.is_dir():
            folder.chmod(0o755)
    printed = capsys.readouterr().out
    warnings = [line for line in printed.splitlines() if "⚠" in line]
    assert len(warnings) == 1 and "could not write the run log" in warnings[0] and str(folder) in warnings[0]
    shown = outputs_text(ip)
    assert all(f"<strong>Echo:</strong> {p}" in shown for p in ("first", "second", "third"))


def test_the_key_never_reaches_the_log_file(ip, dashscope, run_log_in_a_temporary_folder):
    ip.run_cell_magic("qwen", "-m qwen-plus", f"my key is {FAKE_KEY}")  # the answer echoes it too
    ip.run_cell_magic("qwen_compare", "-m qwen-plus,qwen-flash", f"again {FAKE_KEY}")
    flush(ip)
    assert len(records(run_log_in_a_temporary_folder)) == 3
    raw = file_bytes(run_log_in_a_temporary_folder)
    assert FAKE_KEY.encode() not in raw and FAKE_KEY[3:15].encode() not in raw and b"***" in raw


def test_qwen_magics_log_gives_the_path_and_a_connection(ip, dashscope, run_log_in_a_temporary_folder):
    import qwen_magics

    ip.run_cell_magic("qwen", "-m qwen-plus", "for SQL")
    flush(ip)
    log = qwen_magics.log()
    assert log.path == run_log_in_a_temporary_folder
    with log.connect() as conn:
        assert conn.execute("SELECT model FROM runs").fetchall() == [("qwen-plus",)]


def test_loading_the_extension_imports_and_opens_no_log(run_log_in_a_temporary_folder):
    code = ("import sys\nfrom IPython.core.interactiveshell import InteractiveShell\n"
            "InteractiveShell.instance().run_line_magic('load_ext', 'qwen_magics')\n"
            "print(sorted(m for m in ('qwen_magics.runlog.store', 'qwen_magics.runlog.record', 'platformdirs')\n"
            "             if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "[]", done.stderr
    assert not run_log_in_a_temporary_folder.exists()


def test_a_restarted_kernel_finds_the_runs_of_the_last_one(dashscope, tmp_path, run_log_in_a_temporary_folder):
    def execute(*sources):
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])
        NotebookClient(nb, timeout=60, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
        return ["".join(o.get("text", "") + o.get("data", {}).get("text/plain", "") for o in c.outputs)
                for c in nb.cells]

    execute("%load_ext qwen_magics", "%%qwen -m qwen-plus\nWhat is entropy, in a kernel?")
    _, table, shown = execute("%load_ext qwen_magics", "%qwen_log -q kernel",
                              "import qwen_magics\n%qwen_log show {qwen_magics.log().recent(1)[0].id}")
    assert "1 matching 'kernel' run(s)" in table and "What is entropy, in a kernel?" in table
    assert "**Echo:** What is entropy, in a kernel?" in shown and "qwen-plus · " in shown
    with sqlite3.connect(run_log_in_a_temporary_folder) as conn:
        [(kernel_id,)] = conn.execute("SELECT kernel_id FROM runs").fetchall()
    assert kernel_id and len(kernel_id) >= 8


def unclosed_event_loops() -> set[int]:
    """Every event loop not closed yet, reachable or not (one dropped unclosed is closed by the garbage
    collector later, in whatever test runs then, with a PytestUnraisableExceptionWarning)."""
    return {id(o) for o in gc.get_objects() if isinstance(o, asyncio.AbstractEventLoop) and not o.is_closed()}


def test_two_kernels_logging_at_once_lose_nothing_and_show_no_warning(dashscope, tmp_path,
                                                                       run_log_in_a_temporary_folder):
    """Two real kernels run 15 cells each into the one log file at the same time (WAL, busy timeout, retry)."""
    from concurrent.futures import ThreadPoolExecutor

    def kernel_run(name):
        cells = ["%load_ext qwen_magics"] + [f"%qwen -m qwen-flash --no-thinking {name} question {i}"
                                             for i in range(15)]
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
        client = NotebookClient(nb, timeout=60, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
        # on a loop this thread closes: NotebookClient.execute() would leave one unclosed in each worker thread
        asyncio.run(client.async_execute())
        return "\n".join(o.get("text", "") + str(o.get("data", {})) for c in nb.cells for o in c.outputs)

    before = unclosed_event_loops()
    with ThreadPoolExecutor(2) as pool:
        shown = list(pool.map(kernel_run, ["alpha", "beta"]))
    assert unclosed_event_loops() <= before, "a worker thread left an event loop unclosed"
    assert not any("log" in text.lower() and "⚠" in text for text in shown)  # no warning line in either kernel
    prompts = [r.prompt for r in records(run_log_in_a_temporary_folder)]
    assert sorted(prompts) == sorted(f"{name} question {i}" for name in ("alpha", "beta") for i in range(15))
