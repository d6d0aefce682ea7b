"""The sampling lab on the real Qwen2.5-Coder-0.5B (no mocks of llama.cpp): the whole distribution, the
sampler's stages over it, stepping, going back and drawing.  One model load for the module."""

from __future__ import annotations

import asyncio
import math

import numpy as np
import pytest

from qwen_magics.backends.local import stream
from qwen_magics.events import TokenLogprob
from qwen_magics.errors import InvalidInput
from qwen_magics.local.model import load, resolve, unload
from qwen_magics.request import Endpoint, Request, Sampling
from qwen_magics.sampling.lab import open_lab

pytestmark = pytest.mark.local

FRANCE = "The capital of France is"
OPEN = "I went to the"  # a flatter distribution: the cuts keep several tokens


@pytest.fixture(scope="module", autouse=True)
def model() -> object:
    yield load(resolve("local:0.5b"))
    unload()


def test_the_distribution_covers_the_vocabulary_and_is_llama_cpps_own() -> None:
    lab = open_lab(FRANCE, "local:0.5b")
    raw = lab.distribution(shaped=False)

    assert len(raw) >= 100_000 and all(p > 0 for _, p in raw)
    assert sum(p for _, p in raw) == pytest.approx(1.0, abs=1e-9)
    assert [p for _, p in raw] == sorted((p for _, p in raw), reverse=True)
    assert lab.entropy(shaped=False) == pytest.approx(-sum(p * math.log2(p) for _, p in raw), rel=1e-9)
    assert lab.choices(shaped=False) == pytest.approx(2 ** lab.entropy(shaped=False))
    # llama.cpp's own completion logprobs (they need a model keeping every position's logits).
    reference = load(resolve("local:0.5b"), n_ctx=256, logits_all=True).llm
    reference.reset()
    answer = reference.create_completion(FRANCE, max_tokens=1, temperature=0, logprobs=5)
    top = answer["choices"][0]["logprobs"]["top_logprobs"][0]
    expected = sorted(((token, math.exp(lp)) for token, lp in top.items()), key=lambda t: -t[1])
    assert [piece for piece, _ in raw[:5]] == [token for token, _ in expected]
    for (_, ours), (_, theirs) in zip(raw[:5], expected):
        assert ours == pytest.approx(theirs, abs=0.002)


def test_each_setting_reshapes_the_same_logits_as_the_sampler_does() -> None:
    lab = open_lab(OPEN, "local:0.5b")
    raw = lab.distribution(shaped=False)
    p = dict(raw)

    lab.set(temperature=0.5)
    cooled = lab.distribution()
    assert lab.entropy() < lab.entropy(shaped=False)
    for (a, pa), (b, pb) in zip(cooled[:5], cooled[1:6]):
        assert pa / pb == pytest.approx((p[a] / p[b]) ** 2, rel=1e-6)

    lab.set(temperature=None, top_k=3)
    assert [piece for piece, _ in lab.distribution()] == [piece for piece, _ in raw[:3]]
    total = sum(q for _, q in raw[:3])
    assert [q for _, q in lab.distribution()] == pytest.approx([q / total for _, q in raw[:3]], rel=1e-6)

    lab.set(top_k=None, top_p=0.5)
    reach = next(i for i in range(len(raw)) if sum(q for _, q in raw[:i + 1]) >= 0.5) + 1
    assert reach > 1
    assert [piece for piece, _ in lab.distribution()] == [piece for piece, _ in raw[:reach]]
    assert sum(q for _, q in lab.distribution()) == pytest.approx(1.0)

    lab.set(top_p=None, min_p=0.1)
    wanted = [piece for piece, q in raw if q >= 0.1 * raw[0][1]]
    assert len(wanted) > 1
    assert [piece for piece, _ in lab.distribution()] == wanted
    removed = {stage.name: stage.removed for stage in lab.stages}
    assert removed["min_p"] == pytest.approx(1 - sum(p[piece] for piece in wanted), abs=1e-9)
    assert [stage.name for stage in lab.stages] == ["penalties", "top_k", "typical_p", "top_p", "min_p",
                                                   "temperature"]


def test_the_same_seed_steps_the_same_tokens_and_back_undoes_a_step() -> None:
    first = open_lab(OPEN, "local:0.5b", seed=11, top_k=20)
    second = open_lab(OPEN, "local:0.5b", seed=11, top_k=20)
    pieces = [first.step() for _ in range(3)]
    before = first.probabilities().copy()
    pieces.append(first.step())

    assert [second.step() for _ in range(4)] == pieces == first.tokens
    assert first.text == "".join(pieces)
    assert first.back() == pieces[-1]
    assert first.tokens == pieces[:3] and first.text == "".join(pieces[:3])
    assert np.array_equal(first.probabilities(), before)
    assert first.step(pieces[-1]) == pieces[-1]
    assert np.array_equal(first.logits, second.logits)


def test_a_generation_between_steps_changes_nothing_the_lab_shows() -> None:
    """The lab and the backend share one loaded model; the lab rebuilds its context the way it first built it."""
    alone = open_lab(OPEN, "local:0.5b", seed=3)
    [alone.step() for _ in range(3)]
    shared = open_lab(OPEN, "local:0.5b", seed=3)
    assert shared.model is load(resolve("local:0.5b"))
    [shared.step() for _ in range(2)]

    async def generate() -> None:
        question = Request(messages=({"role": "user", "content": "Say hi."},), model="local:0.5b",
                           endpoint=Endpoint(base_url="local", key_required=False, context=4096),
                           sampling=Sampling(temperature=0, max_tokens=4))
        [event async for event in stream(question)]

    asyncio.run(generate())
    shared.step()
    assert shared.tokens == alone.tokens
    assert np.array_equal(shared.logits, alone.logits)


def test_temperature_zero_takes_the_top_token_and_draws_follow_the_probabilities() -> None:
    lab = open_lab(OPEN, "local:0.5b", temperature=0)
    top_piece = lab.distribution(shaped=False)[0][0]
    assert lab.distribution() == [(top_piece, 1.0)]
    assert lab.step() == top_piece and lab.taken[-1].rank == 1 and lab.taken[-1].how == "greedy"

    lab.set(temperature=0.8, top_k=None)
    counts = lab.draw(2000, seed=1)
    assert counts == lab.draw(2000, seed=1) and sum(counts.values()) == 2000
    piece, probability = lab.distribution()[0]
    assert counts.get(piece, 0) / 2000 == pytest.approx(probability, abs=0.04)


def test_bad_settings_and_tokens_get_one_clear_line() -> None:
    lab = open_lab(FRANCE, "local:0.5b")
    with pytest.raises(InvalidInput, match="Unknown sampler setting 'temprature'") as err:
        lab.set(temprature=0.5)
    assert err.value.hint == "Did you mean temperature?"
    with pytest.raises(InvalidInput, match="top_p=1.5 is not valid"):
        lab.set(top_p=1.5)
    with pytest.raises(InvalidInput, match="not one"):
        lab.step(" Paris is lovely")
    with pytest.raises(InvalidInput, match="Nothing to undo"):
        lab.back()
    with pytest.raises(InvalidInput, match="runs on the local model"):
        open_lab(FRANCE, "qwen-plus")


def test_logprobs_answers_carry_the_whole_vocabularys_entropy_at_each_position() -> None:
    async def answer() -> list:
        question = Request(messages=({"role": "user", "content": FRANCE},), model="local:0.5b",
                           endpoint=Endpoint(base_url="local", key_required=False, context=4096),
                           sampling=Sampling(temperature=0, max_tokens=3), logprobs=2)
        return [event async for event in stream(question) if isinstance(event, TokenLogprob)]

    entries = asyncio.run(answer())
    lab = open_lab(FRANCE, "local:0.5b", chat=True)
    assert entries[0].entropy == pytest.approx(lab.entropy(shaped=False), abs=1e-3)
    lab.step(int(np.argmax(lab.logits)))
    assert entries[1].entropy == pytest.approx(lab.entropy(shaped=False), abs=1e-3)


def test_another_token_after_back_shows_its_own_distribution() -> None:
    """The view of a position is never one computed for another token taken there before."""
    lab = open_lab(OPEN, "local:0.5b")
    first = lab.distribution()[0]
    lab.step(" park")
    after_park = lab.probabilities().copy()
    lab.back()
    assert lab.distribution()[0] == first
    lab.step(" zoo")
    assert not np.array_equal(lab.probabilities(), after_park)
    fresh = open_lab(OPEN, "local:0.5b")
    fresh.step(" zoo")
    assert np.array_equal(lab.probabilities(), fresh.probabilities())
