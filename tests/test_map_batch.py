"""%%qwen_map --batch and %qwen_batch against the loopback's files and batches routes, with a real run log.

Every test's run log is a SQLite file in its own tmp folder; what was uploaded
and sent is read from the loopback server.  A "new kernel" is a new
InteractiveShell with the extension loaded afresh: it shares nothing with the
first but the run log file and the server's jobs.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import interrupt_once_a_batch_job_runs
from IPython.core.error import UsageError
from loopback import BATCHES_PATH, BLOCK_MARKER, CHAT_PATH, DEFAULT_KEY, FILES_PATH, Script
from loopback_batch import BatchTiming

from qwen_magics import batch
from qwen_magics.request import Endpoint

TEXTS = [f"Review number {i}: {'great' if i % 3 else 'broken'} kettle." for i in range(20)]
CELL = "Label this review: {text}"


@pytest.fixture
def log_path(run_log_in_a_temporary_folder):
    """This test's run log (conftest points QWEN_MAGICS_LOG at it)."""
    return run_log_in_a_temporary_folder


@pytest.fixture
def mb(ip, log_path):
    """The shell, with the run log in tmp, 20 reviews, and the SDK's own retries off."""
    ip.run_line_magic("config", "QwenMagics.max_retries = 0")
    ip.user_ns["reviews"] = pd.DataFrame({"text": TEXTS, "stars": [i % 5 + 1 for i in range(20)]},
                                         index=[f"r{i}" for i in range(20)])
    return ip


@pytest.fixture
def ep(dashscope) -> Endpoint:
    return Endpoint(base_url=dashscope.url + "/compatible-mode/v1", region="singapore", max_retries=0)


def new_kernel():
    """A fresh shell with the extension loaded: nothing carried over from the last one but files and env."""
    from IPython.core.displaypub import CapturingDisplayPublisher
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    config = Config()
    config.HistoryManager.enabled = False
    InteractiveShell.clear_instance()
    shell = InteractiveShell.instance(config=config)
    shell.display_pub = CapturingDisplayPublisher()
    shell.run_line_magic("load_ext", "qwen_magics")
    shell.run_line_magic("config", "QwenMagics.display_mode = 'notebook'")
    shell.run_line_magic("config", "QwenMagics.max_retries = 0")
    return shell


def uploads(server) -> list[list[dict]]:
    return [[json.loads(line) for line in data.decode().splitlines()] for data in server.batches.uploads()]


def chats(server) -> int:
    return sum(r.path == CHAT_PATH for r in server.requests)


def logged(path: Path, kind: str) -> list[tuple]:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT prompt, state, group_id, cost, answer FROM runs WHERE group_kind = ? "
                            "ORDER BY seq", (kind,)).fetchall()


def end_line(ip) -> str:
    shown = [o for o in ip.display_pub.outputs if "qwen-map" in o["data"].get("text/html", "")]
    return shown[-1]["data"]["text/plain"].splitlines()[-1]


# the round trip

def test_a_batch_map_gives_the_live_maps_frame_at_half_price_and_a_live_rerun_sends_nothing(mb, dashscope, log_path):
    mb.run_line_magic("config", "QwenMagics.prices = {'qwen-flash': [1.0, 4.0]}")
    frame = mb.run_cell_magic("qwen_map", "reviews -m qwen-flash -t 0.2 --batch -o labels", CELL)

    (upload,) = uploads(dashscope)
    assert [line["custom_id"] for line in upload] == [f"row-{i}" for i in range(20)]
    assert upload[0]["body"] == {"model": "qwen-flash", "temperature": 0.2,
                                 "messages": [{"role": "user", "content": f"Label this review: {TEXTS[0]}"}]}
    (job,) = dashscope.batches.jobs.values()
    output = dashscope.batches.files[job.output_file_id].data.decode().splitlines()
    assert [json.loads(line)["custom_id"] for line in output] != [line["custom_id"] for line in upload]
    assert list(frame.index) == [f"r{i}" for i in range(20)] and mb.user_ns["labels"] is frame
    for label, text in zip(frame.index, TEXTS):  # each answer on its own row, whatever the output's order
        assert frame.loc[label, "answer"].startswith(f"**Echo:** Label this review: {text}")
    assert (frame.state == "complete").all() and frame.elapsed.isna().all() and (frame.output_tokens > 0).all()
    assert end_line(mb) == "20 rows: 20 answered"
    assert chats(dashscope) == 0

    live = mb.run_cell_magic("qwen_map", "reviews -m qwen-flash -t 0.2 --fresh", CELL)
    assert list(live.columns) == list(frame.columns) and list(live.index) == list(frame.index)
    assert list(live.answer) == list(frame.answer) and list(live.input_tokens) == list(frame.input_tokens)

    rows = logged(log_path, "dataset")
    assert len(rows) == 40 and len({r[2] for r in rows}) == 1
    batch_cost, live_cost = sum(r[3] for r in rows[:20]), sum(r[3] for r in rows[20:])
    assert batch_cost == pytest.approx(live_cost / 2) and batch_cost > 0
    assert [(r[1], r[2]) for r in logged(log_path, "batch")] == [("submitted", rows[0][2]), ("collected", rows[0][2])]

    dashscope.reset()
    mb.run_cell_magic("qwen_map", "reviews -m qwen-flash -t 0.2", CELL)
    assert chats(dashscope) == 0 and end_line(mb) == "20 rows: 20 answered (20 from the run log)"
    stored = log_path.read_bytes() + b"".join(f.data for f in dashscope.batches.files.values())
    assert DEFAULT_KEY.encode() not in stored


def test_failed_rows_keep_their_line_and_kind_and_the_next_batch_sends_only_them(mb, dashscope):
    dashscope.batches.scripts.update({"row-3": Script(status=500), "row-5": Script(fault="moderation_mid")})
    mb.user_ns["reviews"].loc["r7", "text"] = f"rude {BLOCK_MARKER}"
    frame = mb.run_cell_magic("qwen_map", "reviews -m qwen-flash --batch", CELL)
    failed = frame[frame.state == "failed"]
    assert list(failed.index) == ["r3", "r5", "r7"] and (frame.state != "not run").all()
    assert failed.loc["r3", "error"].startswith("Model Studio had a server error (500")
    assert failed.loc["r5", "error"].startswith("Content moderation refused the answer (400 data_inspection_failed)")
    assert failed.loc["r7", "error"].startswith("Content moderation refused the input (400 data_inspection_failed)")
    assert end_line(mb) == ("20 rows: 17 answered, 3 failed (moderation x2, server error x1): "
                            "run the cell again to retry the failed rows")

    dashscope.batches.scripts.clear()
    mb.user_ns["reviews"].loc["r7", "text"] = "polite"
    frame = mb.run_cell_magic("qwen_map", "reviews -m qwen-flash --batch", CELL)
    assert [line["custom_id"] for line in uploads(dashscope)[-1]] == ["row-3", "row-5", "row-7"]
    assert (frame.state == "complete").all() and end_line(mb) == "20 rows: 20 answered (17 from the run log)"


def test_an_expired_job_leaves_its_unfinished_rows_not_run_with_the_reason(mb, dashscope):
    dashscope.batches.timing = BatchTiming(per_line=0.05, expire_after=0.3)
    frame = mb.run_cell_magic("qwen_map", "reviews -m qwen-flash --batch", CELL)
    (job,) = dashscope.batches.jobs
    done = int((frame.state == "complete").sum())
    assert 0 < done < 20 and set(frame.state) == {"complete", "not run"}
    assert set(frame[frame.state == "not run"].error) == {
        f"Not run: batch job {job} expired before this request ran. Submit the rows that were not run again."}
    assert end_line(mb) == f"20 rows: {done} answered, {20 - done} not run: run the cell again to send the rows not answered"


# surviving the kernel

def test_no_wait_then_collect_in_a_new_kernel_gives_the_frame_on_the_original_rows(mb, dashscope, log_path, capsys):
    ids = mb.run_cell_magic("qwen_map", "reviews -m qwen-flash --batch --no-wait", CELL)
    (job,) = ids
    assert capsys.readouterr().out.strip() == (
        f"20 rows submitted as batch job(s) {job} (half price; done within 24 hours): "
        f"collect with %qwen_batch collect {job} -o NAME, or run this cell again")
    assert dashscope.batches.jobs[job].metadata["map"] == logged(log_path, "batch")[0][2]

    other = new_kernel()
    other.run_line_magic("qwen_batch", f"wait {job}")
    frame = other.run_line_magic("qwen_batch", f"collect {job} -o df")
    assert other.user_ns["df"] is frame and list(frame.index) == [f"r{i}" for i in range(20)]
    assert list(frame.columns) == ["text", "stars", "answer", "state", "error", "input_tokens", "output_tokens",
                                   "cost", "elapsed", "request_id"]
    assert frame.cost.isna().all()  # qwen-flash has no price in Singapore: None, never 0
    assert list(frame.text) == TEXTS and list(frame.stars) == [i % 5 + 1 for i in range(20)]
    assert all(a.startswith(f"**Echo:** Label this review: {t}") for a, t in zip(frame.answer, TEXTS))
    assert capsys.readouterr().out.strip().endswith("20 rows: 20 answered")

    again = other.run_line_magic("qwen_batch", f"collect {job}")  # collected twice: the rows are logged once
    assert list(again.answer) == list(frame.answer) and len(logged(log_path, "dataset")) == 20
    other.user_ns["reviews"] = mb.user_ns["reviews"]
    dashscope.reset()
    other.run_cell_magic("qwen_map", "reviews -m qwen-flash", CELL)
    assert chats(dashscope) == 0


def test_ctrl_c_stops_waiting_the_job_goes_on_and_the_cell_run_again_follows_it(mb, dashscope, capsys):
    dashscope.batches.timing = BatchTiming(per_line=0.15)

    interrupt_once_a_batch_job_runs(dashscope)
    assert mb.run_cell_magic("qwen_map", "reviews -m qwen-flash --batch", CELL) is None
    (job,) = dashscope.batches.jobs
    assert end_line(mb).startswith(f"Stopped waiting; batch job(s) {job} keep running at the service: "
                                   f"%qwen_batch wait {job} follows it")
    ep = Endpoint(base_url=dashscope.url + "/compatible-mode/v1", region="singapore")
    assert batch.status(ep, job).status == "in_progress"

    mb.run_line_magic("qwen_batch", f"wait {job}")
    assert end_line(mb).startswith(f"{job}: completed, 20 of 20 done: collect with %qwen_batch collect {job}")
    capsys.readouterr()
    frame = mb.run_cell_magic("qwen_map", "reviews -m qwen-flash --batch", CELL)
    assert capsys.readouterr().out.startswith(f"These rows went as batch job(s) {job} before: following those")
    assert len(dashscope.batches.uploads()) == 1 and (frame.state == "complete").all()


def test_cancel_keeps_the_rows_answered_and_leaves_the_rest_not_run(mb, dashscope, capsys):
    dashscope.batches.timing = BatchTiming(per_line=0.1)
    (job,) = mb.run_cell_magic("qwen_map", "reviews -m qwen-flash --batch --no-wait", CELL)
    time.sleep(0.5)
    mb.run_line_magic("qwen_batch", f"cancel {job}")
    assert f"{job}: cancelling, " in capsys.readouterr().out
    with pytest.raises(UsageError, match=rf"^Batch job {job} is still cancelling \("):
        mb.run_line_magic("qwen_batch", f"collect {job}")
    mb.run_line_magic("qwen_batch", f"wait {job}")
    frame = mb.run_line_magic("qwen_batch", f"collect {job}")
    done = int((frame.state == "complete").sum())
    assert 0 < done < 20 and (frame[frame.state == "not run"].error.str.contains("was cancelled")).all()


# %qwen_batch on its own

def test_list_status_and_a_job_the_log_does_not_know(mb, dashscope, ep, capsys):
    (mine,) = mb.run_cell_magic("qwen_map", "reviews -m qwen-flash --limit 3 --batch --no-wait", CELL)
    (foreign,) = batch.submit(ep, [_request(ep, "hi")], ["q-1"])
    table = mb.run_line_magic("qwen_batch", "")
    assert [row[0] for row in table.rows] == [foreign, mine]
    assert table.rows[1][5] == dashscope.batches.jobs[mine].metadata["map"] and table.rows[0][5] == ""
    mb.run_line_magic("qwen_batch", f"wait {foreign}")
    capsys.readouterr()
    mb.run_line_magic("qwen_batch", f"status {foreign}")
    assert capsys.readouterr().out.strip() == f"{foreign}: completed, 1 of 1 done"
    frame = mb.run_line_magic("qwen_batch", f"collect {foreign} -o plain")
    assert list(frame.columns) == ["custom_id", "answer", "state", "error", "input_tokens", "output_tokens",
                                   "request_id"]
    assert list(frame.custom_id) == ["q-1"] and frame.answer[0].startswith("**Echo:** hi")
    with pytest.raises(UsageError, match=r"^Batch job 'batch_nope' was not found at singapore \(404\)\. Check"):
        mb.run_line_magic("qwen_batch", "status batch_nope")
    with pytest.raises(UsageError, match=r"^%qwen_batch collect needs a job id\. Write e\.g\."):
        mb.run_line_magic("qwen_batch", "collect")


def _request(ep: Endpoint, text: str):
    from qwen_magics.request import Request

    return Request(messages=({"role": "user", "content": text},), model="qwen-flash", endpoint=ep)


# refused before anything is sent

@pytest.mark.parametrize("options, message", [
    ("-m local", "The local model has no batch mode. Drop --batch"),
    ("-m qwen-flash --api responses", "--api responses has no batch mode. Use --api chat"),
    ("-m qwen-flash --region us", "Model Studio offers no Batch API in the us region. Use --region singapore"),
    ("-m qwen-flash --no-wait", "--no-wait goes with --batch. Add --batch"),
])
def test_refused_in_one_line_before_anything_is_uploaded(mb, dashscope, options, message):
    with pytest.raises(UsageError, match=f"^{message}"):
        mb.run_cell_magic("qwen_map", f"reviews {options} --batch" if "no-wait" not in options
                          else f"reviews {options}", CELL)
    assert dashscope.requests == []


def test_batch_test_model_tries_the_flow_free(mb, dashscope):
    frame = mb.run_cell_magic("qwen_map", "reviews -m batch-test-model --limit 5 --batch", CELL)
    assert list(frame.answer) == ["This is a test result."] * 5
    assert next(r for r in dashscope.requests if r.path == BATCHES_PATH).body["endpoint"] == "/v1/chat/ds-test"


def test_ten_thousand_rows_come_back_each_on_its_row(mb, dashscope, log_path):
    dashscope.batches.timing = BatchTiming(validate=0.0, per_line=0.0, finalize=0.0)
    mb.user_ns["many"] = [f"question {i}" for i in range(10_000)]
    started = time.monotonic()
    frame = mb.run_cell_magic("qwen_map", "many -m qwen-flash --batch", "{item}")
    took = time.monotonic() - started
    assert (frame.state == "complete").all()
    assert all(a.startswith(f"**Echo:** question {i}") for i, a in enumerate(frame.answer))
    assert len(logged(log_path, "dataset")) == 10_000 and [r.path for r in dashscope.requests].count(FILES_PATH) == 1
    assert took < 60, took
