"""The sampling panel and %%qwen_compare, driven through their Python API against the loopback server.

Assertions are on widget state and on what the server really received:
the settings of every column, and overlapping request times (concurrency).
"""

import time

import pytest
from IPython.core.error import UsageError
from loopback import Script

from qwen_magics.errors import QwenMagicsError

from conftest import outputs_text


def bodies(server):
    """The bodies of the requests that asked for answers (the panel also lists the endpoint's models, with a GET)."""
    return [r.body for r in server.requests if r.method == "POST"]


def overlapping(requests):
    """True when every request started before any of them finished: all were open at once."""
    return max(r.started for r in requests) < min(r.finished for r in requests)


def wait_for(predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_columns_stream_at_the_same_time(ip, dashscope):
    dashscope.enqueue(Script(reasoning="", text="a" * 80, chunk_chars=4, chunk_delay=0.03, repeat=3))  # ~0.6 s each
    comparison = ip.run_cell_magic("qwen_compare", "-m qwen3.5-plus,qwen-flash,qwen-plus --no-expand", "Same prompt")
    reqs = dashscope.requests
    assert sorted(b["model"] for b in bodies(dashscope)) == ["qwen-flash", "qwen-plus", "qwen3.5-plus"]
    # Every request started before any finished: all three streamed at once, so the wall time is the slowest
    # column's (asserted by order, not by a ratio of times that a busy machine stretches).
    assert overlapping(reqs)
    assert [r.text for r in comparison.results] == ["a" * 80] * 3
    assert ip.user_ns["_qwen_compare"] is comparison
    first = comparison.columns[0].output.children
    assert "aaaa" in "".join(part.value for part in first) and "qwen3.5-plus · " in first[-1].value


def test_each_column_sends_its_own_settings(ip, dashscope):
    comparison = ip.run_cell_magic("qwen_compare", "-t 0,0.7,1.3 -m qwen-plus --seed 5 --max-tokens 50", "hi")
    sent = sorted((b["temperature"], b["seed"], b["max_tokens"], b["model"]) for b in bodies(dashscope))
    assert sent == [(0.0, 5, 50, "qwen-plus"), (0.7, 5, 50, "qwen-plus"), (1.3, 5, 50, "qwen-plus")]
    assert [c.spec.label for c in comparison.columns] == ["-m qwen-plus -t 0 --seed 5", "-m qwen-plus -t 0.7 --seed 5",
                                                          "-m qwen-plus -t 1.3 --seed 5"]


def test_grid_crosses_temperature_and_top_p(ip, dashscope):
    comparison = ip.run_cell_magic("qwen_compare", "--grid -m qwen-plus -t 0.3,1.3 --top-p 0.2,1", "hi")
    assert sorted((b["temperature"], b["top_p"]) for b in bodies(dashscope)) == [(0.3, 0.2), (0.3, 1.0), (1.3, 0.2),
                                                                               (1.3, 1.0)]
    assert len(comparison.columns) == 4


def test_lists_of_different_lengths_need_grid(ip, dashscope):
    with pytest.raises(UsageError, match="different lengths.*--grid"):
        ip.run_cell_magic("qwen_compare", "-m qwen-plus,qwen-max -t 0,0.5,1", "hi")
    assert dashscope.requests == []


def test_bad_settings_are_refused_before_any_request(ip, dashscope):
    with pytest.raises(UsageError, match=r"temperature 5.0 is out of range"):
        ip.run_cell_magic("qwen_compare", "-m qwen-plus -t 0,5", "hi")
    assert dashscope.requests == []


def test_cell_only_options_typed_into_a_column_are_refused_rather_than_silently_dropped(ip, dashscope):
    """A column's options box takes %qwen options; those that need a cell (--tools asks before running) say so."""
    ip.user_ns["f"] = lambda: 1
    make = ip.magics_manager.registry["QwenWidgetMagics"].request_factory("hi")
    with pytest.raises(QwenMagicsError, match=r"--tools works in %%qwen cells, not in comparisons or the panel"):
        make("-m qwen-plus --tools f")
    assert dashscope.requests == []


def test_repeats_show_sampling_variance_in_the_summary(ip, dashscope):
    comparison = ip.run_cell_magic("qwen_compare", "-m qwen-plus -t 0,1.2 -n 3", "hi")
    assert len(comparison.columns) == 6 and len(dashscope.requests) == 6
    assert [c.spec.group for c in comparison.columns] == ["-m qwen-plus -t 0"] * 3 + ["-m qwen-plus -t 1.2"] * 3
    summary = comparison.summary.value
    assert "distinct" in summary.lower() and "-m qwen-plus -t 1.2" in summary


def test_a_failing_column_shows_its_error_and_the_others_finish(ip, dashscope):
    comparison = ip.run_cell_magic("qwen_compare", "-m qwen-plus,qwen-nope,qwen-flash", "hi")
    states = [r.state for r in comparison.results]
    assert states == ["complete", "incomplete", "complete"]
    assert "Model 'qwen-nope' is not available" in comparison.results[1].error
    assert "Model &#x27;qwen-nope&#x27; is not available" in comparison.columns[1].output.children[-1].value


def test_concurrency_is_bounded(ip, dashscope):
    dashscope.enqueue(Script(reasoning="", text="b" * 40, chunk_delay=0.03, repeat=4))
    ip.run_cell_magic("qwen_compare", "-m qwen-plus -t 0.1,0.2,0.3,0.4 --concurrency 2", "hi")
    reqs = sorted(dashscope.requests, key=lambda r: r.started)
    for r in reqs:
        open_at_start = [o for o in reqs if o.started <= r.started < o.finished]
        assert len(open_at_start) <= 2


def test_a_column_can_be_edited_and_rerun_alone_and_stop_cancels(ip, dashscope):
    comparison = ip.run_cell_magic("qwen_compare", "-m qwen-plus,qwen-flash --no-thinking", "hi")
    column = comparison.columns[1]
    column.options.value = "-m qwen-max -t 0.25 --no-thinking"
    dashscope.enqueue(Script(reasoning="", text="slow " * 200, chunk_delay=0.02))
    comparison.start(column)
    wait_for(lambda: len(dashscope.requests) == 3 and column.output.children)
    assert (bodies(dashscope)[-1]["model"], bodies(dashscope)[-1]["temperature"]) == ("qwen-max", 0.25)
    wait_for(lambda: "slow" in "".join(part.value for part in column.output.children))  # streaming, not done
    comparison.stop()
    wait_for(lambda: column.result is not None and column.result.state == "stopped")
    assert 0 < len(column.result.text) < len("slow " * 200)
    assert comparison.results[0].state == "complete"  # the other column is untouched


def test_a_rerun_with_edited_options_shows_them_in_its_header_and_in_the_summary(ip, dashscope):
    comparison = ip.run_cell_magic("qwen_compare", "-t 0,1 --no-thinking", "hi")
    column = comparison.columns[1]
    column.options.value = "-t 0.25 --top-p 0.5 --no-thinking"
    comparison.start(column)
    wait_for(lambda: column.result is not None and column.result.parameters.get("top_p") == 0.5
             and column.result.state == "complete")
    assert column.header.value == "<b>-t 0.25 --top-p 0.5 --no-thinking</b>"
    wait_for(lambda: "-t 0.25 --top-p 0.5" in comparison.summary.value)
    assert "-t 1 " not in comparison.summary.value and "-t 1<" not in comparison.summary.value
    assert "-t 0.25 --top-p 0.5" in comparison.to_markdown()


def test_to_dataframe_without_pandas_is_one_line_that_names_the_fix(ip, dashscope, monkeypatch):
    comparison = ip.run_cell_magic("qwen_compare", "-m qwen-plus,qwen-flash --no-thinking", "hi")
    monkeypatch.setitem(__import__("sys").modules, "pandas", None)  # what `import pandas` meets when it is absent
    with pytest.raises(QwenMagicsError, match=r"^to_dataframe\(\) needs pandas, which is not installed\. "
                                              r"Run `pip install pandas`, or use \.rows"):
        comparison.to_dataframe()
    assert [row["model"] for row in comparison.rows] == ["qwen-plus", "qwen-flash"]


def test_results_as_data_and_a_static_export(ip, dashscope):
    ip.run_cell_magic("qwen_compare", "-m qwen3.5-plus,qwen-flash -o runs", "Explain <b>entropy</b>")
    runs = ip.user_ns["runs"]
    frame = runs.to_dataframe()
    assert list(frame["model"]) == ["qwen3.5-plus", "qwen-flash"]
    assert {"temperature", "top_p", "seed", "text", "reasoning", "input_tokens", "output_tokens", "reasoning_tokens",
            "ttft", "elapsed", "finish_reason", "cost"} <= set(frame.columns)
    assert frame["reasoning"][0] and frame["output_tokens"].min() > 0
    bundle = runs._repr_mimebundle_()
    assert "### -m qwen3.5-plus" in bundle["text/markdown"] and "### -m qwen-flash" in bundle["text/markdown"]
    assert "<b>entropy</b>" not in bundle["text/html"]  # the prompt and answers are escaped in the export
    final = ip.display_pub.outputs[-1]
    assert final["update"] and "application/vnd.jupyter.widget-view+json" in final["data"]
    assert "<h3>-m qwen3.5-plus</h3>" in final["data"]["text/html"]


def test_prices_give_a_cost_per_column(ip, dashscope):
    ip.run_line_magic("config", "QwenMagics.prices = {'qwen-plus': [1.0, 2.0]}")
    comparison = ip.run_cell_magic("qwen_compare", "-m qwen-plus,qwen-flash --no-thinking", "hi")
    plus, flash = comparison.results
    assert plus.cost == pytest.approx((plus.usage.input * 1.0 + plus.usage.output * 2.0) / 1e6) and flash.cost is None
    assert "cost 0.0000" in comparison.columns[0].output.children[-1].value


def test_terminal_comparison_prints_column_after_column(ip, dashscope, capsys):
    ip.run_line_magic("config", "QwenMagics.display_mode = 'terminal'")
    ip.run_cell_magic("qwen_compare", "-m qwen-plus,qwen-flash --no-thinking", "hi")
    out = capsys.readouterr().out
    assert out.index("── -m qwen-plus --no-thinking ──") < out.index("── -m qwen-flash --no-thinking ──")
    assert out.count("**Echo:** hi") == 2 and out.count("tok/s") == 2


def test_the_panel_runs_its_settings_and_makes_them_the_defaults(ip, dashscope):
    panel = ip.magics_manager.registry["QwenWidgetMagics"].make_panel()
    panel.model.value, panel.temperature.value, panel.top_p.value = "qwen-flash", 1.1, 0.5
    panel.seed.value, panel.thinking.value, panel.system.value = "9", "off", "Be brief."
    panel.prompt.value = "Name a colour."
    panel.run_button.click()
    shown = lambda: "".join(p.value for p in panel.output.children)  # noqa: E731
    # The result completes just before the column's final refresh: wait for both.
    wait_for(lambda: panel.result is not None and panel.result.state == "complete" and "Echo:</strong>" in shown())
    body = bodies(dashscope)[-1]
    assert (body["model"], body["temperature"], body["top_p"], body["seed"], body["enable_thinking"]) == \
        ("qwen-flash", 1.1, 0.5, 9, False)
    assert body["messages"][0] == {"role": "system", "content": "Be brief."}
    assert "Echo:</strong> Name a colour." in shown()
    panel.defaults_button.click()
    ip.run_line_magic("qwen", "hello")
    body = bodies(dashscope)[-1]
    assert (body["model"], body["temperature"], body["top_p"], body["seed"]) == ("qwen-flash", 1.1, 0.5, 9)


def test_the_panel_offers_known_and_listed_models_and_reports_bad_input(ip, dashscope):
    panel = ip.magics_manager.registry["QwenWidgetMagics"].make_panel()
    wait_for(lambda: "qwen2.5-7b-instruct" in panel.model.options, timeout=45)  # listed by the endpoint's /models
    assert {"qwen3.5-plus", "local", "local:0.5b"} <= set(panel.model.options)
    panel.prompt.value = ""
    panel.run_button.click()
    wait_for(lambda: panel.result is not None and panel.result.state != "streaming")
    assert "The prompt is empty" in panel.result.error
    ip.run_line_magic("qwen_panel", "")
    assert "application/vnd.jupyter.widget-view+json" in ip.display_pub.outputs[-1]["data"]


def test_the_panel_stop_button_keeps_the_partial_answer(ip, dashscope):
    panel = ip.magics_manager.registry["QwenWidgetMagics"].make_panel()
    dashscope.enqueue(Script(reasoning="", text="word " * 300, chunk_delay=0.02))
    panel.prompt.value = "long"
    panel.model.value = "qwen-plus"
    panel.run_button.click()
    wait_for(lambda: panel.result is not None and panel.result.text)
    panel.stop_button.click()
    wait_for(lambda: panel.result.state == "stopped")
    assert "stopped by user" in panel.output.children[-1].value
    assert outputs_text(ip) == ""  # the panel streams into its own widgets, not the cell


def test_differences_against_the_first_column_are_highlighted_on_demand(ip, dashscope):
    dashscope.enqueue(Script(reasoning="", text="the cat sat on the mat"),
                      Script(reasoning="", text="the dog sat on the <b>rug</b>"))
    comparison = ip.run_cell_magic("qwen_compare", "-m qwen-plus -t 0,1 --concurrency 1", "hi")
    second = comparison.columns[1]
    assert second.diff.value == ""
    comparison.diff_toggle.value = True
    assert "<ins" in second.diff.value and "<del" in second.diff.value and "dog" in second.diff.value
    assert "&lt;b&gt;rug&lt;/b&gt;" in second.diff.value and comparison.columns[0].diff.value == ""
    comparison.diff_toggle.value = False
    assert second.diff.value == ""
