"""``--base-url`` against a real OpenAI-compatible server the package did not write: llama.cpp's own.

The server (``python -m llama_cpp.server``, llama-cpp-python 0.3.36) runs the
0.5B model on a free loopback port for the whole module.  What it does, and
what the notebook must then show: streamed answers carry no usage chunk (the
footer says tokens were not reported and estimates the speed), answers asked
for whole do carry usage, and a second request cuts the stream that is
running (a comparison's cut column says to run one request at a time).
"""

from __future__ import annotations

import json
import time

import pytest

from conftest import outputs_text
from llama_server import ALIAS, LlamaServer, missing, model_path
from parts import require
from qwen_magics import runner
from qwen_magics.models import MODEL_STUDIO

pytestmark = pytest.mark.local

ONE_AT_A_TIME = "this server may serve one request at a time. Run with --concurrency 1"


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    require("llama.cpp's server", missing())
    with LlamaServer(model_path(), tmp_path_factory.mktemp("llama") / "server.log") as server:
        yield server


@pytest.fixture
def served(ip, llama):
    """The shell, with QwenMagics pointed at the llama.cpp server: its model, short answers, a price to show."""
    for setting in (f"base_url = {llama.url!r}", f"model = {ALIAS!r}", "max_tokens = 24",
                    f"prices = {{{ALIAS!r}: [1.0, 2.0]}}"):
        ip.run_line_magic("config", f"QwenMagics.{setting}")
    return ip


def wait_for(predicate, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_streamed_answer_says_its_tokens_were_not_reported_and_estimates_the_speed(served):
    result = served.run_cell_magic("qwen", "-t 0", "Count from 1 to 10.")
    assert result.state == "complete" and result.text.strip()
    assert result.usage is None and result.cost is None
    footer = outputs_text(served)
    assert "tokens not reported by the server" in footer
    assert "tok/s, counted with Qwen's tokenizer" in footer
    assert " in / " not in footer and "cost" not in footer


def test_an_answer_asked_for_whole_carries_the_servers_counts(served):
    result = served.run_cell_magic("qwen", "--no-stream -t 0", "Count from 1 to 10.")
    assert result.state == "complete" and result.text.strip()
    assert result.usage is not None and result.usage.input > 0 and result.usage.output > 0
    footer = outputs_text(served)
    assert f"{result.usage.input} in / {result.usage.output} out tokens" in footer
    assert "not reported" not in footer and f"cost {result.cost:.4f}" in footer
    assert "tok/s" not in footer  # the answer came whole: no generation time to divide by


def test_json_output_is_parsed(served):
    result = served.run_cell_magic("qwen", "-f json -t 0 --max-tokens 48",
                                   "Name the capital of France, as an object with a key name.")
    assert result.state == "complete"
    assert isinstance(result.data, dict) and result.data == json.loads(result.text)


def test_logprobs_come_with_each_streamed_token(served):
    result = served.run_cell_magic("qwen", "--logprobs 3 -t 0", "Say hello.")
    assert result.state == "complete" and result.logprobs
    assert all(len(token.top) == 3 for token in result.logprobs)
    assert "".join(token.token for token in result.logprobs) == result.text


def test_a_column_cut_by_the_next_request_says_to_run_one_at_a_time(served, llama):
    comparison = served.run_cell_magic("qwen_compare", "-t 0,1.2", "Count from 1 to 30.")
    states = [(r.state, r.error) for r in comparison.results]
    cut = [error for state, error in states if state == "incomplete"]
    assert cut, f"the server served both columns at once: {states}"  # README says it does not
    assert all(ONE_AT_A_TIME in error for error in cut), states
    assert all(state == "complete" for state, _ in states if state != "incomplete")
    assert f"%config QwenMagics.concurrency = {{{llama.url!r}: 1}}" in cut[0]
    shown = [c.output.children[-1].value for c in comparison.columns if c.result.state == "incomplete"]
    assert all(ONE_AT_A_TIME in line for line in shown)  # the column's last line, under its partial answer
    rows = comparison.rows
    assert [(row["input_tokens"], row["output_tokens"], row["cost"]) for row in rows] == [(None, None, None)] * 2
    assert comparison.to_dataframe()["output_tokens"].isna().all()


@pytest.mark.parametrize("flag, setting", [("--concurrency 1", None), ("", "{URL: 1}")],
                         ids=["flag", "QwenMagics.concurrency"])
def test_one_column_at_a_time_both_complete(served, llama, flag, setting):
    if setting:
        served.run_line_magic("config", "QwenMagics.concurrency = " + setting.replace("URL", repr(llama.url + "/")))
    comparison = served.run_cell_magic("qwen_compare", f"-t 0,1.2 {flag}", "Count from 1 to 30.")
    first, second = comparison.results
    assert (first.state, second.state) == ("complete", "complete"), (first.error, second.error)
    assert second.started >= first.started + first.elapsed or first.started >= second.started + second.elapsed


def test_qwen_models_shows_the_servers_models_and_not_the_catalogue(ip, llama, dashscope, capsys):
    table = ip.run_line_magic("qwen_models", f"--base-url {llama.url}")
    assert table.rows == [{"model": ALIAS}]
    assert repr(table).splitlines() == [f"1 model listed by {llama.url}", "model", ALIAS]
    assert "qwen3.5-plus" not in table._repr_html_()
    ip.run_line_magic("qwen_models", f"qwen-locl --base-url {llama.url}")
    ip.run_line_magic("qwen_models", f"qwen-plus --base-url {llama.url}")
    ip.run_line_magic("qwen_models", f"{ALIAS} --base-url {llama.url}")
    assert capsys.readouterr().out.splitlines() == [
        f"'qwen-locl' is not listed by {llama.url}: did you mean {ALIAS!r}?",
        f"'qwen-plus' is not listed by {llama.url}; it lists: {ALIAS}",
        f"{ALIAS!r} is offered by {llama.url}",
    ]
    assert dashscope.requests == []


def test_the_panel_offers_the_servers_models_and_runs_one_request_at_a_time(ip, llama):
    ip.run_line_magic("config", f"QwenMagics.base_url = {llama.url!r}")
    panel = ip.magics_manager.registry["QwenWidgetMagics"].make_panel()
    wait_for(lambda: ALIAS in panel.model.options)
    assert not set(MODEL_STUDIO) & set(panel.model.options)
    assert panel.model.value == ALIAS  # the configured qwen3.5-plus is not this server's
    panel.max_tokens.value, panel.temperature.value = 24, 0
    panel.prompt.value = "Count from 1 to 30."
    panel.run()
    wait_for(lambda: "".join(part.value for part in panel.output.children))  # the first run is answering
    again = panel.run()  # stops the first, and sends only once it has ended
    wait_for(lambda: panel.result is not None)
    first = panel.result
    second = runner.wait(again, 60).results[0]
    assert first.state == "stopped" and second.state == "complete" and second.text.strip()
    assert second.started >= first.started + first.elapsed
    assert "tokens not reported by the server" in panel.output.children[-1].value
