"""%%qwen_eval and qwen_magics.evaluate: settings x rows x repeats, scored, against the loopback server.

The loopback server answers each request by its own prompt and temperature
(``respond``), so the scores every test expects are known in advance: at
temperature 0 every sum is right, at 1.2 the sums of rows whose ``a`` is a
multiple of 3 are one too many.  The run log is a SQLite file in the test's
tmp folder (conftest); what was sent is read from the server's records.
"""

from __future__ import annotations

import math
import re

import pandas as pd
import pytest
from IPython.core.error import UsageError
from conftest import interrupt_once_answered
from loopback import CHAT_PATH, Script

import qwen_magics

ROWS = 40
SUM = re.compile(r"What is (\d+) \+ (\d+)\?")
Z = 1.959963984540054  # the 97.5% point of the standard normal


@pytest.fixture
def ev(ip):
    """The shell with a 40-row arithmetic set, the SDK's own retries off, and the server answering each sum."""
    ip.run_line_magic("config", "QwenMagics.max_retries = 0")
    ip.user_ns["sums"] = pd.DataFrame({"a": list(range(ROWS)), "b": [(7 * i) % 11 for i in range(ROWS)],
                                       "total": [i + (7 * i) % 11 for i in range(ROWS)]},
                                      index=[f"q{i}" for i in range(ROWS)])
    return ip


def arithmetic(body: dict) -> Script | None:
    """Right at temperature 0; at 1.2, one too many when a is a multiple of 3."""
    found = SUM.search(body["messages"][-1]["content"])
    if not found:
        return None
    a, b = int(found[1]), int(found[2])
    wrong = body.get("temperature") == 1.2 and a % 3 == 0
    return Script(text=f"{a} + {b} = {a + b + wrong}", reasoning="")


def chats(server) -> list:
    return [r for r in server.requests if r.path == CHAT_PATH]


def wilson(k: int, n: int) -> tuple[float, float]:
    """Wilson's score interval, from its formula (Wilson 1927), to check the package's against."""
    p = k / n
    centre = (p + Z * Z / (2 * n)) / (1 + Z * Z / n)
    half = Z / (1 + Z * Z / n) * math.sqrt(p * (1 - p) / n + Z * Z / (4 * n * n))
    return centre - half, centre + half


# the done-when run

def test_forty_sums_at_two_temperatures_are_eighty_requests_scored_with_wilson_intervals_and_mcnemar(ev, dashscope):
    dashscope.respond(arithmetic)
    result = ev.run_cell_magic("qwen_eval", "sums --expect total --score number -m qwen-flash -t 0,1.2 -o scored",
                               "What is {a} + {b}?")
    requests = chats(dashscope)
    assert len(requests) == 80
    own = [f"What is {a} + {b}?" for a, b in zip(ev.user_ns["sums"].a, ev.user_ns["sums"].b)]
    assert sorted(r.body["messages"][-1]["content"] for r in requests) == sorted(own * 2)
    assert sorted(r.body["temperature"] for r in requests) == [0] * 40 + [1.2] * 40
    assert ev.user_ns["_qwen_eval"] is result and ev.user_ns["scored"] is result

    answers = result.answers
    assert list(answers.columns) == ["row", "model", "temperature", "repeat", "answer", "expected", "score", "state",
                                     "error"]
    assert len(answers) == 80 and (answers.state == "complete").all() and (answers.repeat == 0).all()
    said = answers.answer.str.rsplit("=", n=1).str[1].astype(int)
    assert list(answers.score) == [float(s == e) for s, e in zip(said, answers.expected)]
    assert list(answers.row[:3]) == ["q0", "q1", "q2"] and list(answers.temperature[:40]) == [0.0] * 40

    table = result.table
    assert list(table.columns) == ["model", "temperature", "n", "score", "low", "high", "failed", "input_tokens",
                                   "output_tokens", "cost", "latency"]
    wrong = sum(1 for a in range(ROWS) if a % 3 == 0)  # 14
    assert list(table.temperature) == [0.0, 1.2] and list(table.n) == [40, 40] and list(table.failed) == [0, 0]
    assert list(table.score) == [1.0, (ROWS - wrong) / ROWS]
    for position, k in enumerate((ROWS, ROWS - wrong)):
        low, high = wilson(k, ROWS)
        assert table.low[position] == pytest.approx(low, abs=1e-9) and table.high[position] == pytest.approx(high, abs=1e-9)
    assert (table.output_tokens > 0).all() and (table.latency > 0).all() and table.cost.isna().all()

    paired = result.compare(0, 1)
    assert paired.method == "exact McNemar" and paired.n == 40
    assert paired.difference == pytest.approx(wrong / ROWS)
    assert paired.p_value == pytest.approx(2 * 0.5 ** wrong)  # 14 discordant pairs, all one way
    assert paired.low <= paired.difference <= paired.high

    bundle = result._repr_mimebundle_()
    assert "<svg" in bundle["text/html"] and bundle["text/html"].count('class="interval"') == 2
    sentence = ("Best: -m qwen-flash -t 0, scoring 1.00 (95% interval 0.91 to 1.00, 40 rows); its lead of +0.35 over "
                "-m qwen-flash -t 1.2 (0.65) on the 40 rows both scored is significant at 5% (exact McNemar, "
                "p = 0.000122).")
    assert result.sentence() == sentence and sentence in bundle["text/plain"]
    assert "80 requests: 80 answered" in bundle["text/plain"]


def test_running_again_sends_nothing_and_fresh_sends_all(ev, dashscope):
    dashscope.respond(arithmetic)
    line, cell = "sums --expect total --score number -m qwen-flash -t 0,1.2 --limit 20", "What is {a} + {b}?"
    first = ev.run_cell_magic("qwen_eval", line, cell)
    assert len(chats(dashscope)) == 40
    again = ev.run_cell_magic("qwen_eval", line, cell)
    assert len(chats(dashscope)) == 40
    pd.testing.assert_frame_equal(again.table.drop(columns="latency"), first.table.drop(columns="latency"))
    assert again.line == "40 requests: 40 answered (40 from the run log)"
    ev.run_cell_magic("qwen_eval", line + " --fresh", cell)
    assert len(chats(dashscope)) == 80


def test_repeats_are_distinct_requests_in_the_log_and_a_row_is_one_unit(ev, dashscope):
    seen: dict[str, int] = {}

    def second_time_wrong(body):  # a row's 2nd answer is wrong when a is even: its row score is 2/3
        prompt = body["messages"][-1]["content"]
        seen[prompt] = seen.get(prompt, 0) + 1
        a, b = map(int, SUM.search(prompt).groups())
        return Script(text=f"It is {a + b + (seen[prompt] == 2 and a % 2 == 0)}", reasoning="")

    dashscope.respond(second_time_wrong)
    line, cell = "sums --expect total --score number -m qwen-flash -t 1.2 --limit 10", "What is {a} + {b}?"
    ev.run_cell_magic("qwen_eval", line, cell)
    assert len(chats(dashscope)) == 10
    result = ev.run_cell_magic("qwen_eval", line + " --repeats 3", cell)
    assert len(chats(dashscope)) == 30  # repeat 0 from the run log, repeats 1 and 2 sent
    assert list(result.table.n) == [10] and len(result.answers) == 30
    assert sorted(result.answers.repeat) == [0] * 10 + [1] * 10 + [2] * 10
    assert result.table.score[0] == pytest.approx((5 * 1 + 5 * 2 / 3) / 10)
    assert result.table.low[0] < result.table.score[0] < result.table.high[0] and result.methods == ["bootstrap"]
    ev.run_cell_magic("qwen_eval", line + " --repeats 3", cell)
    assert len(chats(dashscope)) == 30
    fresh = ev.run_cell_magic("qwen_eval", line + " --repeats 3 --fresh", cell)
    assert len(chats(dashscope)) == 60 and list(fresh.table.n) == [10]


def test_repeats_three_with_limit_ten_send_thirty(ev, dashscope):
    dashscope.respond(arithmetic)
    result = ev.run_cell_magic("qwen_eval", "sums --expect total --score number -m qwen-flash --repeats 3 --limit 10",
                               "What is {a} + {b}?")
    assert len(chats(dashscope)) == 30 and list(result.table.n) == [10] and list(result.table.score) == [1.0]


# failures, judges, functions

def test_service_errors_are_failed_rows_never_scored_zero(ev, dashscope):
    def some_fail(body):
        script = arithmetic(body)
        a = int(SUM.search(body["messages"][-1]["content"])[1])
        return Script(status=500) if body["temperature"] == 1.2 and a in (1, 2) else script

    dashscope.respond(some_fail)
    result = ev.run_cell_magic("qwen_eval", "sums --expect total --score number -m qwen-flash -t 0,1.2 --limit 10",
                               "What is {a} + {b}?")
    failed = result.answers[result.answers.state == "failed"]
    assert list(failed.row) == ["q1", "q2"] and failed.score.isna().all()
    assert list(failed.error) == ["Model Studio had a server error (500 internal_error). Try again shortly."] * 2
    assert list(result.table.failed) == [0, 2] and list(result.table.n) == [10, 8]
    assert result.table.score[1] == pytest.approx(4 / 8)  # of rows 0, 3-9, those 0, 3, 6, 9 wrong
    assert result.compare(0, 1).n == 8
    assert "2 failed" in result.line


def test_a_judge_gets_one_request_per_answer_with_the_question_and_the_answer(ev, dashscope):
    def answers_and_verdicts(body):
        prompt = body["messages"][-1]["content"]
        if prompt.startswith("Grade an answer"):
            answer = re.search(r"The answer to grade:\n<<<\n(.*?)\n>>>", prompt, re.S)[1]
            expected = int(re.search(r"The expected answer:\n<<<\n(.*?)\n>>>", prompt, re.S)[1])
            if answer.startswith("3 + "):
                return Script(text="Looks fine to me.", reasoning="")  # no score: that answer is failed
            right = int(answer.rsplit("=", 1)[1]) == expected
            return Script(text=f'{{"score": {1 if right else 0.25}, "reason": "checked"}}', reasoning="")
        return arithmetic(body)

    dashscope.respond(answers_and_verdicts)
    result = ev.run_cell_magic("qwen_eval", "sums --expect total --score judge --judge qwen-plus -m qwen-flash "
                               "-t 0,1.2 --limit 4 --rubric 'Be strict.'", "What is {a} + {b}?")
    requests = chats(dashscope)
    judged = [r for r in requests if r.body["model"] == "qwen-plus"]
    assert len(requests) == 16 and len(judged) == 8
    for request in judged:
        prompt = request.body["messages"][-1]["content"]
        question = SUM.search(prompt)
        a, b = int(question[1]), int(question[2])
        assert f"The task:\n<<<\nWhat is {a} + {b}?\n>>>" in prompt and f"<<<\n{a} + {b} = " in prompt
        assert "How to grade: Be strict." in prompt
        assert request.body["temperature"] == 0 and request.body["response_format"] == {"type": "json_object"}
    answers = result.answers
    assert "judge_reason" in answers.columns
    three = answers[answers.row == "q3"]
    assert (three.state == "failed").all() and (three.judge_reason == "Looks fine to me.").all()
    assert three.error.str.startswith("the judge gave no score").all()
    zero = answers[(answers.row == "q0")]
    assert list(zero.score) == [1.0, 0.25] and list(zero.judge_reason) == ["checked", "checked"]
    assert list(result.table.n) == [3, 3] and list(result.table.failed) == [1, 1]
    ev.run_cell_magic("qwen_eval", "sums --expect total --score judge --judge qwen-plus -m qwen-flash "
                      "-t 0,1.2 --limit 4 --rubric 'Be strict.'", "What is {a} + {b}?")
    assert len(chats(dashscope)) == 16  # answers and verdicts from the run log


def test_py_scores_are_the_functions_and_a_raising_row_is_failed_with_its_line(ev, dashscope):
    dashscope.respond(arithmetic)
    ev.run_cell("def grade(answer, expected, row):\n"
                "    if row['a'] == 2:\n"
                "        raise ValueError('no luck')\n"
                "    return 0.5 if row['a'] % 2 else answer.endswith(str(expected))\n")
    result = ev.run_cell_magic("qwen_eval", "sums --expect total --score py:grade -m qwen-flash --limit 4", "What is {a} + {b}?")
    answers = result.answers
    assert list(answers.score[[0, 1, 3]]) == [1.0, 0.5, 0.5]
    assert answers.state[2] == "failed" and answers.error[2] == "py:grade raised ValueError: no luck"
    assert list(result.table.n) == [3] and list(result.table.failed) == [1]


@pytest.mark.parametrize("line, message", [
    ("sums --expect totl --score number", "--expect 'totl': the data has no column 'totl'. Its columns are a, b, total."),
    ("sums --score number", "--score number compares each answer with an expected value. Name the column"),
    ("sums --expect total --score py:nothing", "--score py:nothing: 'nothing' is not defined."),
    ("sums --expect total --score py:sums", "--score py:sums: sums is a DataFrame, not a function."),
    ("sums --expect total --score fuzzy", "--score 'fuzzy' is not a scorer."),
    ("sums --expect a --score choice", "Row 'q0': --expect a: 0 is not a letter A-J."),
    ("sums --expect total --judge qwen-plus", "--judge and --rubric go with --score judge."),
    ("sums --expect total --repeats 0", "--repeats must be 1 or more."),
    ("sums --expect total -t 0,1 --top-p 0.5,0.6,0.7", "The option lists have different lengths."),
    ("sums --expect total -t 0,3", "-m qwen-flash -t 3: temperature 3.0 is out of range. Use a value in [0, 2)"),
    ("sums --expect total -t 0,hot", "-m qwen-flash -t hot: argument -t/--temperature: invalid float value: 'hot'"),
    ("sums --expect total --score json:n", "--score json:n reads each answer as JSON. Add -f json, or --schema NAME."),
    ("nothing --expect total", "DATA 'nothing': name 'nothing' is not defined: define it in a cell first"),
    ("sums --expect total --bogus", "Unknown option --bogus (see %qwen_eval?"),
])
def test_bad_input_is_one_line_and_nothing_is_sent(ev, dashscope, line, message):
    with pytest.raises(UsageError) as err:
        ev.run_cell_magic("qwen_eval", line + " -m qwen-flash", "What is {a} + {b}?")
    assert message in str(err.value) and "\n" not in str(err.value)
    assert dashscope.requests == []


def test_dry_run_counts_rows_settings_repeats_and_judge_requests_and_sends_nothing(ev, dashscope, capsys):
    assert ev.run_cell_magic("qwen_eval", "sums --expect total --score judge -m qwen-flash -t 0,1.2 --repeats 2 "
                             "--dry-run", "What is {a} + {b}?") is None
    out = capsys.readouterr().out
    assert out.startswith("Dry run, nothing sent: 40 rows x 2 settings x 2 repeats = 160 requests + 160 judge "
                          "requests (one per answer); ")
    from qwen_magics.tokens import qwen

    rows = ev.user_ns["sums"]
    counted = 4 * sum(qwen.count(f"What is {a} + {b}?") for a, b in zip(rows["a"], rows["b"])) + 160 * 8
    assert f"; {counted:,} input tokens (Qwen's tokenizer; 1,280 of them the chat template's;" in out
    assert out.count("── q") == 3 and "What is 0 + 0?" in out and dashscope.requests == []


def test_the_python_twin_returns_the_same_object_and_takes_a_function_as_scorer(ev, dashscope):
    dashscope.respond(arithmetic)
    magic = ev.run_cell_magic("qwen_eval", "sums --expect total --score number -m qwen-flash -t 0,1.2 --limit 6",
                              "What is {a} + {b}?")
    twin = qwen_magics.evaluate(ev.user_ns["sums"], "What is {a} + {b}?", expect="total", score="number",
                                model="qwen-flash", temperature=[0, 1.2], limit=6)
    assert type(twin) is type(magic) and len(chats(dashscope)) == 12  # the twin's answers all from the run log
    pd.testing.assert_frame_equal(twin.table.drop(columns="latency"), magic.table.drop(columns="latency"))
    assert twin.sentence() == magic.sentence()

    def close_enough(answer, expected, row):
        return abs(int(answer.rsplit("=", 1)[1]) - expected) <= 1

    lenient = qwen_magics.evaluate(ev.user_ns["sums"], "What is {a} + {b}?", expect="total", score=close_enough,
                                   model="qwen-flash", temperature=[0, 1.2], limit=6)
    assert list(lenient.table.score) == [1.0, 1.0]
    with pytest.raises(qwen_magics.errors.InvalidInput, match="evaluate\\(\\) has no option 'temp'"):
        qwen_magics.evaluate(ev.user_ns["sums"], "{a}", temp=1)


def test_variants_and_grids_are_settings_with_their_own_columns(ev, dashscope):
    dashscope.respond(arithmetic)
    result = ev.run_cell_magic("qwen_eval", "sums --expect total --score number -m qwen-flash --grid -t 0,1.2 "
                               "--variants --limit 3", "What is {a} + {b}?\n---\nCompute: What is {a} + {b}?")
    assert len(chats(dashscope)) == 12
    assert list(result.table.variant) == [1, 1, 2, 2] and list(result.table.temperature) == [0.0, 1.2, 0.0, 1.2]
    assert result.labels[2] == "variant 2 “Compute: What is {a} +…” -m qwen-flash -t 0"


# the run: a stop, the log, the progress view, the local model

def test_ctrl_c_keeps_the_answers_so_far_and_running_again_sends_only_the_rest(ev, dashscope, run_log_in_a_temporary_folder):
    import sqlite3

    def slow(body):
        script = arithmetic(body)
        script.first_byte_delay = 0.1
        return script

    dashscope.respond(slow)

    interrupt_once_answered(dashscope, 6)
    line, cell = "sums --expect total --score number -m qwen-flash -t 0,1.2 --concurrency 2", "What is {a} + {b}?"
    stopped = ev.run_cell_magic("qwen_eval", line, cell)
    done = (stopped.answers.state == "complete").sum()
    assert 4 <= done < 80 and set(stopped.answers.state) == {"complete", "not run"}
    assert stopped.answers[stopped.answers.state == "not run"].score.isna().all()
    assert stopped.line.endswith("not run: run the cell again to send the rows not answered")
    with sqlite3.connect(run_log_in_a_temporary_folder) as conn:
        kinds = conn.execute("SELECT group_kind, count(*) FROM runs GROUP BY group_kind").fetchall()
    assert kinds == [("evaluation", done)]
    before = len(chats(dashscope))
    dashscope.respond(arithmetic)
    finished = ev.run_cell_magic("qwen_eval", line, cell)
    assert len(chats(dashscope)) - before == 80 - done and list(finished.table.n) == [40, 40]


def test_one_progress_view_shows_every_request(ev, dashscope):
    dashscope.respond(arithmetic)
    ev.run_cell_magic("qwen_eval", "sums --expect total --score number -m qwen-flash -t 0,1.2", "What is {a} + {b}?")
    shown = [o for o in ev.display_pub.outputs if "qwen-map" in o["data"].get("text/html", "")]
    assert len({(o.get("transient") or {}).get("display_id") for o in shown}) == 1
    assert shown[-1]["data"]["text/plain"].splitlines()[-1] == "80 requests: 80 answered"
    assert "q39 · -m qwen-flash -t 1.2" in shown[-1]["data"]["text/plain"]


@pytest.mark.local
def test_the_local_model_answers_three_sums_at_two_temperatures_in_turn(ev, dashscope, capsys):
    from qwen_magics.evaluation.scorers import last_number
    from qwen_magics.local.model import unload

    try:
        result = ev.run_cell_magic("qwen_eval", "sums --expect total --score number -m local:0.5b -t 0,1.2 --limit 3 "
                                   "--max-tokens 12", "What is {a} + {b}? Answer with the number only.")
    finally:
        unload()
    assert "⚠ The local model takes requests in turn: --concurrency 8 runs as 1" in capsys.readouterr().out
    assert dashscope.requests == []  # nothing left the kernel
    answers = result.answers
    assert len(answers) == 6 and (answers.state == "complete").all() and answers.answer.str.strip().astype(bool).all()
    assert list(answers.score) == [float(last_number(a) == e) for a, e in zip(answers.answer, answers.expected)]
    assert list(result.table.n) == [3, 3] and list(result.table.temperature) == [0.0, 1.2]
    assert (result.table.output_tokens > 0).all() and result.sentence().startswith("Best: -m local:0.5b -t ")


@pytest.mark.local
@pytest.mark.timeout(1500)  # 120 short answers on the local model (the 1.5B, where it is installed)
def test_the_evaluate_sampling_notebook_scores_temperatures_offline(dashscope, tmp_path, monkeypatch):
    from pathlib import Path

    import nbformat
    from nbclient import NotebookClient

    monkeypatch.delenv("DASHSCOPE_API_KEY")
    nb = nbformat.read(Path(__file__).resolve().parents[1] / "notebooks" / "evaluate_sampling.ipynb", as_version=4)
    NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    assert not [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    plain = "\n".join(o.get("text", "") + o.get("data", {}).get("text/plain", "") for c in nb.cells
                      if c.cell_type == "code" for o in c.get("outputs", []))
    assert "120 requests: 120 answered" in plain and "(120 from the run log)" in plain and dashscope.requests == []


# --batch

def test_batch_sends_the_requests_as_a_job_and_the_judges_as_a_second_and_a_rerun_sends_nothing(ev, dashscope):
    import json

    def uploads():
        return [[json.loads(line) for line in data.decode().splitlines()] for data in dashscope.batches.uploads()]

    line = ("sums --expect total --score judge --judge qwen-plus -m qwen-flash -t 0,1.2 --limit 3 --batch",
            "What is {a} + {b}?")
    verdict = '{"score": 0.5, "reason": "half right"}'  # the batch loopback scripts by custom id: both jobs' lines
    dashscope.batches.scripts.update({f"row-{i}": Script(text=verdict, reasoning="") for i in range(6)})
    result = ev.run_cell_magic("qwen_eval", *line)
    answers, verdicts = uploads()
    assert len(answers) == 6 and {u["body"]["model"] for u in answers} == {"qwen-flash"}
    assert sorted(u["body"]["temperature"] for u in answers) == [0, 0, 0, 1.2, 1.2, 1.2]
    assert len(verdicts) == 6 and {u["body"]["model"] for u in verdicts} == {"qwen-plus"}
    questions = sorted(re.search(r"The task:\n<<<\n(.*?)\n>>>", u["body"]["messages"][-1]["content"])[1]
                       for u in verdicts)
    assert questions == sorted(["What is 0 + 0?", "What is 1 + 7?", "What is 2 + 3?"] * 2)
    assert all(f"The answer to grade:\n<<<\n{verdict}\n>>>" in u["body"]["messages"][-1]["content"] for u in verdicts)
    assert chats(dashscope) == [] and (result.answers.state == "complete").all()
    assert list(result.table.n) == [3, 3] and list(result.table.score) == [0.5, 0.5]
    assert set(result.answers.judge_reason) == {"half right"}
    ev.run_cell_magic("qwen_eval", *line)
    assert len(uploads()) == 2  # answers and verdicts from the run log


def test_batch_is_refused_in_one_line_for_a_local_judge_before_anything_is_uploaded(ev, dashscope):
    with pytest.raises(UsageError, match="^The local model has no batch mode"):
        ev.run_cell_magic("qwen_eval", "sums --expect total --score judge --judge local -m qwen-flash --batch",
                          "What is {a} + {b}?")
    assert dashscope.batches.uploads() == [] and dashscope.requests == []


def test_ctrl_c_stops_waiting_for_the_batch_and_the_cell_run_again_follows_the_same_job(ev, dashscope, capsys):
    from conftest import interrupt_once_a_batch_job_runs
    from loopback_batch import BatchTiming

    dashscope.batches.timing = BatchTiming(per_line=0.15)

    interrupt_once_a_batch_job_runs(dashscope)
    line = ("sums --expect total --score number -m qwen-flash -t 0,1.2 --limit 5 --batch", "What is {a} + {b}?")
    stopped = ev.run_cell_magic("qwen_eval", *line)
    (job,) = dashscope.batches.jobs
    shown = [o for o in ev.display_pub.outputs if "qwen-map" in o["data"].get("text/html", "")]
    assert shown[-1]["data"]["text/plain"].splitlines()[-1].startswith(f"Stopped waiting; batch job(s) {job} keep running")
    assert set(stopped.answers.state) == {"not run"} and list(stopped.table.n) == [0, 0]
    capsys.readouterr()
    result = ev.run_cell_magic("qwen_eval", *line)
    assert capsys.readouterr().out.startswith(f"These requests went as batch job(s) {job} before: following those")
    assert len(dashscope.batches.uploads()) == 1 and list(result.table.n) == [5, 5] and chats(dashscope) == []


# a budget

def test_a_budget_below_the_estimate_is_refused_with_nothing_sent(ev, dashscope):
    with pytest.raises(UsageError, match=r"^The estimated cost of 80 requests, \$0\.\d{4}, is over the budget of "
                                         r"\$0\.0001: nothing was sent\. Raise --budget"):
        ev.run_cell_magic("qwen_eval", "sums --expect total --score number -m qwen-plus -t 0,1.2 --max-tokens 500 "
                          "--budget 0.0001", "What is {a} + {b}?")
    with pytest.raises(UsageError, match=r"--budget bounds the answers of a live evaluation"):
        ev.run_cell_magic("qwen_eval", "sums --expect total --score judge -m qwen-plus --budget 1", "What is {a}?")
    assert chats(dashscope) == []


def test_a_budget_for_about_twenty_answers_answers_about_twenty_and_leaves_the_rest_not_run(ev, dashscope, capsys):
    usage = {"prompt_tokens": 20, "completion_tokens": 1000, "total_tokens": 1020}
    dashscope.respond(lambda body: Script(text="7", reasoning="", usage=usage))
    budget = 20 * (20 * 0.4 + 1000 * 1.2) / 1_000_000  # qwen-plus in Singapore, from the shipped price table
    result = ev.run_cell_magic("qwen_eval", f"sums --expect total --score number -m qwen-plus -t 0,1.2 "
                               f"--budget {budget}", "What is {a} + {b}?")
    out = capsys.readouterr().out
    answered = (result.answers.state == "complete").sum()
    assert 18 <= answered <= 22 and len(chats(dashscope)) == answered
    assert out.startswith("Estimated cost of 80 requests: $")
    assert f"{80 - answered} requests not run for lack of budget" in out
