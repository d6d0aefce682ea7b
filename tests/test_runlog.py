"""The run log on real SQLite files in temporary folders: writes, queries, the cache key, and every way the file can fail."""

from __future__ import annotations

import base64
import json
import os
import random
import resource
import signal
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path

import pytest

from qwen_magics import events as ev
from qwen_magics.errors import InvalidInput
from qwen_magics.request import Endpoint, Request, Sampling
from qwen_magics.result import Result
from qwen_magics.runlog import Record, RunLog, cache_key_of, default_path, record_from
from qwen_magics.runlog.writer import Writer

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40
SECRET = "sk-runlogtest0123456789abcdef"
OTHER_SECRET = "plainSECRET4242value"  # a key of another shape, for an endpoint with its own variable


@pytest.fixture(autouse=True)
def log_env(tmp_path, monkeypatch):
    """The default log is a file in this test's folder, never the user's own."""
    monkeypatch.setenv("QWEN_MAGICS_LOG", str(tmp_path / "default" / "log.db"))
    return tmp_path / "default" / "log.db"


@pytest.fixture
def log(tmp_path):
    warnings: list[str] = []
    runlog = RunLog(tmp_path / "runs" / "log.db", on_warning=warnings.append)
    runlog.warnings = warnings
    yield runlog
    runlog.close()


def request(prompt: str = "What is entropy?", **changes) -> Request:
    base = Request(messages=({"role": "system", "content": "Be brief."}, {"role": "user", "content": prompt}),
                   model="qwen-plus", endpoint=Endpoint(base_url="https://dashscope-intl.aliyuncs.com/compatible-mode/v1",
                                                        region="intl"),
                   sampling=Sampling(temperature=0.7, seed=1))
    return replace(base, **changes)


def result(req: Request, text: str = "Entropy measures disorder.", **fields) -> Result:
    res = Result.for_request(req)
    for event in (ev.Started(request_id="req-1", model=req.model), ev.ReasoningDelta("Think."), ev.TextDelta(text),
                  ev.Usage(input=12, output=34, reasoning=5, cached=2), ev.Finished("stop")):
        res.apply(event)
    res.close()
    for name, value in fields.items():
        setattr(res, name, value)
    return res


def file_bytes(path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))


def count(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT count(*) FROM runs").fetchone()[0]


def test_default_path_is_the_env_var_else_the_user_data_folder(log_env, monkeypatch):
    assert default_path() == log_env
    runlog = RunLog()
    assert runlog.write(Record(model="qwen-plus")) and count(log_env) == 1  # the folder was created
    monkeypatch.delenv("QWEN_MAGICS_LOG")
    assert default_path().parts[-2:] == ("qwen-magics", "log.db")


def test_a_run_is_recorded_and_read_back_whole(log):
    image = "data:image/png;base64," + base64.b64encode(PNG).decode()
    req = request(messages=({"role": "user", "content": [{"type": "text", "text": "Describe it"},
                                                          {"type": "image_url", "image_url": {"url": image}}]},))
    rec = record_from(result(req), req, conversation="lab", group_id="g1", group_kind="compare", kernel_id="k-1")
    assert log.write(rec)
    back = log.get(rec.id)
    assert back == rec and back.prompt == "Describe it"
    assert (back.model, back.protocol, back.endpoint, back.answer, back.reasoning) == (
        "qwen-plus", "chat", "intl", "Entropy measures disorder.", "Think.")
    assert (back.input_tokens, back.output_tokens, back.reasoning_tokens, back.cached_tokens) == (12, 34, 5, 2)
    assert (back.finish_reason, back.state, back.request_id, back.group_kind) == ("stop", "complete", "req-1", "compare")
    assert back.parameters["seed"] == 1 and back.elapsed is not None
    url = back.messages[0]["content"][1]["image_url"]["url"]
    assert url.startswith("data:image/png;base64,… (10,248 bytes, sha256 ") and len(url) < 80
    assert base64.b64encode(PNG)[:40] not in file_bytes(log.path)


def test_base_url_is_logged_without_credentials_or_query(log):
    req = request(endpoint=Endpoint(base_url="https://user:tok@example.test:8443/v1?token=abc"))
    assert record_from(result(req), req).endpoint == "https://example.test:8443/v1"


def test_no_api_key_reaches_the_file(log, monkeypatch):
    monkeypatch.setenv("DASHSCOPE_API_KEY", SECRET)
    monkeypatch.setenv("OTHER_KEY", OTHER_SECRET)
    for env, key in (("DASHSCOPE_API_KEY", SECRET), ("OTHER_KEY", OTHER_SECRET)):
        req = request(f"my key is {key}", endpoint=Endpoint(base_url=f"https://h.test/v1?k={key}", api_key_env=env))
        res = result(req, text=f"echo {key}", error=f"401 for {key}", reasoning=key,
                     tool_runs=[{"name": "f", "arguments": json.dumps({"k": key}), "output": key}])
        rec = record_from(res, req)
        assert key not in repr(vars(rec))
        log.write_async(rec)
    log.write({"model": "m", "answer": f"plain dict with {SECRET}", "error": SECRET,
               "messages": [{"role": "user", "content": SECRET}]})
    assert log.flush(10)
    assert count(log.path) == 3 and Path(str(log.path) + "-wal").exists()
    raw = file_bytes(log.path)
    assert SECRET.encode() not in raw and OTHER_SECRET.encode() not in raw
    assert b"***" in raw


def test_two_processes_writing_at_once_lose_nothing(tmp_path):
    path, go = tmp_path / "shared" / "log.db", tmp_path / "go"
    script = textwrap.dedent(f"""
        import os, sys, time
        from qwen_magics.runlog import Record, RunLog
        warned = []
        log = RunLog({str(path)!r}, on_warning=warned.append)
        while not os.path.exists({str(go)!r}):
            time.sleep(0.001)
        stored = sum(log.write(Record(model=sys.argv[1], answer=str(i))) for i in range(200))
        print(stored, warned)
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script, name], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for name in ("a", "b")]
    time.sleep(0.5)
    go.touch()
    outputs = [p.communicate(timeout=90) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert [out.strip() for out, _ in outputs] == ["200 []", "200 []"]
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT model, count(*) FROM runs GROUP BY model").fetchall() == [("a", 200), ("b", 200)]


def in_child(work, as_nobody: bool = False) -> dict:
    """Run ``work()`` in a forked process (``as_nobody`` when this is root, so file modes bind); its JSON answer."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read)
            if as_nobody and os.geteuid() == 0:
                os.setgid(65534)
                os.setuid(65534)
            answer = json.dumps(work()).encode()
        except BaseException as error:  # reported to the parent as the test's failure
            answer = json.dumps({"raised": repr(error)}).encode()
        os.write(write, answer)
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        answer = json.loads(pipe.read())
    os.waitpid(pid, 0)
    return answer


def test_a_read_only_folder_costs_one_warning_and_no_run():
    folder = Path(tempfile.mkdtemp(prefix="qwen-runlog-ro-"))
    try:
        folder.chmod(0o555)

        def work():
            warned = []
            runlog = RunLog(folder / "log.db", on_warning=warned.append)
            return {"writes": [runlog.write(Record(model="m")) for _ in range(3)], "recent": len(runlog.recent()),
                    "warned": warned}

        answer = in_child(work, as_nobody=True)
    finally:
        folder.chmod(0o755)
        for leftover in folder.iterdir():
            leftover.unlink()
        folder.rmdir()
    assert answer.get("writes") == [False, False, False], answer
    assert answer["recent"] == 0 and len(answer["warned"]) == 1
    line = answer["warned"][0]
    assert "\n" not in line and "could not write the run log" in line and "QwenMagics.log = False" in line


def test_a_full_disk_costs_one_warning_and_keeps_what_was_stored(tmp_path):
    path = tmp_path / "full" / "log.db"
    RunLog(path).write(Record(model="m", answer="kept"))

    def work():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG, like a full disk
        limit = sum(p.stat().st_size for p in path.parent.iterdir())
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        warned = []
        runlog = RunLog(path, on_warning=warned.append)
        writes = [runlog.write(Record(model="m", answer="x" * 200_000)) for _ in range(2)]
        return {"writes": writes, "kept": [r.answer for r in runlog.recent()], "warned": warned}

    answer = in_child(work)
    assert answer.get("writes") == [False, False], answer
    assert answer["kept"] == ["kept"] and len(answer["warned"]) == 1 and "could not write" in answer["warned"][0]


def test_a_folder_that_cannot_be_created_costs_one_warning(tmp_path):
    (tmp_path / "a-file").write_text("not a folder")
    warned: list[str] = []
    runlog = RunLog(tmp_path / "a-file" / "log.db", on_warning=warned.append)
    runlog.write_async(Record(model="m"))
    assert runlog.flush(10)
    assert runlog.write(Record(model="m")) is False and runlog.search("x") == [] and runlog.get("ab") is None
    assert len(warned) == 1 and runlog.warning and "a-file" in runlog.warning


def test_a_lock_held_past_the_retries_costs_a_warning_then_writing_resumes(log):
    log.write(Record(model="m"))
    fast = RunLog(log.path, on_warning=log.warnings.append, timeout=0.1, retries=1)
    holder = sqlite3.connect(log.path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    started = time.monotonic()
    assert fast.write(Record(model="m")) is False
    assert time.monotonic() - started < 5
    assert len(log.warnings) == 1 and "locked" in log.warnings[0]
    holder.execute("ROLLBACK")
    holder.close()
    assert fast.write(Record(model="m")) and count(log.path) == 2
    fast.close()


def test_a_file_that_is_not_sqlite_is_set_aside_not_deleted(log):
    log.path.parent.mkdir(parents=True)
    junk = b"these are somebody's notes, not a database" * 100
    log.path.write_bytes(junk)
    assert log.write(Record(model="m", answer="fresh"))
    kept = list(log.path.parent.glob("log.db.corrupt-*"))
    assert [k.read_bytes() for k in kept if not k.name.endswith(("-wal", "-shm"))] == [junk]
    assert [r.answer for r in log.recent()] == ["fresh"]
    assert len(log.warnings) == 1 and kept[0].name in log.warnings[0]


@pytest.mark.parametrize("table", ["customers (name TEXT)", "runs (x TEXT)"])
def test_another_programs_database_is_set_aside_untouched(log, table):
    log.path.parent.mkdir(parents=True)
    with sqlite3.connect(log.path) as foreign:
        foreign.execute(f"CREATE TABLE {table}")
        foreign.execute(f"INSERT INTO {table.split()[0]} VALUES ('Ada')")
    foreign.close()
    before = log.path.read_bytes()
    assert log.write(Record(model="m"))
    [kept] = log.path.parent.glob("log.db.corrupt-*")
    assert kept.read_bytes() == before
    assert count(log.path) == 1 and len(log.warnings) == 1


V1 = """
CREATE TABLE runs (
    seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, started TEXT NOT NULL,
    model TEXT, protocol TEXT, endpoint TEXT, prompt TEXT, messages TEXT, parameters TEXT,
    answer TEXT, reasoning TEXT, tool_runs TEXT, finish_reason TEXT, state TEXT, error TEXT,
    input_tokens INTEGER, output_tokens INTEGER, reasoning_tokens INTEGER, cached_tokens INTEGER,
    ttft REAL, elapsed REAL, request_id TEXT,
    conversation TEXT, group_id TEXT, group_kind TEXT, notebook TEXT, kernel_id TEXT);
CREATE INDEX runs_started ON runs(started);
PRAGMA application_id = 1366773095;
PRAGMA user_version = 1;
INSERT INTO runs (id, started, model, prompt, messages, parameters, answer, tool_runs, state, input_tokens,
                  output_tokens, reasoning_tokens, cached_tokens)
VALUES ('0ld0ne', '2024-03-01T09:00:00.000000+00:00', 'qwen-max', 'Old question',
        '[{"role": "user", "content": "Old question"}]', '{}', 'An answer about thermodynamics', '[]', 'complete',
        7, 8, 0, 0);
"""


def test_a_version_1_file_is_migrated_and_keeps_its_runs(log):
    log.path.parent.mkdir(parents=True)
    with sqlite3.connect(log.path) as old:
        old.executescript(V1)
    old.close()
    runlog = RunLog(log.path, on_warning=log.warnings.append)
    old_run = runlog.get("0ld")
    assert old_run is not None and old_run.answer == "An answer about thermodynamics" and old_run.cost is None
    assert [r.id for r in runlog.search("thermodynamics")] == ["0ld0ne"]
    req = request()
    assert runlog.write(record_from(result(req), req))
    assert runlog.cached(cache_key_of(req)).model == "qwen-plus"
    assert runlog.cost()[0]["input"] == 7 and log.warnings == [] and not list(log.path.parent.glob("*corrupt*"))
    runlog.close()


def test_a_file_from_a_later_version_is_used_as_it_is(log):
    log.write(Record(model="m"))
    with sqlite3.connect(log.path) as newer:
        newer.execute("ALTER TABLE runs ADD COLUMN rating INTEGER")
        newer.execute("PRAGMA user_version = 99")
    newer.close()
    runlog = RunLog(log.path, on_warning=log.warnings.append)
    assert runlog.write(Record(model="n")) and [r.model for r in runlog.recent()] == ["n", "m"]
    assert log.warnings == []
    runlog.close()


def fts5_available() -> bool:
    try:
        sqlite3.connect(":memory:").execute("CREATE VIRTUAL TABLE t USING fts5(a)")
    except sqlite3.OperationalError:
        return False
    return True


@pytest.mark.parametrize("full_text", [True, False], ids=["fts5", "like"])
def test_search_finds_every_word_in_prompts_and_answers(tmp_path, full_text):
    if full_text and not fts5_available():
        pytest.skip("this SQLite build has no FTS5")
    runlog = RunLog(tmp_path / "log.db", full_text=full_text)
    texts = [("What is entropy?", "A measure of disorder in a gas."), ("Tell me about gas laws", "PV = nRT"),
             ("Entropy of an ideal gas", "It grows with volume."), ("熵是什么？", "熵是无序的度量。"),
             ("Discount", "50% off today"), ("Discount", "500 off today"), ("Unrelated", "Nothing here")]
    for i, (prompt, answer) in enumerate(texts):
        runlog.write(Record(model="m", started=f"2025-01-0{i + 1}T00:00:00.000000+00:00", answer=answer,
                            messages=[{"role": "user", "content": prompt}]))
    with runlog.connect() as conn:
        has_index = conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'runs_fts'").fetchone()[0]
    assert has_index == full_text

    def prompts(text: str, n: int = 20) -> list[str]:
        return [r.prompt for r in runlog.search(text, n)]

    assert prompts("ENTROP") == ["Entropy of an ideal gas", "What is entropy?"]
    assert prompts("entropy gas") == ["Entropy of an ideal gas", "What is entropy?"]
    assert prompts("gas", 2) == ["Entropy of an ideal gas", "Tell me about gas laws"]
    assert prompts("无序") == ["熵是什么？"]
    assert prompts("50%") == ["Discount"] and runlog.search("50%")[0].answer == "50% off today"
    assert prompts("entropy nothing") == [] and prompts('"quoted" (x)') == []
    assert len(prompts("   ")) == len(texts)
    runlog.close()


def test_get_accepts_a_unique_id_prefix(log):
    for id in ("abc123", "abd456"):
        log.write(Record(model=id, id=id))
    assert log.get("ABD").model == "abd456" and log.get("abc123").model == "abc123"
    assert log.get("zz") is None and log.get("") is None
    with pytest.raises(InvalidInput, match="More than one run has an id starting with 'ab'. Give more of the id"):
        log.get("ab")


def test_cost_totals_per_model_and_day(log):
    runs = [("qwen-plus", "2025-02-01T08:00", 1000, 500, 0.01), ("qwen-plus", "2025-02-01T20:00", 3000, 500, None),
            ("qwen-max", "2025-02-01T09:00", 10, 20, None), ("qwen-plus", "2025-02-02T09:00", 1, 2, 0.5)]
    for model, started, input_, output, cost in runs:
        log.write(Record(model=model, started=started + ":00.000000+00:00", input_tokens=input_,
                         output_tokens=output, cost=cost))
    totals = log.cost()
    assert [(t["model"], t["day"], t["runs"], t["input"], t["output"], t["cost"]) for t in totals] == [
        ("qwen-max", "2025-02-01", 1, 10, 20, None), ("qwen-plus", "2025-02-01", 2, 4000, 1000, 0.01),
        ("qwen-plus", "2025-02-02", 1, 1, 2, 0.5)]
    priced = log.cost(since="2025-02-01", prices={"qwen-plus": [0.4, 1.2]})
    assert priced[1]["cost"] == pytest.approx((4000 * 0.4 + 1000 * 1.2) / 1e6)
    assert [t["day"] for t in log.cost(since="2025-02-02")] == ["2025-02-02"]
    with pytest.raises(InvalidInput, match="Not a date: 'last week'. Give a date like 2025-01-31"):
        log.cost(since="last week")


def test_delete_one_run_or_all_before_a_date(log):
    for day in (1, 2, 3):
        log.write(Record(model="m", id=f"run{day}", started=f"2025-03-0{day}T12:00:00.000000+00:00",
                         answer=f"answer about zebras {day}"))
    assert log.delete("run2") and not log.delete("run2")
    assert log.get("run2") is None and [r.id for r in log.search("zebras")] == ["run3", "run1"]
    assert log.delete_before("2025-03-03") == 1
    assert [r.id for r in log.recent()] == ["run3"]


def test_the_cache_key_changes_with_every_input_and_never_with_the_key(monkeypatch):
    key = cache_key_of(request())
    monkeypatch.setenv("DASHSCOPE_API_KEY", SECRET)
    assert cache_key_of(request()) == key  # the same request built again, with a key set
    schema = {"type": "json_schema", "json_schema": {"name": "a", "schema": {"type": "object"}}}
    variants = [request(sampling=Sampling(temperature=0.7, seed=2)), request(sampling=Sampling(temperature=0.8, seed=1)),
                request(model="qwen-max"), request("What is enthalpy?"), request(protocol="responses"),
                request(endpoint=Endpoint(base_url="http://127.0.0.1:9/v1")), request(thinking=True),
                request(response_format=schema),
                request(response_format={**schema, "json_schema": {"name": "a", "schema": {"type": "array"}}})]
    keys = {cache_key_of(v) for v in variants}
    assert len(keys) == len(variants) and key not in keys


def test_cached_returns_the_latest_complete_run_with_the_key(log):
    req = request()
    key = cache_key_of(req)
    first = record_from(result(req, text="first"), req, started="2025-01-01T00:00:00.000000+00:00")
    second = record_from(result(req, text="second"), req, started="2025-01-02T00:00:00.000000+00:00")
    cut = record_from(result(req, text="cut", state="incomplete"), req, started="2025-01-03T00:00:00.000000+00:00")
    for rec in (first, second, cut):
        log.write(rec)
    assert log.cached(key).id == second.id and log.cached(key).answer == "second"
    assert log.cached(cache_key_of(request(model="qwen-max"))) is None


def test_cached_many_gives_each_keys_latest_complete_run_as_cached_does(log):
    prompts = [f"What is {i} + {i}?" for i in range(1_200)]  # more keys than one query takes
    for day, text, state in (("01", "first", "complete"), ("02", "second", "complete"), ("03", "cut", "incomplete")):
        for prompt in prompts[::2]:
            req = request(prompt)
            log.write(record_from(result(req, text=f"{text} {prompt}", state=state), req,
                                  started=f"2025-01-{day}T00:00:00.000000+00:00"))
    keys = [cache_key_of(request(prompt)) for prompt in prompts]
    found = log.cached_many(keys)
    assert sorted(found) == sorted(keys[::2])
    assert all(found[key].answer == f"second {prompt}" == log.cached(key).answer
               for key, prompt in zip(keys[::2], prompts[::2]))
    assert log.cached_many([]) == {}


def test_write_async_stores_off_the_callers_thread_and_flush_waits(log):
    for i in range(50):
        log.write_async(Record(model="m", answer=str(i)))
    assert log.flush(10) and count(log.path) == 50
    log.write_async(Record(model="m"))
    log.close()  # drains the queue
    assert count(log.path) == 51


def test_rows_queued_in_a_stream_share_batches_in_order_and_flush_stores_a_gathering_batch_at_once():
    from qwen_magics.runlog import writer as writer_module

    batches: list[list[dict]] = []
    writer = Writer(batches.append)
    rows = [{"n": i} for i in range(250)]
    for row in rows:
        writer.put(row)
    assert writer.flush(10)
    assert [row for batch in batches for row in batch] == rows
    assert all(len(batch) <= writer_module._BATCH for batch in batches) and len(batches) <= 10
    writer.put({"n": "last"})
    started = time.monotonic()
    assert writer.flush(10) and batches[-1] == [{"n": "last"}]
    assert time.monotonic() - started < 5  # not held for the batch's whole gathering
    writer.stop()


def test_an_idle_writer_ends_its_thread_and_a_later_row_starts_another():
    stored, idled = [], []
    before = set(threading.enumerate())
    writer = Writer(stored.extend, idle=0.1, on_idle=lambda: idled.append(True))

    def settled(times):
        deadline = time.monotonic() + 10
        while len(idled) < times or set(threading.enumerate()) - before:
            assert time.monotonic() < deadline, "the writer's thread did not end"
            time.sleep(0.02)

    writer.put({"n": 1})
    assert writer.flush(5) and stored == [{"n": 1}]
    settled(1)
    assert writer.flush(5)  # nothing running, nothing to wait for
    writer.put({"n": 2})
    assert writer.flush(5) and stored == [{"n": 1}, {"n": 2}]
    settled(2)


def test_to_dataframe_has_every_run(log):
    for i in range(3):
        log.write(Record(model=f"m{i}", input_tokens=i))
    frame = log.to_dataframe()
    assert list(frame["model"]) == ["m0", "m1", "m2"] and frame["input_tokens"].sum() == 3
    assert str(frame["started"].dtype).startswith("datetime64")


def test_recent_and_search_answer_fast_on_100k_runs(tmp_path):
    path = tmp_path / "big.db"
    RunLog(path).write(Record(model="seed"))  # creates the schema and its indexes
    rng = random.Random(7)
    words = ["".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=rng.randint(4, 9))) for _ in range(3000)]
    rows = []
    for i in range(100_000):
        prompt = " ".join(rng.choices(words, k=8))
        rows.append((uuid.uuid4().hex, f"2025-{1 + i % 12:02d}-{1 + i % 28:02d}T{i % 24:02d}:00:00.{i:06d}+00:00",
                     f"qwen-{i % 3}", prompt, json.dumps([{"role": "user", "content": prompt}]), "{}",
                     " ".join(rng.choices(words, k=25)), "[]", "complete", 10, 40, 0, 0))
    with sqlite3.connect(path) as conn:
        conn.executemany("INSERT INTO runs (id, started, model, prompt, messages, parameters, answer, tool_runs, "
                         "state, input_tokens, output_tokens, reasoning_tokens, cached_tokens) "
                         "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    conn.close()
    runlog = RunLog(path)
    timings = {}
    for name, query in {"recent": lambda: runlog.recent(20), "search": lambda: runlog.search(words[5]),
                        "search two": lambda: runlog.search(f"{words[5]} {words[9][:3]}"),
                        "get": lambda: runlog.get(rows[500][0][:10])}.items():
        started = time.perf_counter()
        found = query()
        timings[name] = time.perf_counter() - started
        assert found, name
    assert max(timings.values()) < 1.0, timings
    runlog.close()
