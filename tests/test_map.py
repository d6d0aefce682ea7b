"""%%qwen_map and qwen_magics.map: one prompt over every row, against the loopback server and a real run log.

Every test's run log is a SQLite file in its own tmp folder; what was sent is
read from the loopback server's recorded requests.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from IPython.core.error import UsageError
from jupyter_client.manager import start_new_kernel
from conftest import interrupt_once_answered
from loopback import CHAT_PATH, Script

import qwen_magics

ROOT = Path(__file__).resolve().parents[1]
REVIEWS = ["Great kettle, boils fast.", "Broke after a week.", "Does the job.", "Lovely colour, too loud.",
           "Would buy again.", "Lid does not close."]


@pytest.fixture
def log_path(run_log_in_a_temporary_folder):
    """This test's run log (conftest points QWEN_MAGICS_LOG at it)."""
    return run_log_in_a_temporary_folder


@pytest.fixture
def mp(ip, log_path):
    """The shell, with the run log in tmp (and the default max_retries, 2)."""
    ip.user_ns["reviews"] = pd.DataFrame({"text": REVIEWS, "stars": [5, 1, 3, 4, 5, 2]},
                                         index=[f"r{i}" for i in range(6)])
    return ip


def prompts(server) -> list[str]:
    return [r.body["messages"][-1]["content"] for r in server.requests if r.path == CHAT_PATH]


def sent(server) -> int:
    return sum(r.path == CHAT_PATH for r in server.requests)


def max_overlap(server) -> int:
    """The most requests the server was answering at one moment."""
    edges = sorted([(r.started, 1) for r in server.requests] + [(r.finished, -1) for r in server.requests],
                   key=lambda e: (e[0], e[1]))
    most = now = 0
    for _, step in edges:
        now += step
        most = max(most, now)
    return most


def progress_outputs(ip) -> list[dict]:
    return [o for o in ip.display_pub.outputs if "qwen-map" in o["data"].get("text/html", "")]


def end_line(ip) -> str:
    return progress_outputs(ip)[-1]["data"]["text/plain"].splitlines()[-1]


def logged(path: Path) -> list[tuple]:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT prompt, state, group_kind, group_id FROM runs ORDER BY seq").fetchall()


def logged_so_far(path: Path) -> list[tuple]:
    """What another process has logged by now: nothing while the file or its table is still being made."""
    try:
        return logged(path) if path.exists() else []
    except sqlite3.OperationalError:  # the kernel has created the file but not yet its tables
        return []


# inputs and results

def test_a_dataframe_comes_back_on_its_index_with_each_rows_answer(mp, dashscope, log_path):
    frame = mp.run_cell_magic("qwen_map", "reviews -m qwen-flash -o labelled", "Review: {text} ({stars} stars)")
    assert sorted(prompts(dashscope)) == sorted(f"Review: {t} ({s} stars)" for t, s in
                                                zip(REVIEWS, [5, 1, 3, 4, 5, 2]))
    assert list(frame.index) == [f"r{i}" for i in range(6)]
    assert list(frame.columns) == ["text", "stars", "answer", "state", "error", "input_tokens", "output_tokens",
                                   "cost", "elapsed", "request_id"]
    assert frame.loc["r1", "answer"].startswith("**Echo:** Review: Broke after a week. (1 stars)")
    assert (frame.state == "complete").all() and frame.error.isna().all() and (frame.output_tokens > 0).all()
    assert mp.user_ns["_qwen_map"] is frame and mp.user_ns["labelled"] is frame
    rows = logged(log_path)
    assert len(rows) == 6 and {r[2] for r in rows} == {"dataset"} and len({r[3] for r in rows}) == 1
    assert end_line(mp) == "6 rows: 6 answered"


@pytest.mark.parametrize("data, template, column, expected", [
    (pd.Series(["tea", "coffee"], index=[10, 20]), "Describe {item}.", "item", ["Describe tea.", "Describe coffee."]),
    (["tea", "coffee"], "Describe {item}.", "item", ["Describe tea.", "Describe coffee."]),
    ([{"drink": "tea", "n": 1}, {"drink": "coffee", "n": 2}], "{n}: {drink.upper()}", "drink", ["1: TEA", "2: COFFEE"]),
])
def test_series_lists_and_lists_of_dicts_map_too(mp, dashscope, data, template, column, expected):
    mp.user_ns["data"] = data
    frame = mp.run_cell_magic("qwen_map", "data -m qwen-flash --concurrency 1", template)
    assert prompts(dashscope) == expected
    assert list(frame[column]) == (list(data) if column == "item" else [d["drink"] for d in data])
    assert list(frame.index) == (list(data.index) if isinstance(data, pd.Series) else [0, 1])
    assert (frame.state == "complete").all()


def test_notebook_names_fill_the_template_once_and_double_braces_stay_literal(mp, dashscope):
    mp.user_ns["tone"] = "terse"
    mp.run_cell_magic("qwen_map", "reviews --limit 2 -m qwen-flash --concurrency 1",
                      "Be {tone}. {{json}} {text}")
    assert prompts(dashscope) == ["Be terse. {json} Great kettle, boils fast.", "Be terse. {json} Broke after a week."]


def test_every_rows_request_has_its_own_prompt_with_the_system_prompt_image_and_prefix_of_the_first(mp, dashscope):
    mp.user_ns["logo"] = b"\x89PNG\r\n\x1a\n" + bytes(range(64))
    qwen_magics.map(mp.user_ns["reviews"], "Review: {text}", limit=3, model="qwen-flash", system="Answer briefly",
                    image=["logo"], prefix="Label:", concurrency=1)
    bodies = [r.body for r in dashscope.requests if r.path == CHAT_PATH]
    assert len(bodies) == 3
    for body, review in zip(bodies, REVIEWS):
        system, user, prefix = body["messages"]
        assert system == {"role": "system", "content": "Answer briefly"}
        assert user["content"][0] == {"type": "text", "text": f"Review: {review}"}
        assert user["content"][1]["image_url"]["url"].startswith("data:image/png;base64,")
        assert prefix == {"role": "assistant", "content": "Label:", "partial": True}
        assert {k: v for k, v in body.items() if k != "messages"} == {
            k: v for k, v in bodies[0].items() if k != "messages"}
    assert bodies[1]["messages"][1]["content"][1:] == bodies[0]["messages"][1]["content"][1:]
    mp.user_ns["blank"] = ["a", " "]
    with pytest.raises(UsageError, match="^Row 1: The prompt is empty"):
        mp.run_cell_magic("qwen_map", "blank -m qwen-flash", "{item}")
    assert len([r for r in dashscope.requests if r.path == CHAT_PATH]) == 3


def test_a_name_neither_field_nor_notebook_name_is_one_line_listing_the_fields_and_nothing_is_sent(mp, dashscope):
    with pytest.raises(UsageError) as err:
        mp.run_cell_magic("qwen_map", "reviews -m qwen-flash", "Review: {txt}")
    assert str(err.value) == ("{txt}: 'txt' is neither a field of the rows nor a notebook name. The fields are text, "
                              "stars; or define txt in a cell first, or write {{ and }} for literal braces.")
    with pytest.raises(UsageError, match="DATA 'nothing': name 'nothing' is not defined"):
        mp.run_cell_magic("qwen_map", "nothing", "{item}")
    mp.user_ns["answers"] = pd.DataFrame({"answer": ["x"]})
    with pytest.raises(UsageError, match="The data already has a column 'answer', which the result adds"):
        mp.run_cell_magic("qwen_map", "answers", "{answer}")
    assert sent(dashscope) == 0


def test_json_answers_become_columns_and_a_schema_validates_them(mp, dashscope):
    frame = mp.run_cell_magic("qwen_map", "reviews --limit 2 -m qwen-flash -f json --concurrency 1", "Rate: {text}")
    assert list(frame["data.answer"]) == ["Rate: Great kettle, boils fast.", "Rate: Broke after a week."]
    assert list(frame["ok"]) == [True, True] and dashscope.requests[0].body["response_format"] == {"type": "json_object"}

    mp.run_cell("from pydantic import BaseModel\nclass Label(BaseModel):\n    sentiment: str\n    score: int")
    dashscope.enqueue(Script(text='{"sentiment": "positive", "score": 5}', reasoning=""),
                      Script(text='{"sentiment": "negative"}', reasoning=""))
    frame = mp.run_cell_magic("qwen_map", "reviews --limit 2 -m qwen-flash --schema Label --concurrency 1",
                              "Label: {text}")
    assert frame.loc["r0", "sentiment"] == "positive" and frame.loc["r0", "score"] == 5
    assert frame.loc["r1", "state"] == "complete" and frame.loc["r1", "error"].startswith("The answer does not match Label")
    assert end_line(mp) == "2 rows: 2 answered, 1 answers not valid JSON (see error)"


# concurrency, failures

def test_no_more_rows_are_in_flight_than_the_concurrency(mp, dashscope):
    mp.user_ns["many"] = [f"q{i}" for i in range(12)]
    dashscope.enqueue(Script(first_byte_delay=0.15, repeat=12))
    frame = mp.run_cell_magic("qwen_map", "many -m qwen-flash --concurrency 3", "{item}")
    assert (frame.state == "complete").all()
    assert max_overlap(dashscope) == 3


def test_a_rate_limit_storm_halves_the_concurrency_waits_retry_after_and_answers_every_row(mp, dashscope):
    mp.user_ns["many"] = [f"q{i}" for i in range(10)]
    dashscope.enqueue(Script(status=429, retry_after="0.4", repeat=4), Script(first_byte_delay=0.1, repeat=10))
    frame = mp.run_cell_magic("qwen_map", "many -m qwen-flash --concurrency 4", "{item}")
    assert (frame.state == "complete").all() and sorted(frame.answer.str[10:12]) == sorted(f"q{i}" for i in range(10))
    limited = [r for r in dashscope.requests if r.status == 429]
    answered = [r for r in dashscope.requests if r.status == 200]
    assert len(limited) == 4 and len(answered) == 10
    assert min(r.started for r in answered) >= max(r.finished for r in limited) + 0.35  # Retry-After was honoured
    assert max_overlap(type("S", (), {"requests": answered[:4]})) <= 2  # right after the storm: half the concurrency
    assert end_line(mp) == "10 rows: 10 answered"


def test_failed_rows_keep_their_one_line_and_the_end_line_counts_their_kinds(mp, dashscope):
    mp.user_ns["items"] = ["first", "fine", "[[blocked]] this", "fine again"]
    dashscope.enqueue(Script(status=429, retry_after="0", repeat=3))  # the first row: limited on each of its 3 tries
    frame = mp.run_cell_magic("qwen_map", "items -m qwen-flash --concurrency 1", "{item}")
    assert list(frame.state) == ["failed", "complete", "failed", "complete"]
    assert frame.error[0].startswith("Rate limited (429 limit_requests)")
    assert frame.error[2].startswith("Content moderation refused the input")
    assert "\n" not in frame.error[0] + frame.error[2]
    assert end_line(mp) == ("4 rows: 2 answered, 2 failed (rate limit x1, moderation x1): "
                            "run the cell again to retry the failed rows")


@pytest.mark.parametrize("api", ["chat", "dashscope"])
def test_a_row_that_is_always_rate_limited_is_sent_max_retries_plus_one_times_as_far_apart_as_told(mp, dashscope,
                                                                                                    api):
    mp.user_ns["items"] = ["limited"]
    dashscope.enqueue(Script(status=429, retry_after="1", repeat=50))
    frame = mp.run_cell_magic("qwen_map", f"items -m qwen-plus --api {api} --concurrency 8", "{item}")
    sent = [r for r in dashscope.requests if r.method == "POST"]
    assert len(sent) == 3  # max_retries 2: one try and two retries, not the SDK's retries inside the map's
    assert all(later.started - earlier.started >= 0.95 for earlier, later in zip(sent, sent[1:]))  # Retry-After: 1
    assert frame.state[0] == "failed" and frame.error[0].startswith("Rate limited (429 ")
    assert dashscope.pending == 47


# trying a prompt

def test_dry_run_shows_three_prompts_the_count_and_an_estimate_and_sends_nothing(mp, dashscope, capsys):
    assert mp.run_cell_magic("qwen_map", "reviews -m qwen-flash --dry-run", "Review: {text}") is None
    out = capsys.readouterr().out
    assert sent(dashscope) == 0
    assert out.startswith("Dry run, nothing sent: 6 rows to qwen-flash, ")
    assert "input tokens (Qwen's tokenizer; 48 of them the chat template's" in out
    assert out.count("── row ") == 3 and "Review: Does the job." in out and "Review: Would buy again." not in out


def test_limit_runs_the_first_rows_only(mp, dashscope):
    frame = mp.run_cell_magic("qwen_map", "reviews -m qwen-flash --limit 2 --concurrency 1", "{text}")
    assert prompts(dashscope) == REVIEWS[:2] and list(frame.index) == ["r0", "r1"]


def test_ctrl_c_stops_sending_and_returns_the_partial_frame(mp, dashscope, log_path):
    mp.user_ns["many"] = [f"q{i}" for i in range(40)]
    dashscope.enqueue(Script(first_byte_delay=0.1, repeat=40))

    interrupt_once_answered(dashscope, 6)
    frame = mp.run_cell_magic("qwen_map", "many -m qwen-flash --concurrency 2", "{item}")
    done = (frame.state == "complete").sum()
    assert 4 <= done < 40 and set(frame.state) == {"complete", "not run"}
    time.sleep(0.5)
    assert sent(dashscope) < 40 and sent(dashscope) <= done + 2 + 1  # nothing more was sent after the stop
    assert end_line(mp).endswith(f"{40 - done} not run: run the cell again to send the rows not answered")
    assert len(logged(log_path)) == done


def test_running_the_cell_again_sends_only_the_rows_not_answered_and_fresh_sends_all(mp, dashscope):
    mp.user_ns["items"] = ["a", "[[blocked]] b", "c", "d"]
    mp.run_cell_magic("qwen_map", "items -m qwen-flash --limit 2", "{item}")
    assert sent(dashscope) == 2
    mp.user_ns["items"][1] = "b"  # the failed row, fixed
    dashscope.reset()
    frame = mp.run_cell_magic("qwen_map", "items -m qwen-flash --concurrency 1", "{item}")
    assert prompts(dashscope) == ["b", "c", "d"] and (frame.state == "complete").all()
    assert end_line(mp) == "4 rows: 4 answered (1 from the run log)"
    dashscope.reset()
    mp.run_cell_magic("qwen_map", "items -m qwen-flash --concurrency 1", "{item}")
    assert sent(dashscope) == 0
    mp.run_cell_magic("qwen_map", "items -m qwen-flash --concurrency 1 --fresh", "{item}")
    assert prompts(dashscope) == ["a", "b", "c", "d"]
    dashscope.reset()
    mp.run_cell_magic("qwen_map", "items -m qwen-flash --concurrency 1 -t 0.5", "{item}")  # another request
    assert sent(dashscope) == 4


# the progress view

def test_the_progress_view_refreshes_a_bounded_number_of_times_whatever_the_row_count(mp, dashscope):
    mp.user_ns["many"] = [f"q{i}" for i in range(500)]
    started = time.monotonic()
    frame = mp.run_cell_magic("qwen_map", "many -m qwen-flash --concurrency 16", "{item}")
    elapsed = time.monotonic() - started
    assert (frame.state == "complete").all()
    shown = progress_outputs(mp)
    ids = {(o.get("transient") or {}).get("display_id") for o in shown}
    assert len(ids) == 1  # one display, updated in place
    assert len(shown) <= elapsed * 10 + 3, (len(shown), elapsed)
    assert end_line(mp) == "500 rows: 500 answered"


def test_answers_in_the_progress_view_are_escaped(mp, dashscope):
    mp.user_ns["one"] = ["x"]
    dashscope.enqueue(Script(text="<img src=x onerror=alert(1)> hi", reasoning=""))
    mp.run_cell_magic("qwen_map", "one -m qwen-flash", "{item}")
    html = progress_outputs(mp)[-1]["data"]["text/html"]
    assert "<img" not in html and "&lt;img src=x onerror=alert(1)&gt; hi" in html


def test_a_terminal_gets_a_tqdm_bar_and_the_end_line(mp, dashscope, capsys):
    mp.run_line_magic("config", "QwenMagics.display_mode = 'terminal'")
    mp.run_cell_magic("qwen_map", "reviews -m qwen-flash --limit 3", "{text}")
    out = capsys.readouterr().out
    assert "3/3" in out and "row/s" in out and out.rstrip().endswith("3 rows: 3 answered")
    assert not progress_outputs(mp)


# from Python

def test_map_from_python_takes_the_options_as_keywords(mp, dashscope):
    mp.run_cell("from pydantic import BaseModel\nclass Tag(BaseModel):\n    tag: str")
    dashscope.enqueue(Script(text='{"tag": "kettle"}', reasoning=""))
    frame = qwen_magics.map(mp.user_ns["reviews"], "Tag: {text}", model="qwen-flash", temperature=0.2, limit=1,
                            schema=mp.user_ns["Tag"], thinking=False)
    body = dashscope.requests[0].body
    assert body["temperature"] == 0.2 and body["enable_thinking"] is False
    assert body["response_format"]["json_schema"]["name"] == "Tag" and frame.loc["r0", "tag"] == "kettle"
    with pytest.raises(qwen_magics.errors.InvalidInput, match="map\\(\\) has no option 'temprature'"):
        qwen_magics.map(["x"], "{item}", temprature=0.2)


# the local model

@pytest.mark.local
def test_the_local_model_maps_rows_in_turn(mp, dashscope, capsys):
    from qwen_magics.local.model import unload

    mp.user_ns["words"] = ["cat", "dog", "fish"]
    try:
        frame = mp.run_cell_magic("qwen_map", "words -m local:0.5b -t 0 --max-tokens 6", "Say {item}.")
    finally:
        unload()
    assert "concurrency" not in capsys.readouterr().out + str(notices(mp))  # the user asked for none
    assert (frame.state == "complete").all(), frame.error.dropna().unique().tolist()
    assert (frame.answer.str.len() > 0).all() and sent(dashscope) == 0


def notices(shell) -> list[str]:
    """The notices shown in the cell, as %%qwen shows its own: rich displays, not printed text."""
    return [o["data"]["text/plain"] for o in shell.display_pub.outputs
            if o["data"]["text/plain"].startswith("⚠") and "color:#a65e00" in o["data"].get("text/html", "")]


@pytest.mark.local
def test_the_no_key_notice_is_said_once_per_kernel_and_only_of_what_was_asked(mp, monkeypatch, capsys):
    from qwen_magics.local.model import default_model, unload

    monkeypatch.delenv("DASHSCOPE_API_KEY")
    mp.user_ns["words"] = ["cat", "dog"]
    try:
        mp.run_cell_magic("qwen_map", "words -t 0 --max-tokens 2", "Say {item}.")
        mp.run_cell_magic("qwen_map", "words -t 0 --max-tokens 3", "Say {item}.")
        mp.run_line_magic("qwen", "-t 0 --max-tokens 2 hi")
        asked = mp.run_cell_magic("qwen_map", "words -t 0 --max-tokens 2 --concurrency 4", "Say {item}.")
    finally:
        unload()
    assert notices(mp) == [
        f"⚠ No DASHSCOPE_API_KEY set: answering with {default_model().title}, running locally in this kernel "
        "(set DASHSCOPE_API_KEY to use Model Studio)",
        "⚠ The local model takes rows in turn: --concurrency 4 runs as 1"]
    assert "⚠" not in capsys.readouterr().out  # not printed as monospace text
    assert (asked.state == "complete").all()


# a real kernel, killed mid-map

@pytest.mark.e2e
def test_a_kernel_killed_mid_map_loses_only_the_rows_in_flight(dashscope, log_path, monkeypatch):
    monkeypatch.setenv("PYTHONUNBUFFERED", "1")
    cell = ("%load_ext qwen_magics\n%config QwenMagics.max_retries = 0\n"
            "items = [f'question {i}' for i in range(30)]\n")
    body = "%%qwen_map items -m qwen-flash --concurrency 2\nAnswer {item}"
    dashscope.enqueue(Script(first_byte_delay=0.15, repeat=30))
    km, kc = start_new_kernel(kernel_name="python3")
    try:
        kc.execute(cell)
        kc.execute(body)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(logged_so_far(log_path)) < 6:
            time.sleep(0.05)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    answered = {prompt for prompt, state, *_ in logged(log_path) if state == "complete"}
    assert 6 <= len(answered) < 30
    dashscope.reset()
    km, kc = start_new_kernel(kernel_name="python3")
    try:
        kc.execute_interactive(cell, timeout=60)
        reply = kc.execute_interactive(body + "\n", timeout=120)
        assert reply["content"]["status"] == "ok"
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    again = prompts(dashscope)
    assert len(again) == 30 - len(answered) and not set(again) & answered


# the notebook

@pytest.mark.local("any")  # the default local model, whichever is installed
@pytest.mark.timeout(600)  # 30 rows on the local model (the 1.5B, where it is installed)
def test_the_datasets_notebook_labels_the_reviews_offline(dashscope, tmp_path, monkeypatch):
    from nbclient import NotebookClient

    monkeypatch.delenv("DASHSCOPE_API_KEY")
    nb = nbformat.read(ROOT / "notebooks" / "datasets.ipynb", as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    assert not [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    plain = "\n".join(o.get("text", "") + o.get("data", {}).get("text/plain", "") for c in nb.cells
                      if c.cell_type == "code" for o in c.get("outputs", []))
    assert "30 rows: 30 answered" in plain and sent(dashscope) == 0
