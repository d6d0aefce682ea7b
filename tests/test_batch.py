"""The Batch engine (qwen_magics.batch) against the loopback's files and batches routes, with the real openai SDK."""

from __future__ import annotations

import concurrent.futures
import json
import time
from dataclasses import replace

import openai
import pytest
from loopback import BATCHES_PATH, BLOCK_MARKER, DEFAULT_KEY, FILES_PATH, Script
from loopback_batch import BatchTiming

from qwen_magics import batch, runner
from qwen_magics.errors import AuthenticationFailed, InvalidInput
from qwen_magics.request import Endpoint, Request, Sampling

FAST = 0.02  # seconds between polls


@pytest.fixture
def ep(dashscope) -> Endpoint:
    """The loopback standing in for the Singapore host."""
    return Endpoint(base_url=dashscope.url + "/compatible-mode/v1", region="singapore", max_retries=0)


def rows(ep: Endpoint, n: int, model: str = "qwen-plus", **kw) -> list[Request]:
    return [Request(messages=({"role": "user", "content": f"review {i}"},), model=model, endpoint=ep, **kw)
            for i in range(n)]


def ids(n: int) -> list[str]:
    return [f"row-{i}" for i in range(n)]


def run(ep: Endpoint, requests: list[Request], custom_ids: list[str], **kw) -> tuple[list[str], dict]:
    jobs = batch.submit(ep, requests, custom_ids, {"job": "k1"}, **kw)
    batch.wait(ep, jobs, poll_seconds=FAST)
    return jobs, batch.collect(ep, jobs)


def test_ten_rows_round_trip_matched_by_custom_id(dashscope, ep) -> None:
    dashscope.batches.timing = BatchTiming(per_line=0.03)
    requests = rows(ep, 10, thinking=False, sampling=Sampling(temperature=0.3, top_k=5))
    seen: list[list[batch.JobStatus]] = []
    jobs = batch.submit(ep, requests, ids(10), {"job": "k1"})
    final = batch.wait(ep, jobs, on_progress=seen.append, poll_seconds=FAST)
    outcomes = batch.collect(ep, jobs)

    assert [s.status for s in final] == ["completed"]
    assert any(0 < s[0].completed < 10 for s in seen), "request_counts grow while the job runs"
    assert list(outcomes) == ids(10)
    for i, cid in enumerate(ids(10)):
        out = outcomes[cid]
        assert (out.state, out.finish_reason) == ("complete", "stop")
        assert f"**Echo:** review {i}" in out.answer
        assert out.usage.input == 12 and out.usage.output > 0 and out.request_id
    output = dashscope.batches.files[final[0].output_file_id].data.decode().splitlines()
    assert [json.loads(line)["custom_id"] for line in output] != ids(10), "the server answers in its own order"
    (upload,) = dashscope.batches.uploads()
    line = json.loads(upload.splitlines()[0])
    assert line["url"] == "/v1/chat/completions" and line["method"] == "POST"
    assert line["body"] == {"model": "qwen-plus", "messages": [{"role": "user", "content": "review 0"}],
                            "temperature": 0.3, "enable_thinking": False, "top_k": 5}
    create = next(r for r in dashscope.requests if r.path == BATCHES_PATH)
    assert create.body["completion_window"] == "24h"
    assert create.body["metadata"] == {"job": "k1", "source": "qwen-magics", "part": "1/1"}
    assert [j.id for j in batch.list_jobs(ep)] == jobs


def test_120k_lines_split_into_three_files_by_count_and_size(ep) -> None:
    lines = batch.jsonl_lines(rows(ep, 120_000, stream=True), ids(120_000))
    files = batch.split_files(lines)
    assert [len(f) for f in files] == [50_000, 50_000, 20_000]
    assert [line for f in files for line in f] == lines
    assert "stream" not in lines[0]
    size = len(lines[0].encode()) + 1
    assert [len(f) for f in batch.split_files(lines[:10], max_bytes=size * 4)] == [3, 3, 3, 1]


def test_mixed_models_go_to_one_file_each(ep) -> None:
    requests = rows(ep, 4) + rows(ep, 2, model="qwen-max") + rows(ep, 2, thinking=True)
    files = batch.split_files(batch.jsonl_lines(requests, ids(8)))
    assert [[json.loads(line)["custom_id"] for line in f] for f in files] == [ids(4), ["row-4", "row-5"],
                                                                             ["row-6", "row-7"]]


def test_a_split_job_is_uploaded_as_several_jobs_and_collected_whole(dashscope, ep) -> None:
    jobs, outcomes = run(ep, rows(ep, 7), ids(7), max_lines=3)
    assert len(jobs) == 3 and len(dashscope.batches.uploads()) == 3
    assert {dashscope.batches.jobs[j].metadata["part"] for j in jobs} == {"1/3", "2/3", "3/3"}
    assert list(outcomes) == ids(7) and {o.state for o in outcomes.values()} == {"complete"}
    assert {o.job_id for o in outcomes.values()} == set(jobs)


@pytest.mark.parametrize("shape", ["response", "error"])
def test_failed_rows_read_like_failed_live_rows(dashscope, ep, shape) -> None:
    dashscope.batches.error_shape = shape
    dashscope.batches.scripts.update({"row-1": Script(status=500), "row-2": Script(status=429, retry_after="3"),
                                      "row-3": Script(fault="moderation_mid")})
    requests = rows(ep, 5)
    requests[4] = Request(messages=({"role": "user", "content": f"bad {BLOCK_MARKER}"},), model="qwen-plus",
                          endpoint=ep)
    jobs, outcomes = run(ep, requests, ids(5))
    assert outcomes["row-0"].state == "complete"
    failed = {cid: (o.state, o.kind, o.error) for cid, o in outcomes.items() if cid != "row-0"}
    assert {cid: f[:2] for cid, f in failed.items()} == {
        "row-1": ("failed", "ServerError"), "row-2": ("failed", "RateLimited"),
        "row-3": ("failed", "ContentBlocked"), "row-4": ("failed", "ContentBlocked")}
    assert failed["row-1"][2].startswith("Model Studio had a server error (")
    assert failed["row-2"][2].startswith("Rate limited (") and " after " not in failed["row-2"][2]
    assert failed["row-4"][2].startswith("Content moderation refused the ")
    if shape == "response":
        assert failed["row-4"][2].startswith("Content moderation refused the input (400 data_inspection_failed)")
        assert failed["row-3"][2].startswith("Content moderation refused the answer (400 data_inspection_failed)")
    assert batch.status(ep, jobs[0]).failed == 4


def test_validation_failure_is_one_line_naming_the_bad_lines(dashscope, ep) -> None:
    good = {"model": "qwen-plus", "messages": [{"role": "user", "content": "hi"}]}
    lines = [{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": good},
             {"custom_id": "b", "method": "POST", "url": "/v1/chat/completions", "body": {**good, "stream": True}},
             "{not json",
             {"custom_id": "d", "method": "POST", "url": "/v1/chat/completions", "body": {**good, "model": "qwen-max"}},
             {"custom_id": "e", "method": "POST", "url": "/v1/chat/completions", "body": {**good, "model": "qwen-max"}}]
    data = "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines).encode()
    client = openai.OpenAI(base_url=ep.base_url, api_key=DEFAULT_KEY, max_retries=0)
    upload = client.files.create(file=("bad.jsonl", data), purpose="batch")
    job = client.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h")
    client.close()

    (final,) = batch.wait(ep, [job.id], poll_seconds=FAST)
    assert final.status == "failed"
    assert final.line() == (f"Batch job {job.id} failed validation: line 2: stream must not be set in a batch line. "
                            "(invalid_body); line 3: The line is not a JSON object with a body. (invalid_json_line); "
                            "line 4: model 'qwen-max' differs from line 1's 'qwen-plus': one model per file. "
                            "(mixed_model) (and 1 more)")
    outcomes = batch.collect(ep, [job.id])
    assert {o.state for o in outcomes.values()} == {"not run"}
    assert outcomes["a"].error.startswith(final.line())


def test_an_expired_job_keeps_what_finished_and_leaves_the_rest_not_run(dashscope, ep) -> None:
    dashscope.batches.timing = BatchTiming(per_line=0.04, expire_after=0.2)
    jobs, outcomes = run(ep, rows(ep, 20), ids(20))
    assert batch.status(ep, jobs[0]).status == "expired"
    states = [o.state for o in outcomes.values()]
    assert 0 < states.count("complete") < 20 and states.count("complete") + states.count("not run") == 20
    not_run = next(o for o in outcomes.values() if o.state == "not run")
    assert not_run.error == (f"Not run: batch job {jobs[0]} expired before this request ran. "
                             "Submit the rows that were not run again.")


def test_cancel_keeps_finished_rows(dashscope, ep) -> None:
    dashscope.batches.timing = BatchTiming(per_line=0.05)
    (job,) = batch.submit(ep, rows(ep, 40), ids(40))
    deadline = time.monotonic() + 10
    while batch.status(ep, job).completed < 2 and time.monotonic() < deadline:
        time.sleep(FAST)
    assert batch.cancel(ep, job).status == "cancelling"
    (final,) = batch.wait(ep, [job], poll_seconds=FAST)
    assert final.status == "cancelled"
    outcomes = batch.collect(ep, [job])
    done = [o for o in outcomes.values() if o.state == "complete"]
    assert 2 <= len(done) < 40 and len(done) == final.completed
    assert all("was cancelled" in o.error for o in outcomes.values() if o.state == "not run")


def test_stopping_a_wait_leaves_the_job_running(dashscope, ep) -> None:
    dashscope.batches.timing = BatchTiming(per_line=0.01)
    (job,) = batch.submit(ep, rows(ep, 30), ids(30))
    future = runner.submit(batch.wait_async(ep, [job], poll_seconds=FAST))
    with pytest.raises(concurrent.futures.TimeoutError):
        runner.wait(future, timeout=0.1)
    assert future.cancel()
    assert batch.status(ep, job).status in ("validating", "in_progress")
    (final,) = batch.wait(ep, [job], poll_seconds=FAST)
    assert final.status == "completed" and final.completed == 30


def test_collecting_a_running_job_is_refused_in_one_line(dashscope, ep) -> None:
    dashscope.batches.timing = BatchTiming(validate=5)
    (job,) = batch.submit(ep, rows(ep, 2), ids(2))
    with pytest.raises(InvalidInput, match=rf"^Batch job {job} is still validating \(0 of 2 done\)\. Wait for it"):
        batch.collect(ep, [job])
    batch.cancel(ep, job)


def test_an_unknown_job_is_a_one_line_not_found(ep) -> None:
    with pytest.raises(InvalidInput, match=r"^Batch job 'batch_nope' was not found at singapore \(404\)"):
        batch.status(ep, "batch_nope")


@pytest.mark.parametrize("change, message", [
    (dict(model="local"), "The local model has no batch mode"),
    (dict(protocol="responses"), "--api responses has no batch mode"),
    (dict(protocol="dashscope"), "--api dashscope has no batch mode"),
    (dict(region="us"), "Model Studio offers no Batch API in the us region"),
    (dict(region="hongkong"), "Model Studio offers no Batch API in the hongkong region"),
    (dict(model="qwen3.5-plus"), "Model 'qwen3.5-plus' has no batch mode in singapore"),
])
def test_refused_before_anything_is_sent(dashscope, ep, change, message) -> None:
    endpoint = Endpoint(ep.base_url, region=change.pop("region", "singapore"))
    requests = [Request(messages=({"role": "user", "content": "hi"},), model="qwen-plus", endpoint=endpoint)
                for _ in range(3)]
    requests = [replace(r, **change) for r in requests]
    with pytest.raises(InvalidInput, match=f"^{message}\\. [A-Z]"):
        batch.submit(endpoint, requests, ids(3))
    assert dashscope.requests == []


def test_a_base_url_server_is_allowed(dashscope) -> None:
    endpoint = Endpoint(dashscope.url + "/compatible-mode/v1", key_required=False)
    batch.check_batchable(rows(endpoint, 2, model="any-model-name"))


def test_batch_test_model_runs_the_free_flow(dashscope, ep) -> None:
    jobs, outcomes = run(ep, rows(ep, 3, model=batch.TEST_MODEL), ids(3))
    assert [o.answer for o in outcomes.values()] == ["This is a test result."] * 3
    create = next(r for r in dashscope.requests if r.path == BATCHES_PATH)
    assert create.body["endpoint"] == "/v1/chat/ds-test"
    assert all(json.loads(line)["url"] == "/v1/chat/ds-test" for line in dashscope.batches.uploads()[0].splitlines())


def test_the_key_is_in_no_file_and_no_error(dashscope, ep, monkeypatch) -> None:
    run(ep, rows(ep, 3), ids(3))
    stored = b"".join(f.data for f in dashscope.batches.files.values())
    sent = json.dumps([r.body for r in dashscope.requests])
    assert stored and DEFAULT_KEY.encode() not in stored and DEFAULT_KEY not in sent
    wrong = "sk-wrong-key-0123456789"
    monkeypatch.setenv("DASHSCOPE_API_KEY", wrong)
    dashscope.reset()
    with pytest.raises(AuthenticationFailed) as refused:
        batch.submit(ep, rows(ep, 2), ids(2))
    assert str(refused.value).startswith("The API key was rejected by the singapore region (401 invalid_api_key)")
    assert wrong not in str(refused.value) and wrong not in repr(refused.value)
    assert [r.path for r in dashscope.requests] == [FILES_PATH] and dashscope.batches.files == {}


def test_batch_price_halves_both_prices() -> None:
    from qwen_magics.tokens.prices import Price

    half = batch.batch_price(Price.flat(0.8, 2.0))
    assert (half.tiers[0].input, half.tiers[0].output, half.batch) == (0.4, 1.0, True)
    assert batch.batch_price(None) is None
