"""The lab's sampler stages against llama.cpp's own samplers, chained as llama-cpp-python 0.3.36 chains them
(``Llama._init_sampler``: penalties over the last 64 tokens -> top_k -> typical -> top_p -> min_p -> temperature),
applied to the same logits through libllama.  No model is needed: the samplers take any logits."""

from __future__ import annotations

import ctypes
import inspect

import llama_cpp
import numpy as np
import pytest

from qwen_magics.errors import InvalidInput
from qwen_magics.sampling.shape import Settings, entropy_bits, penalise, shape, softmax

N = 4000
WINDOW = inspect.signature(llama_cpp.Llama).parameters["last_n_tokens_size"].default  # what generate() uses
HISTORY = [7, 7, 12, 40, 3999, *range(100, 180)]  # longer than the window: the oldest fall out


def llama_chain(logits: np.ndarray, history: list[int], s: Settings) -> dict[int, float]:
    """Token id -> probability after llama.cpp's chain (the dist sampler draws from this softmax)."""
    L = llama_cpp
    chain = L.llama_sampler_chain_init(L.llama_sampler_chain_default_params())
    samplers = [L.llama_sampler_init_penalties(len(logits), WINDOW, s.repetition, s.frequency, s.presence),
                L.llama_sampler_init_top_k(s.top_k), L.llama_sampler_init_typical(s.typical_p, 1),
                L.llama_sampler_init_top_p(s.top_p, 1), L.llama_sampler_init_min_p(s.min_p, 1),
                L.llama_sampler_init_temp(s.temperature)]
    for sampler in samplers:
        L.llama_sampler_chain_add(chain, sampler)
    for token in history:
        L.llama_sampler_accept(chain, token)
    data = (L.llama_token_data * len(logits))(*(L.llama_token_data(i, float(x), 0.0) for i, x in enumerate(logits)))
    array = L.llama_token_data_array(data, len(logits), -1, False)
    L.llama_sampler_apply(chain, ctypes.byref(array))
    kept = [(array.data[i].id, array.data[i].logit) for i in range(array.size)]
    L.llama_sampler_free(chain)
    probs = softmax(np.array([logit for _, logit in kept]))
    return {token: float(p) for (token, _), p in zip(kept, probs)}


@pytest.mark.parametrize("settings", [
    Settings(),
    Settings(temperature=0.5),
    Settings(top_k=25),
    Settings(top_p=0.6),
    Settings(min_p=0.05),
    Settings(typical_p=0.7),
    Settings(repetition=1.3, frequency=0.2, presence=0.5),
    Settings(temperature=1.4, top_k=200, typical_p=0.9, top_p=0.8, min_p=0.02, repetition=1.1, presence=0.4),
], ids=repr)
def test_the_stages_keep_and_weigh_what_llama_cpps_samplers_do(settings: Settings) -> None:
    logits = np.random.default_rng(5).normal(0, 2.5, N).astype(np.float32)
    logits[[7, 12, 40, 3999]] += 6  # some repeated tokens are likely, so the penalties matter
    ours = shape(logits, HISTORY, settings)
    theirs = llama_chain(logits, HISTORY, settings)

    kept = {int(i) for i in np.nonzero(ours.probs)[0]}
    assert kept == set(theirs)
    assert [ours.probs[i] for i in theirs] == pytest.approx(list(theirs.values()), abs=2e-6)
    assert ours.probs.sum() == pytest.approx(1.0)
    base = softmax(penalise(logits, HISTORY, settings))  # what enters the cutting stages
    assert sum(stage.removed for stage in ours.stages) == pytest.approx(1 - base[list(kept)].sum(), abs=1e-9)
    for token in range(N):
        if token not in kept:
            assert ours.cut_by(token) in ("top_k", "typical_p", "top_p", "min_p")
            break


def test_temperature_zero_is_greedy_after_the_penalties() -> None:
    logits = np.array([1.0, 3.0, 2.9, -1.0], dtype=np.float32)
    result = shape(logits, [1], Settings(temperature=0, repetition=1.5))

    assert result.probs.tolist() == [0.0, 0.0, 1.0, 0.0]  # 3.0 / 1.5 = 2.0 < 2.9
    assert result.cut_by(1) == "temperature 0"
    assert entropy_bits(result.probs) == 0.0


def test_settings_refuse_bad_values_in_one_line() -> None:
    with pytest.raises(InvalidInput, match="top_k=2.5 is not valid") as err:
        Settings().changed(top_k=2.5)
    assert err.value.hint == "Give top_k a whole number, 0 or None for off"
    assert Settings(top_p=0.5).changed(top_p=None).top_p == 1.0
