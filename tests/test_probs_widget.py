"""The probabilities widget: how temperature and top_p reshape the model's top-K alternatives.

``reshape`` is pure arithmetic; the widget is driven as a user would, by
setting slider values, and judged by the HTML it would show.
"""

from __future__ import annotations

import math
import re
import pytest

from qwen_magics.events import TokenLogprob
from qwen_magics.display.fragments import token_view_html
from qwen_magics.result import Result
from qwen_magics.widgets.probs import probs_widget, reshape

NO_LOGPROBS = "This result has no token probabilities: run the cell again with --logprobs 5"


def alternatives(**probs: float) -> tuple[tuple[str, float], ...]:
    """Top-K as the service sends it: natural-log probabilities, most likely first."""
    return tuple((tok, math.log(p)) for tok, p in probs.items())


def entry(chosen: str, **probs: float) -> TokenLogprob:
    return TokenLogprob(chosen, math.log(probs[chosen]), alternatives(**probs))


def answer(*entries: TokenLogprob) -> Result:
    """A result folded from its logprob events, as a backend's stream builds it."""
    result = Result(model="qwen-plus", parameters={"logprobs": True})
    for event in entries:
        result.apply(event)
    return result


def entropy(bars) -> float:
    return -sum(b.probability * math.log(b.probability) for b in bars if b.probability > 0)


def probabilities(bars) -> list[float]:
    return [b.probability for b in bars]


def shown_percentages(chart: str) -> list[str]:
    """The shares printed next to the bars (not the CSS widths, nor the model's own probabilities)."""
    return re.findall(r"share (\d+\.\d%)", chart)


def labels(chart: str) -> list[str]:
    """Each bar's label as a person reads it."""
    return re.findall(r'<span style="[^"]*">([^<]*)</span>', chart)


# reshape: the sampler's arithmetic


def test_neutral_settings_are_the_softmax_renormalised_over_k():
    bars = reshape(alternatives(a=0.5, b=0.2, c=0.1), temperature=1.0, top_p=1.0)
    assert [b.token for b in bars] == ["a", "b", "c"]
    assert probabilities(bars) == pytest.approx([0.5 / 0.8, 0.2 / 0.8, 0.1 / 0.8])
    assert sum(probabilities(bars)) == pytest.approx(1.0)
    assert all(b.kept for b in bars)


def test_temperature_zero_is_greedy():
    bars = reshape(alternatives(a=0.4, b=0.35, c=0.25), temperature=0.0, top_p=1.0)
    assert probabilities(bars) == [1.0, 0.0, 0.0]


def test_low_temperature_concentrates_on_the_most_likely():
    bars = reshape(alternatives(a=0.4, b=0.35, c=0.25), temperature=0.05, top_p=1.0)
    assert bars[0].token == "a"
    assert bars[0].probability > 0.9


def test_higher_temperature_flattens():
    top = alternatives(a=0.6, b=0.25, c=0.1, d=0.05)
    entropies = [entropy(reshape(top, t, 1.0)) for t in (0.5, 1.0, 1.5)]
    assert entropies == sorted(entropies)
    assert len(set(entropies)) == 3


def test_top_p_cuts_the_tail_and_renormalises_what_is_kept():
    bars = reshape(alternatives(a=0.4, b=0.3, c=0.2, d=0.1), temperature=1.0, top_p=0.5)
    assert [b.kept for b in bars] == [True, True, False, False]
    assert probabilities(bars) == pytest.approx([0.4 / 0.7, 0.3 / 0.7, 0.0, 0.0])
    assert [b.before_cut for b in bars] == pytest.approx([0.4, 0.3, 0.2, 0.1])


def test_top_p_always_keeps_at_least_one():
    bars = reshape(alternatives(a=0.25, b=0.25, c=0.25, d=0.25), temperature=1.0, top_p=0.01)
    assert [b.kept for b in bars] == [True, False, False, False]
    assert bars[0].probability == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("temperature", "top_p", "message"),
    [
        (-0.1, 1.0, r"temperature must be in \[0, 2\)"),
        (2.0, 1.0, r"temperature must be in \[0, 2\)"),
        (1.0, 0.0, r"top_p must be in \(0, 1\]"),
        (1.0, 1.5, r"top_p must be in \(0, 1\]"),
    ],
)
def test_settings_out_of_range_are_refused(temperature, top_p, message):
    with pytest.raises(ValueError, match=message):
        reshape(alternatives(a=0.5, b=0.5), temperature, top_p)


# the widget


def sample_result() -> Result:
    """Three tokens; the model hesitated only over the second."""
    return answer(
        entry("The", The=0.97, A=0.03),
        entry(" cat", **{" cat": 0.3, " dog": 0.3, " bird": 0.25, " fish": 0.15}),
        entry(" sat", **{" sat": 0.9, " ran": 0.1}),
    )


def test_opens_at_the_most_uncertain_token():
    assert probs_widget(sample_result()).position.value == 2  # " cat", the second token


def test_opens_at_the_requested_position_counted_from_1_as_on_the_charts_axis():
    box = probs_widget(sample_result(), position=3)
    assert (box.position.min, box.position.value, box.position.max) == (1, 3, 3)
    assert "The cat<mark" in box.text.value and "␣sat</mark>" in box.text.value
    assert ">1</text>" in box.strip.value and ">3</text>" in box.strip.value  # the strip's axis: 1 to 3
    assert "position 3 · " in box._repr_mimebundle_()["text/html"]


def test_a_position_outside_the_answer_is_refused():
    for outside in (0, 4):
        with pytest.raises(ValueError, match=r"position must be in \[1, 3\] \(1 is the first token\)"):
            probs_widget(sample_result(), position=outside)


def test_text_label_shows_the_answer_so_far_with_the_token_highlighted():
    box = probs_widget(sample_result(), position=2)
    assert "The<mark" in box.text.value
    assert "␣cat</mark>" in box.text.value
    box.position.value = 3
    assert "The cat<mark" in box.text.value


def test_chart_shows_one_bar_per_alternative_with_visible_whitespace():
    chart = probs_widget(sample_result(), position=2).chart.value
    for token in ("␣cat", "␣dog", "␣bird", "␣fish"):
        assert token in chart
    assert shown_percentages(chart) == ["30.0%", "30.0%", "25.0%", "15.0%"]


def test_temperature_zero_puts_one_bar_at_100_percent():
    box = probs_widget(sample_result(), position=2)
    box.temperature.value = 0.0
    assert shown_percentages(box.chart.value) == ["100.0%", "0.0%", "0.0%", "0.0%"]


def test_lowering_top_p_greys_out_the_tail_and_the_shown_shares_still_add_up_to_100():
    box = probs_widget(sample_result(), position=2)
    assert "cut by top_p" not in box.chart.value
    box.top_p.value = 0.5
    chart = box.chart.value
    assert shown_percentages(chart) == ["50.0%", "50.0%"]
    assert "cut by top_p (was 25.0%)" in chart and "cut by top_p (was 15.0%)" in chart
    filled = [float(width) for width in re.findall(r"width:([\d.]+)%;background", chart)]
    assert filled == [50.0, 50.0, 0.0, 0.0]


def test_caption_states_the_approximation():
    caption = probs_widget(sample_result(), position=2).caption.value
    assert (
        "share: the chance at these settings, renormalised over the top K = 4 alternatives the model returned: "
        "an approximation of the full distribution. model: the model's own probability, before temperature "
        "and top_p (as the token view's hover shows)."
    ) in caption


def test_each_bar_labels_the_models_own_probability_and_the_renormalised_share_apart():
    """The top 5 of a real answer (" couch" generated): the model gave it 36.4%, the top 5 hold 65.3%."""
    top = ((" couch", math.log(0.364)), (" sofa", math.log(0.15)), (" bed", math.log(0.07)),
           (" floor", math.log(0.045)), (" chair", math.log(0.024)))
    box = probs_widget(answer(TokenLogprob(" couch", top[0][1], top)), position=1)
    assert labels(box.chart.value)[:2] == ["share 55.7% · model 36.4% ◀ generated", "share 23.0% · model 15.0%"]
    box.top_p.value = 0.5
    assert labels(box.chart.value)[1] == "cut by top_p (was 23.0%) · model 15.0%"
    view = token_view_html(box.entries)  # the answer's hover names the same number, as the model's
    assert 'title="model probability 36.4% | alternatives: ' in view and "p = " not in view


def test_model_text_is_escaped_everywhere():
    evil = "<script>alert(1)</script>"
    box = probs_widget(answer(entry(evil, **{evil: 0.6, "ok": 0.4})))
    for html in (box.chart.value, box.text.value):
        assert "<script>" not in html
        assert "&lt;script&gt;" in html


@pytest.mark.parametrize("result", [answer(), object()], ids=["empty", "missing"])
def test_a_result_without_logprobs_says_how_to_get_them(result):
    with pytest.raises(ValueError) as info:
        probs_widget(result)
    assert str(info.value) == NO_LOGPROBS


def test_the_strip_charts_every_tokens_probability_and_follows_the_position():
    box = probs_widget(sample_result(), position=2)
    assert box.children[0] is box.strip
    assert "3 tokens; a bar is each token" in box.strip.value
    before = re.search(r'class="marker" x="(\d+)', box.strip.value).group(1)
    box.position.value = 3
    after = re.search(r'class="marker" x="(\d+)', box.strip.value).group(1)
    assert int(after) > int(before)


def test_the_widget_carries_a_static_copy_of_what_it_shows_for_saved_notebooks():
    widget = probs_widget(answer(TokenLogprob("<b>", math.log(0.6), alternatives(x=0.6, y=0.4))), 1)
    widget.top_p.value = 0.5
    html = widget._repr_mimebundle_()["text/html"]
    assert "top_p 0.50" in html and "cut by top_p (was 40.0%)" in html and "<svg" in html
    assert "<b>" not in html and "&lt;b&gt;" in html  # the token stays text
    widget.top_p.value = 1.0
    assert "cut by top_p" not in widget._repr_mimebundle_()["text/html"]  # the copy follows the sliders
