"""The local backend against the real Qwen2.5-Coder-0.5B model (no mocks of llama.cpp).

Answers are kept to 16-32 tokens so the module runs in well under a minute.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import replace

import pytest

from qwen_magics.backends.local import stream
from qwen_magics.events import Event, Finished, Started, TextDelta, TokenLogprob, Usage
from qwen_magics.local.model import LocalModelError, load, loaded, resolve, unload
from qwen_magics.request import Endpoint, Request, Sampling

pytestmark = pytest.mark.local

STORY = "Write a Python function that checks whether a number is prime."
OPEN = "Write one sentence about the sea."


def request(prompt: str, n_ctx: int = 4096, **sampling: object) -> Request:
    return Request(messages=({"role": "user", "content": prompt},), model="local:0.5b",
                   endpoint=Endpoint(base_url="local", key_required=False, context=n_ctx), sampling=Sampling(**sampling))


def ask(prompt: str, *, n_ctx: int = 4096, response_format: dict | None = None, logprobs: int | None = None,
        **sampling: object) -> list[Event]:
    async def collect() -> list[Event]:
        question = replace(request(prompt, n_ctx, **sampling), response_format=response_format, logprobs=logprobs)
        return [event async for event in stream(question)]

    return asyncio.run(collect())


def text(events: Sequence[Event]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


def workers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "qwen-local"]


@pytest.fixture(scope="module", autouse=True)
def free_models_afterwards() -> object:
    yield
    unload()


def test_events_and_usage_are_the_runtimes_own() -> None:
    events = ask("What is 2+2?", temperature=0, max_tokens=16)

    assert events[0] == Started(model="Qwen2.5-Coder-0.5B-Instruct")
    usage, finished = events[-2:]
    assert isinstance(usage, Usage) and isinstance(finished, Finished)
    assert all(isinstance(e, TextDelta) for e in events[1:-2])
    # llama.cpp's own non-streaming chat call agrees on the text and both counts.
    llm = load(resolve("local:0.5b")).llm
    llm.reset()
    reference = llm.create_chat_completion([{"role": "user", "content": "What is 2+2?"}], temperature=0,
                                           max_tokens=16)
    assert text(events) == reference["choices"][0]["message"]["content"]
    assert finished.reason == reference["choices"][0]["finish_reason"]
    assert (usage.input, usage.output) == (reference["usage"]["prompt_tokens"],
                                           reference["usage"]["completion_tokens"])
    assert usage.input > 0 and usage.output > 0


def test_length_limit_counts_every_token() -> None:
    events = ask(STORY, temperature=0, max_tokens=16)

    assert events[-1] == Finished("length")
    assert events[-2] == Usage(input=events[-2].input, output=16)


def test_temperature_zero_repeats_itself() -> None:
    assert text(ask(STORY, temperature=0, max_tokens=24)) == text(ask(STORY, temperature=0, max_tokens=24))


def test_same_seed_same_text_and_different_seeds_differ() -> None:
    first = text(ask(OPEN, temperature=1.0, seed=7, max_tokens=16))
    assert first == text(ask(OPEN, temperature=1.0, seed=7, max_tokens=16))
    others = {text(ask(OPEN, temperature=1.2, seed=seed, max_tokens=16)) for seed in (1, 2, 3)}
    assert len(others) > 1


def test_a_high_temperature_reaches_tokens_llama_cpps_min_p_would_cut() -> None:
    """Only the samplers a request names apply: llama.cpp's own min_p of 0.05 (a token at least 5% as likely as
    the likeliest) is off, so at temperature 1.9 with top_k and top_p off some drawn tokens are rarer than that."""
    events = ask(OPEN, temperature=1.9, top_k=0, top_p=1.0, seed=5, max_tokens=48, logprobs=1)
    entries = [e for e in events if isinstance(e, TokenLogprob)]
    ratios = [math.exp(e.logprob - e.top[0][1]) for e in entries]

    assert len(entries) == 48
    assert min(ratios) < 0.05, f"every drawn token kept min_p's 5% bound: {sorted(ratios)[:5]}"


def test_stop_string_cuts_the_answer_even_across_pieces() -> None:
    full = text(ask(STORY, temperature=0, max_tokens=24))
    cut = " ".join(full.split()[4:6])  # two words: two streamed pieces at least

    events = ask(STORY, temperature=0, max_tokens=24, stop=(cut,))

    assert text(events) == full[:full.index(cut)]
    assert events[-1] == Finished("stop")


def test_an_answer_that_fills_the_context_ends_there_as_length() -> None:
    events = ask(STORY, n_ctx=56, temperature=0, max_tokens=400)

    usage, finished = events[-2:]
    assert finished == Finished("length")
    assert usage.input + usage.output == 56


def test_logprobs_are_llama_cpps_own_without_logits_for_every_position() -> None:
    """The same tokens and top-5 as llama.cpp's completion logprobs, which need a model keeping all logits."""
    events = ask(STORY, n_ctx=1024, temperature=0, max_tokens=24, logprobs=5)
    entries = [e for e in events if isinstance(e, TokenLogprob)]
    assert not any(entry["logits_all"] for entry in loaded())
    assert "".join(e.token for e in entries) == text(events)

    reference_model = load(resolve("local:0.5b"), n_ctx=1024, logits_all=True).llm
    reference_model.reset()
    reference = reference_model.create_chat_completion([{"role": "user", "content": STORY}], temperature=0,
                                                       max_tokens=24, logprobs=True, top_logprobs=5)
    expected = reference["choices"][0]["logprobs"]["content"]
    assert [e.token for e in entries] == [r["token"] for r in expected]
    for entry, wanted in zip(entries, expected):
        assert entry.logprob == pytest.approx(wanted["logprob"], abs=1e-4)
        assert dict(entry.top) == pytest.approx({alt["token"]: alt["logprob"] for alt in wanted["top_logprobs"]},
                                                abs=1e-4)
    assert len({e.logprob for e in entries}) > 1


def test_json_mode_gives_json() -> None:
    events = ask("Give a JSON object with the keys name and age for a person.", temperature=0, max_tokens=40,
                 response_format={"type": "json_object"})

    assert isinstance(json.loads(text(events)), dict)


COUNT = "Count from 1 to 1000, one number per line."  # runs to max_tokens


def within_a_few_tokens(stopping: float, token: float) -> bool:
    """Stopping took at most ten tokens' time (or 2 s), a token's time measured on this machine as it runs
    now: the answer runs to 400 tokens, so a stop that waits for the generation to end takes far longer."""
    return stopping < max(2.0, 10 * token)


def test_closing_the_consumer_stops_generation_and_the_worker() -> None:
    async def read_three_then_close() -> tuple[float, float]:
        begun = time.perf_counter()
        answer = stream(request(COUNT, temperature=0, max_tokens=400))
        arrivals = []
        async for event in answer:
            if isinstance(event, TextDelta):
                arrivals.append(time.perf_counter())
            if len(arrivals) == 3:
                break
        started = time.perf_counter()
        await answer.aclose()
        return time.perf_counter() - started, (arrivals[2] - begun) / 3  # the prompt's time counts too

    stopping, token = asyncio.run(read_three_then_close())
    assert within_a_few_tokens(stopping, token), (stopping, token)
    assert workers() == []
    assert load(resolve("local:0.5b")).lock.acquire(blocking=False)
    load(resolve("local:0.5b")).lock.release()


def test_cancelling_the_task_stops_generation_and_the_worker() -> None:
    async def cancel_after_three() -> tuple[float, float]:
        seen = asyncio.Event()
        arrivals = []
        begun = time.perf_counter()

        async def consume() -> None:
            async for event in stream(request(COUNT, temperature=0, max_tokens=400)):
                if isinstance(event, TextDelta):
                    arrivals.append(time.perf_counter())
                if len(arrivals) == 3:
                    seen.set()

        task = asyncio.create_task(consume())
        await seen.wait()
        started = time.perf_counter()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return time.perf_counter() - started, (arrivals[2] - begun) / 3

    stopping, token = asyncio.run(cancel_after_three())
    assert within_a_few_tokens(stopping, token), (stopping, token)
    assert workers() == []


def test_a_cancelled_answer_hands_on_its_token_counts_before_the_cancellation_ends_it() -> None:
    """A stopped answer keeps llama.cpp's counts: the prompt's tokens and every token generated before the stop."""
    async def cancel_after_three() -> list[Event]:
        seen, events = asyncio.Event(), []

        async def consume() -> None:
            async for event in stream(request(STORY, temperature=0, max_tokens=400)):
                events.append(event)
                if sum(isinstance(e, TextDelta) for e in events) == 3:
                    seen.set()

        task = asyncio.create_task(consume())
        await seen.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return events

    events = asyncio.run(cancel_after_three())
    [usage] = [e for e in events if isinstance(e, Usage)]
    assert usage.input > 10 and sum(isinstance(e, TextDelta) for e in events) <= usage.output < 400
    assert not [e for e in events if isinstance(e, Finished)] and workers() == []


def test_loop_stays_responsive_and_requests_take_turns() -> None:
    async def two_requests_and_a_ticker() -> tuple[list[list[Event]], int]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        clock = asyncio.create_task(ticker())

        async def collect() -> list[Event]:
            return [event async for event in stream(request(STORY, temperature=0, max_tokens=16))]

        results = await asyncio.gather(collect(), collect())
        clock.cancel()
        return results, ticks

    (first, second), ticks = asyncio.run(two_requests_and_a_ticker())
    assert text(first) == text(second)
    assert first[-2] == second[-2]
    assert ticks > 20


def test_prompt_longer_than_the_context_is_refused_before_generating() -> None:
    with pytest.raises(LocalModelError) as err:
        ask("Explain this code. " + "x = 1\n" * 60, n_ctx=64, max_tokens=16)

    assert err.value.code == "context_length"
    assert re.fullmatch(r"The prompt is \d+ tokens but the local context holds 64", err.value.message)
    assert err.value.hint == "Shorten the prompt or raise the context size"


def test_loaded_reports_each_instance_and_unload_frees_them() -> None:
    ask("Hi", temperature=0, max_tokens=4)
    info = [entry for entry in loaded() if entry["context"] == 4096]

    assert info == [{"file": str(resolve("local:0.5b").resolve()), "size": 491_400_064,
                     "threads": os.cpu_count(), "context": 4096, "logits_all": False}]
    unload()
    assert loaded() == []
