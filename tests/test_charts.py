"""The static SVG charts: well-formed, drawn to scale, labels kept as text, and present where people look.

Every SVG is parsed with ``xml.etree``: a chart that is not well-formed XML
would not render, and one that lets a label become markup would be unsafe.
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET

from qwen_magics.display.charts import BLUE, ORANGE, Series, bar_rows, entropy_strip, probability_strip
from qwen_magics.events import TokenLogprob
from qwen_magics.display.fragments import token_view_html
from qwen_magics.display.summary import diversity_chart, summarize, summary_html, summary_markdown

SVG = "{http://www.w3.org/2000/svg}"
HOSTILE = '<script>alert("x")</script> & -t 1'


def parse(svg: str) -> ET.Element:
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg"
    return root


def svgs_in(html: str) -> list[ET.Element]:
    return [parse(m) for m in re.findall(r"<svg\b.*?</svg>", html, flags=re.S)]


def bars(root: ET.Element) -> list[ET.Element]:
    return list(root.find(f"{SVG}g[@class='bars']").iter(f"{SVG}rect"))


def texts(root: ET.Element) -> list[str]:
    """What the chart writes (a shortened label's full text is in its tooltip, a ``<title>`` child)."""
    return [t.text for t in root.iter(f"{SVG}text")]


def no_script(root: ET.Element) -> None:
    assert not [e for e in root.iter() if e.tag.endswith("script") or e.tag.endswith("foreignObject")]


# bar_rows


def test_bars_are_as_long_as_their_values_and_missing_values_are_said():
    root = parse(bar_rows(["low", "high"], [Series("a", BLUE, [0.2, 0.8]), Series("b", ORANGE, [None, 0.5],
                                                                               missing="single run")],
                          title="t", axis="share"))
    widths = {(r.get("fill"), float(r.get("y"))): float(r.get("width")) for r in bars(root)}
    blue = [w for (fill, _), w in sorted(widths.items(), key=lambda kv: kv[0][1]) if fill == BLUE]
    assert blue[1] == 4 * blue[0] > 0
    assert [w for (fill, _), w in widths.items() if fill == ORANGE] == [blue[1] * 0.5 / 0.8]
    assert "single run" in texts(root) and "share" in texts(root) and "setting" in texts(root)


def test_a_hostile_label_stays_text():
    svg = bar_rows([HOSTILE], [Series("a", BLUE, [0.5])], title=HOSTILE, axis=HOSTILE)
    root = parse(svg)
    no_script(root)
    assert "<script" not in svg
    assert HOSTILE in texts(root)  # the axis label, whole; the row label is shortened, its tooltip whole
    assert HOSTILE in [t.text for t in root.iter(f"{SVG}title")]


# probability_strip


def test_an_unsure_token_draws_lower_than_a_sure_one_and_in_the_warning_colour():
    sure, unsure = bars(parse(probability_strip([0.9, 0.1])))
    assert float(unsure.get("height")) * 9 == float(sure.get("height"))
    assert float(unsure.get("y")) > float(sure.get("y"))  # nearer the baseline
    assert unsure.get("fill") is not None and sure.get("fill") is None  # the group's colour


def test_a_long_answer_is_downsampled_and_keeps_its_dip():
    probabilities = [0.95] * 1000
    probabilities[537] = 0.02
    root = parse(probability_strip(probabilities, columns=200))
    heights = [float(r.get("height")) for r in bars(root)]
    assert len(heights) == 200
    assert min(heights) == heights[537 // 5] < max(heights) / 10
    assert "the lowest of every 5 tokens" in root.find(f"{SVG}title").text


def test_the_marker_outlines_the_bar_of_the_current_token():
    root = parse(probability_strip([0.5] * 10, marker=3))
    marker = root.find(f"{SVG}rect[@class='marker']")
    assert float(marker.get("x")) < float(bars(root)[3].get("x")) < float(marker.get("x")) + float(marker.get("width"))


def test_a_long_strip_stays_small():
    assert len(probability_strip([i % 7 / 7 for i in range(5000)])) < 12_000


# where the charts appear


def test_the_diversity_chart_draws_identical_repeats_with_a_shorter_distinct_2_bar():
    summary = summarize(["one two three four", "one two three four", "the cat sat on a mat", "a dog ran far off"],
                        ["-t 0", "-t 0", HOSTILE, HOSTILE])
    root = parse(diversity_chart(summary))
    distinct = [float(r.get("width")) for r in bars(root) if r.get("fill") == BLUE]
    similar = [float(r.get("width")) for r in bars(root) if r.get("fill") == ORANGE]
    assert distinct[0] < distinct[1]  # 3 of 6 bigrams distinct against 10 of 10
    assert similar[0] > similar[1]  # identical repeats against answers sharing one word
    no_script(root)
    assert len(diversity_chart(summary)) < 8_000


def test_a_single_setting_run_once_has_no_chart_and_two_settings_have_one():
    assert diversity_chart(summarize(["only answer"], ["-t 0"])) == ""
    assert summary_html(summarize(["only answer"], ["-t 0"]), ["-t 0"]).count("<svg") == 0
    two = summarize(["a b", "c d"], ["-t 0", "-t 1"])
    assert len(svgs_in(summary_html(two, ["-t 0", "-t 1"]))) == 1
    assert "\n\n<div><svg" in summary_markdown(two, ["-t 0", "-t 1"])  # a raw HTML block of its own


def test_the_token_view_charts_each_tokens_probability():
    entries = [TokenLogprob("Sure", math.log(0.9)), TokenLogprob("<b>", math.log(0.1))]
    view = token_view_html(entries)
    [root] = svgs_in(view)
    assert [round(float(r.get("height")) / float(bars(root)[0].get("height")), 3) for r in bars(root)] == [1, 0.111]
    assert "&lt;b&gt;" in view


def test_the_comparison_exports_its_diversity_chart(ip, dashscope):
    comparison = ip.run_cell_magic("qwen_compare", "-m qwen-plus -t 0,1.3 -n 2 --no-thinking", "hi")

    exported = comparison.to_html()
    [root] = svgs_in(exported)
    assert "&lt;svg" not in exported
    assert [t for t in texts(root) if t.startswith("-m qwen-plus")] == ["-m qwen-plus -t 0 --no-thinking",
                                                                        "-m qwen-plus -t 1.3 --no-thinking"]
    markdown = comparison.to_markdown()
    assert len(svgs_in(markdown)) == 1 and "\n<div><svg" in markdown
    assert len(svgs_in(comparison.summary.value)) == 1  # and under the live widget


def test_the_entropy_strip_keeps_its_peak_and_says_where_its_values_come_from():
    bits = [0.1] * 400
    bits[217] = 6.5
    whole = parse(entropy_strip(bits))
    heights = [int(rect.get("height")) for rect in bars(whole)]
    assert len(heights) == 134  # 3 tokens a bar, each bar at its run's highest
    assert heights[217 // 3] == round(6.5 / 7 * 60) and sorted(heights)[-2] == round(0.1 / 7 * 60)  # scale: 7 bits
    assert "whole vocabulary" in whole.find(f"{SVG}title").text
    assert "approximation" in parse(entropy_strip([1.0, 2.0], approximate=True)).find(f"{SVG}title").text


def test_the_token_view_charts_entropy_whole_for_the_local_model_and_approximate_from_the_top_k():
    local = [TokenLogprob("a", -0.1, (("a", -0.1), ("b", -2.5)), 3.25), TokenLogprob("b", -1.0, (("b", -1.0),), 0.5)]
    remote = [TokenLogprob("a", -0.1, (("a", -0.1), ("b", -2.5))), TokenLogprob("b", -1.0, (("b", -1.0),))]

    whole, approximate = svgs_in(token_view_html(local))[1], svgs_in(token_view_html(remote))[1]
    assert "whole vocabulary" in whole.find(f"{SVG}title").text
    assert [int(r.get("height")) for r in bars(whole)] == [round(3.25 / 4 * 60), round(0.5 / 4 * 60)]
    assert "approximation" in approximate.find(f"{SVG}title").text
    assert int(bars(approximate)[1].get("height")) == 0  # one alternative: no uncertainty left to see
    assert len(svgs_in(token_view_html([TokenLogprob("a", -0.1)]))) == 1
