"""The sampling panel and %%qwen_compare, driven through their Python API against the loopback server.

Assertions are on widget state and on what the server really received:
the settings of every column, and overlapping request times (concurrency).
"""

import time

import pytest
from IPython.core.error import UsageError
from loopback import Script

from qwen_magics import runner
from qwen_magics.errors import QwenMagicsError

from conftest import outputs_text


def bodies(server):
    """The bodies of the requests that asked for an answer (a panel also lists the endpoint's models, with a GET
    that may arrive after its first answer's request)."""
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
    column.controls.model.value, column.controls.temperature.value = "qwen-max", 0.25
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
    column.controls.temperature.value, column.controls.top_p.value = 0.25, 0.5
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


def test_the_panel_greys_out_search_and_thinking_for_the_local_model_and_sends_neither(ip, dashscope):
    panel = ip.magics_manager.registry["QwenWidgetMagics"].make_panel()
    panel.search.value, panel.thinking.value, panel.thinking_budget.value = True, "on", 300
    greyed = lambda: [c.disabled for c in (panel.search, panel.thinking, panel.thinking_budget)]  # noqa: E731
    panel.model.value = "local:0.5b"
    assert greyed() == [True, True, True] and not panel.temperature.disabled
    assert not {"--search", "--thinking", "--thinking-budget"} & set(panel.columns[0].options().split())
    panel.model.value = "qwen-plus"
    assert greyed() == [False, False, False]
    assert {"--search", "--thinking", "--thinking-budget"} <= set(panel.columns[0].options().split())


def test_a_panel_run_the_service_refuses_shows_its_error_line_and_no_footer(ip, dashscope):
    panel = ip.magics_manager.registry["QwenWidgetMagics"].make_panel()
    panel.model.value, panel.prompt.value = "qwen-nope", "hi"
    result = panel.run().result(timeout=30).results[0]
    assert result.state == "incomplete" and "is not available" in result.error
    shown = [part.value for part in panel.output.children]
    assert len(shown) == 1 and "is not available" in shown[0] and "tokens" not in shown[0]


def test_the_panel_offers_known_and_listed_models_and_reports_bad_input(ip, dashscope):
    panel = ip.magics_manager.registry["QwenWidgetMagics"].make_panel()
    wait_for(lambda: "qwen2.5-7b-instruct" in panel.model.options, timeout=45)  # listed by the endpoint's /models
    assert {"qwen3.5-plus", "local", "local:0.5b"} <= set(panel.model.options)
    panel.prompt.value = ""
    panel.run().result(20)
    assert "The prompt is empty" in panel.status.value and panel.result is None  # refused: not a run
    ip.run_line_magic("qwen_panel", "")
    assert "application/vnd.jupyter.widget-view+json" in ip.display_pub.outputs[-1]["data"]


def test_the_panel_stop_button_keeps_the_partial_answer(ip, dashscope):
    panel = ip.magics_manager.registry["QwenWidgetMagics"].make_panel()
    dashscope.enqueue(Script(reasoning="", text="word " * 300, chunk_delay=0.02))
    panel.prompt.value = "long"
    panel.model.value = "qwen-plus"
    panel.run_button.click()
    wait_for(lambda: "word" in "".join(p.value for p in panel.output.children))  # streaming
    assert not panel.stop_button.disabled
    panel.stop_button.click()
    wait_for(lambda: panel.result is not None and panel.result.state == "stopped")
    assert "stopped by user" in panel.output.children[-1].value
    assert outputs_text(ip) == ""  # the panel streams into its own widgets, not the cell


def test_a_stopped_run_all_ends_with_the_comparison_and_a_cancelled_one_propagates(ip, dashscope):
    panel = ip.magics_manager.registry["QwenWidgetMagics"].make_panel()
    panel.prompt.value, panel.model.value = "long", "qwen-plus"
    dashscope.enqueue(Script(reasoning="", text="word " * 300, chunk_delay=0.02))
    future = panel.run()
    wait_for(lambda: "word" in "".join(p.value for p in panel.output.children))
    panel.stop()  # the Stop button: the column stops alone, and Run all ends normally
    assert future.result(20) is panel.comparison and panel.result.state == "stopped"

    logged = []
    comparison = panel.comparison
    dashscope.enqueue(Script(reasoning="", text="word " * 300, chunk_delay=0.02))
    run_all = runner.submit(comparison.run_all(lambda request, result: logged.append(result)))
    wait_for(lambda: len(bodies(dashscope)) == 2)  # its output was cleared before its request went
    wait_for(lambda: "word" in "".join(p.value for p in panel.output.children))
    run_all.cancel()  # what Ctrl-C in %%qwen_compare does (runner.block)
    wait_for(lambda: comparison.columns[0].task is None)
    assert run_all.cancelled() and [r.state for r in logged] == ["stopped"] and "word" in logged[0].text


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


# The panel of columns (issue 32) -----------------------------------------------------------------------------------


def descendants(widget):
    """Every widget inside ``widget`` (itself included), as a front end would render them."""
    yield widget
    for child in getattr(widget, "children", ()):
        yield from descendants(child)


def group_ids(ip, path, prompt):
    import qwen_magics
    from qwen_magics.runlog import RunLog

    assert qwen_magics.log().flush(10)
    return [(r.model, r.group_id, r.group_kind) for r in RunLog(path).recent(1000)[::-1] if r.prompt == prompt]


def two_columns(ip):
    import qwen_magics

    panel = qwen_magics.panel(columns=2)
    left, right = panel.columns
    left.controls.model.value, left.controls.temperature.value = "qwen-plus", 0
    right.controls.model.value, right.controls.temperature.value = "qwen-flash", 1.2
    panel.prompt.value = "Name a colour."
    return panel


def test_a_two_column_panel_runs_both_columns_at_once_into_one_logged_comparison(ip, dashscope,
                                                                                run_log_in_a_temporary_folder):
    from qwen_magics.widgets.compare import Comparison

    panel = two_columns(ip)
    dashscope.enqueue(Script(reasoning="", text="c" * 60, chunk_chars=3, chunk_delay=0.03, repeat=2))  # ~0.6 s each
    comparison = panel.run().result(60)
    assert isinstance(comparison, Comparison) and comparison is panel.comparison
    assert sorted((b["model"], b["temperature"]) for b in bodies(dashscope)) == [("qwen-flash", 1.2), ("qwen-plus", 0)]
    assert overlapping([r for r in dashscope.requests if r.body is not None])  # both streams open at once
    frame = comparison.to_dataframe()
    assert len(frame) == 2 and list(frame["model"]) == ["qwen-plus", "qwen-flash"]
    assert "### -m qwen-plus -t 0" in comparison.to_markdown()
    wait_for(lambda: "similar" in comparison.summary.value.lower() or "distinct" in comparison.summary.value.lower())
    logged = group_ids(ip, run_log_in_a_temporary_folder, "Name a colour.")
    assert sorted(m for m, _, _ in logged) == ["qwen-flash", "qwen-plus"]
    assert len({g for _, g, _ in logged}) == 1 and {k for _, _, k in logged} == {"panel"}
    panel.run().result(60)  # a second Run all is a group of its own
    assert len({g for _, g, _ in group_ids(ip, run_log_in_a_temporary_folder, "Name a colour.")}) == 2


def test_each_displayed_column_has_its_own_sliders_and_add_column_copies_the_last(ip, dashscope):
    panel = two_columns(ip)
    right = panel.columns[1]
    right.controls.top_p.value, right.controls.seed.value, right.controls.thinking.value = 0.4, "7", "off"
    ip.display_pub.outputs.clear()
    from IPython.display import display

    display(panel)
    data = ip.display_pub.outputs[-1]["data"]
    assert data["application/vnd.jupyter.widget-view+json"]["model_id"] == panel.widget.model_id
    shown = list(descendants(panel.widget))
    for column in panel.columns:
        inside = list(descendants(column.box))
        assert column.controls.temperature in shown and column.controls.temperature in inside
        assert column.controls.top_p in shown and column.controls.top_p in inside
    assert panel.columns[0].controls.temperature is not right.controls.temperature
    panel.add_button.click()
    new = panel.columns[2]
    assert (new.controls.model.value, new.controls.temperature.value, new.controls.top_p.value,
            new.controls.seed.value, new.controls.thinking.value) == ("qwen-flash", 1.2, 0.4, "7", "off")
    assert new.controls.tokens() == right.controls.tokens()
    panel.remove_column(0)
    assert [c.controls.model.value for c in panel.columns] == ["qwen-flash", "qwen-flash"]


def test_a_linked_control_moves_in_every_column_and_the_others_stay_apart(ip, dashscope):
    panel = two_columns(ip)
    panel.add_column()
    panel.columns[1].controls.link["top_p"].value = True  # the toggle in the middle column
    assert all(c.controls.link["top_p"].value for c in panel.columns)
    panel.columns[2].controls.top_p.value = 0.3
    assert [c.controls.top_p.value for c in panel.columns] == [0.3, 0.3, 0.3]
    assert [c.controls.temperature.value for c in panel.columns] == [0, 1.2, 1.2]
    panel.columns[0].controls.temperature.value = 0.5  # not linked
    assert [c.controls.temperature.value for c in panel.columns] == [0.5, 1.2, 1.2]
    panel.columns[0].controls.link["top_p"].value = False
    panel.columns[0].controls.top_p.value = 0.9
    assert [c.controls.top_p.value for c in panel.columns] == [0.9, 0.3, 0.3]


def test_copy_as_cell_gives_the_compare_cell_that_sends_the_same_requests(ip, dashscope):
    panel = two_columns(ip)
    panel.system.value = "Be brief."
    panel.run().result(60)
    sent = sorted((b["model"], b["temperature"], b["messages"][0]["content"]) for b in bodies(dashscope))
    cell = panel.as_compare_cell()
    line, prompt = cell.split("\n", 1)
    assert line.startswith("%%qwen_compare -m qwen-plus,qwen-flash -t 0,1.2") and prompt == "Name a colour."
    dashscope.reset()
    comparison = ip.run_cell_magic("qwen_compare", line.removeprefix("%%qwen_compare "), prompt)
    assert sorted((b["model"], b["temperature"], b["messages"][0]["content"]) for b in bodies(dashscope)) == sent
    assert len(comparison.to_dataframe()) == 2
    ip.rl_next_input = None
    panel.copy_button.click()  # no front end here to take a cell: the panel shows it, and how to insert it
    assert "%%qwen_compare -m qwen-plus,qwen-flash" in panel.cell.value and "p.copy_as_cell()" in panel.notice.value
    assert ip.rl_next_input is None  # a click is no cell: nothing for the next cell that runs to pick up
    panel.copy_as_cell()
    assert ip.rl_next_input == cell  # what a kernel's shell sends as the set_next_input payload
    assert panel.cell.value == "" and "is the next cell" in panel.notice.value


def test_copy_as_cell_writes_default_for_a_column_that_sends_nothing_and_refuses_what_compare_cannot_say(ip,
                                                                                                    dashscope):
    import qwen_magics

    panel = qwen_magics.panel(columns=2)
    panel.prompt.value = "hi {braces}"
    panel.columns[0].controls.model.value = panel.columns[1].controls.model.value = "qwen-plus"
    panel.columns[1].controls.temperature.value = 1.3  # the left column keeps the model's default
    line = panel.as_compare_cell().split("\n")[0]
    assert line == "%%qwen_compare -m qwen-plus -t default,1.3 --no-expand"
    comparison = ip.run_cell_magic("qwen_compare", line.removeprefix("%%qwen_compare "), "hi {braces}")
    assert sorted("temperature" in b for b in bodies(dashscope)) == [False, True]
    assert [c.spec.label for c in comparison.columns] == ["-m qwen-plus", "-m qwen-plus -t 1.3"]
    panel.columns[1].controls.top_k.value = 5
    with pytest.raises(QwenMagicsError, match=r"Column 2's top_k differs from column 1's"):
        panel.as_compare_cell()
    panel.copy_as_cell()
    assert "Column 2&#x27;s top_k differs" in panel.notice.value


def test_list_options_open_a_column_per_value(ip, dashscope):
    ip.run_line_magic("qwen_panel", "-m qwen-plus,qwen-flash -t 0,1.3")
    panel = ip.user_ns["_qwen_panel"]
    assert [(c.controls.model.value, c.controls.temperature.value) for c in panel.columns] == \
        [("qwen-plus", 0), ("qwen-flash", 1.3)]
    ip.run_line_magic("qwen_panel", "--columns 3")
    assert len(ip.user_ns["_qwen_panel"].columns) == 3
    with pytest.raises(UsageError, match=r"--columns 3 but the lists give 2 columns"):
        ip.run_line_magic("qwen_panel", "--columns 3 -t 0,1")
    with pytest.raises(UsageError, match=r"temperature 'hot' is not a number"):
        ip.run_line_magic("qwen_panel", "-t 0,hot")
    import qwen_magics

    panel = qwen_magics.panel(model=["qwen-plus", "qwen-max"], temperature=[None, 0.9], thinking=False)
    assert [(c.controls.model.value, c.controls.default["temperature"].value, c.controls.tokens()[-1])
            for c in panel.columns] == [("qwen-plus", True, "--no-thinking"), ("qwen-max", False, "--no-thinking")]


def test_compare_columns_show_their_settings_in_sliders_and_a_slider_move_reruns_with_it(ip, dashscope):
    comparison = ip.run_cell_magic("qwen_compare", "-t 0,1.3 --max-tokens 40", "hi")
    assert [(c.controls.temperature.value, c.controls.default["temperature"].value) for c in comparison.columns] == \
        [(0, False), (1.3, False)]
    for column in comparison.columns:
        assert column.controls.temperature in list(descendants(comparison.widget))
        assert column.controls.temperature in list(descendants(column.box)) and column.controls.max_tokens.value == 40
    column = comparison.columns[1]
    column.controls.temperature.value = 0.6
    comparison.start(column).result(30)
    assert (bodies(dashscope)[-1]["temperature"], bodies(dashscope)[-1]["max_tokens"]) == (0.6, 40)
    assert column.header.value == "<b>-t 0.6 --max-tokens 40</b>"


def test_the_panel_starts_from_the_configuration_and_sends_nothing_unset(ip, dashscope):
    panel = ip.magics_manager.registry["QwenWidgetMagics"].make_panel()
    controls = panel.columns[0].controls
    assert controls.default["temperature"].value and controls.default["top_p"].value  # QwenMagics sets none
    assert not controls.temperature.readout  # no number that would not be sent
    panel.model.value, panel.prompt.value = "qwen-plus", "hi"
    panel.run().result(30)
    assert not {"temperature", "top_p", "presence_penalty", "repetition_penalty"} & bodies(dashscope)[-1].keys()
    ip.run_line_magic("config", "QwenMagics.temperature = 0.3")
    configured = ip.magics_manager.registry["QwenWidgetMagics"].make_panel()
    assert (configured.temperature.value, configured.columns[0].controls.default["temperature"].value) == (0.3, False)
    controls.top_p.value = 0.8000000000000002  # a front end's rounding to the slider's steps: not a setting
    assert controls.default["top_p"].value and "--top-p" not in controls.tokens()
    controls.temperature.value = 1.1  # moved: a setting
    assert not controls.default["temperature"].value and controls.temperature.readout
    panel.run().result(30)
    assert bodies(dashscope)[-1]["temperature"] == 1.1


def test_make_defaults_says_what_it_set(ip, dashscope):
    panel = ip.magics_manager.registry["QwenWidgetMagics"].make_panel()
    panel.model.value, panel.temperature.value, panel.seed.value = "qwen-flash", 1.1, "9"
    panel.defaults_button.click()
    said = panel.notice.value
    assert "model qwen-flash" in said and "temperature 1.1" in said and "seed 9" in said
    assert "the model&#x27;s own default for top_p" in said
    settings = ip.magics_manager.registry["QwenMagics"]
    assert (settings.model, settings.temperature, settings.top_p, settings.seed) == ("qwen-flash", 1.1, None, 9)


def test_a_local_column_greys_what_the_local_model_cannot_do_and_does_not_send_it(ip, dashscope):
    panel = ip.magics_manager.registry["QwenWidgetMagics"].make_panel()
    controls = panel.columns[0].controls
    controls.search.value, controls.thinking.value, controls.thinking_budget.value = True, "on", 100
    assert not controls.search.disabled and "--search" in controls.tokens()
    controls.model.value = "local"
    assert controls.search.disabled and controls.thinking.disabled and controls.thinking_budget.disabled
    assert controls.tokens() == ["-m", "local"]


def test_local_columns_taking_turns_are_said_once_above_the_columns(ip, dashscope):
    import qwen_magics

    panel = qwen_magics.panel(model=["local", "local", "qwen-plus"])
    panel.run().result(30)  # the prompt is empty: refused in every column, no model loaded
    said = "⚠ The local model answers one column at a time: its 2 columns run one after another, the other " \
           "columns at the same time"
    assert said in panel.notice.value
    assert all("The prompt is empty" in c.status.value for c in panel.columns)
    panel.notice.value = ""
    panel.run().result(30)
    assert panel.notice.value == ""  # once


# The comparison widget (issue 33, point 6) -------------------------------------------------------------------------


def test_a_refused_rerun_keeps_the_answer_and_shows_why(ip, dashscope):
    comparison = ip.run_cell_magic("qwen_compare", "-m qwen-plus,qwen-flash --no-thinking", "hi")
    column = comparison.columns[1]
    before, shown = column.result, [p.value for p in column.output.children]
    summary = comparison.summary.value
    column.controls.seed.value = "abc"  # not a number
    assert comparison.start(column).result(20) is None
    assert "invalid int value: &#x27;abc&#x27;" in column.status.value
    assert column.result is before and [p.value for p in column.output.children] == shown
    assert comparison.summary.value == summary and "0 characters" not in comparison.summary.value
    assert len(comparison.rows) == 2 and len(dashscope.requests) == 2


def test_running_a_column_again_stops_its_run_before_and_streams_once(ip, dashscope):
    comparison = ip.run_cell_magic("qwen_compare", "-m qwen-plus,qwen-flash --no-thinking", "hi")
    column = comparison.columns[0]
    dashscope.enqueue(Script(reasoning="", text="slow " * 200, chunk_delay=0.02))
    first = comparison.start(column)
    wait_for(lambda: "slow" in "".join(p.value for p in column.output.children))
    again = comparison.start(column)
    assert first.result(20).state == "stopped" and again.result(20).state == "complete"
    assert column.result is again.result() and len(column.output.children) == len(comparison.columns[1].output.children)


def test_stop_is_enabled_only_while_a_column_runs(ip, dashscope):
    comparison = ip.run_cell_magic("qwen_compare", "-m qwen-plus,qwen-flash --no-thinking", "hi")
    assert comparison.stop_button.disabled  # every column finished
    dashscope.enqueue(Script(reasoning="", text="slow " * 200, chunk_delay=0.02))
    future = comparison.start(comparison.columns[0])
    wait_for(lambda: not comparison.stop_button.disabled)
    comparison.stop_button.click()
    future.result(20)
    assert comparison.stop_button.disabled and comparison.columns[0].result.state == "stopped"


def test_a_column_waiting_for_its_turn_says_so(ip, dashscope):
    dashscope.enqueue(Script(reasoning="", text="w" * 60, chunk_chars=2, chunk_delay=0.03, repeat=2))
    seen = []
    registry = ip.magics_manager.registry["QwenWidgetMagics"]
    from qwen_magics.options.settings import expand
    from qwen_magics.widgets.compare import Comparison, column_specs

    specs = column_specs(expand({"model": ["qwen-plus"], "temperature": ["0", "1"]}, False), 1, ["--no-thinking"])
    comparison = Comparison("hi", specs, registry.request_factory("hi"), concurrency=1)
    comparison.columns[1].status.observe(lambda change: seen.append(change.new), "value")
    from qwen_magics import runner

    runner.wait(runner.submit(comparison.run_all()))
    assert any("waiting for a free slot" in s for s in seen), seen
    assert comparison.columns[1].status.value == "" and comparison.columns[1].result.state == "complete"


@pytest.mark.parametrize("n, per_row", [(1, 1), (2, 2), (3, 3), (4, 2), (5, 3), (6, 3), (8, 3)])
def test_columns_fill_rows_evenly(ip, dashscope, n, per_row):
    import qwen_magics

    panel = qwen_magics.panel(columns=n)
    assert panel.comparison.grid.layout.grid_template_columns == f"repeat({per_row}, minmax(240px, 1fr))"


def test_the_panel_shows_the_comparison_as_plain_text_in_a_terminal(ip, dashscope):
    panel = two_columns(ip)
    assert "panel of 2 column(s)" in panel._repr_mimebundle_()["text/plain"]
    panel.run().result(60)
    bundle = panel._repr_mimebundle_()
    assert "── -m qwen-plus -t 0 ──" in bundle["text/plain"] and "**Echo:** Name a colour." in bundle["text/plain"]
    assert "### -m qwen-flash -t 1.2" in bundle["text/markdown"]


def test_the_comparison_frame_has_the_summarys_similarity_to_the_first_column(ip, dashscope):
    from qwen_magics.display.summary import summarize

    dashscope.enqueue(Script(reasoning="", text="今天天气很好，我们去公园散步吧。"),
                      Script(reasoning="", text="今天天气很好，我们去海边散步吧。"))
    comparison = ip.run_cell_magic("qwen_compare", "-m qwen-plus,qwen-flash --no-thinking --concurrency 1", "hi")
    frame = comparison.to_dataframe()
    texts = list(frame.text)
    assert list(frame.similarity) == summarize(texts).to_first and frame.similarity[0] == 1.0
    assert 0.75 <= frame.similarity[1] < 1.0
