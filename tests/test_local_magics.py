"""%%qwen with the real local Qwen2.5-Coder-0.5B, in a real shell and a real kernel.

Needs `qwen-magics install-local --model 0.5b` (CI runs it); answers are kept
to a few dozen tokens so the module stays fast.
"""

import math
import threading
from pathlib import Path

import nbformat
import pytest
from IPython.core.error import UsageError
from nbclient import NotebookClient

from conftest import interrupt_once_text_arrives
import qwen_magics
from qwen_magics.local.model import default_model, unload

pytestmark = pytest.mark.local
ROOT = Path(__file__).resolve().parents[1]
PROMPT = "Write a Python function that checks whether a number is prime."


@pytest.fixture
def offline(ip, monkeypatch):
    """The shell with no key at all, as on a new user's laptop."""
    monkeypatch.delenv("DASHSCOPE_API_KEY")
    return ip


def notices(shell):
    return [o["data"]["text/plain"] for o in shell.display_pub.outputs if o["data"]["text/plain"].startswith("⚠")]


@pytest.fixture(scope="module", autouse=True)
def free_models_afterwards():
    """Free the loaded models before interpreter teardown (llama.cpp's finaliser fails once modules are gone)."""
    yield
    unload()


def default_title():
    """The default local model: the 1.5B when it is installed (the README's first command installs it), else the 0.5B."""
    return default_model().title


def test_with_no_key_the_local_model_answers_and_says_so_once(offline, dashscope):
    first = offline.run_line_magic("qwen", f"-t 0 --max-tokens 24 {PROMPT}")
    offline.run_line_magic("qwen", f"-t 0 --max-tokens 8 {PROMPT}")
    assert notices(offline) == [f"⚠ No DASHSCOPE_API_KEY set: answering with {default_title()}, running "
                                "locally in this kernel; it does not reason, so no Thinking section appears "
                                "(set DASHSCOPE_API_KEY to use Model Studio, whose models reason)"]
    assert first.model == default_title() and first.parameters["protocol"] == "local"
    assert first.complete and first.text.strip() and first.usage.input > 0 and 0 < first.usage.output <= 24
    assert first.finish_reason in ("stop", "length") and first.ttft > 0
    assert dashscope.requests == []  # nothing left the kernel


def test_temperature_zero_and_a_fixed_seed_reproduce_the_text(offline):
    greedy = [offline.run_line_magic("qwen", f"-m local:0.5b -t 0 --max-tokens 24 {PROMPT}").text for _ in range(2)]
    assert greedy[0] == greedy[1]
    seeded = [offline.run_line_magic("qwen", f"-m local:0.5b -t 1.0 --seed 11 --max-tokens 24 {PROMPT}").text
              for _ in range(2)]
    assert seeded[0] == seeded[1]
    others = {offline.run_line_magic("qwen", f"-m local:0.5b -t 1.2 --seed {s} --max-tokens 24 Tell a short story."
                                     ).text for s in (1, 2, 3)}
    assert len(others) > 1


def test_ctrl_c_stops_local_generation_and_keeps_the_partial_answer(offline):
    offline.run_line_magic("qwen", "-m local:0.5b --max-tokens 4 warm up")  # load the model first
    interrupt_once_text_arrives(offline)
    with pytest.raises(UsageError, match="Stopped by user"):
        offline.run_line_magic("qwen", f"-m local:0.5b -t 0 --max-tokens 1000 {PROMPT} Explain every line at length.")
    result = offline.user_ns["_qwen"]
    assert result.state == "stopped" and result.text and result.usage.output < 1000
    assert not [t for t in threading.enumerate() if t.name == "qwen-local"]  # generation really ended
    # llama.cpp's own counts, not an estimate: the prompt, and every token generated before the stop
    assert result.usage.input > 20 and result.usage.output >= max(1, len(result.text) // 8)
    footer = offline.display_pub.outputs[-1]["data"]["text/plain"]
    assert f"{result.usage.input} in / {result.usage.output} out tokens" in footer and "estimated" not in footer
    assert footer.endswith("ran locally, free · stopped")  # the why is the cell's one error line, not said twice
    assert offline.run_line_magic("qwen", "-m local:0.5b --max-tokens 4 again").complete


def test_a_missing_local_model_is_one_line_and_no_footer(offline, tmp_path, monkeypatch):
    monkeypatch.setenv("QWEN_MAGICS_CACHE", str(tmp_path))  # an empty cache: no model installed
    with pytest.raises(UsageError) as refused:
        offline.run_line_magic("qwen", "-m local:0.5b hi")
    assert str(refused.value) == ("Local model 0.5b is not installed. Run `qwen-magics install-local --model 0.5b` "
                                  "(or `%qwen_local install` in a notebook).")
    assert offline.display_pub.outputs == []  # no footer, no second copy of the error
    assert offline.user_ns["_qwen"].state == "incomplete"


def test_qwen_local_shows_and_unloads_the_model(offline, capsys):
    offline.run_line_magic("qwen_local", "unload")  # start from nothing loaded
    offline.run_line_magic("qwen", "-m local:0.5b --max-tokens 4 hi")
    offline.run_line_magic("qwen_local", "")
    status = capsys.readouterr().out
    assert "Qwen2.5-Coder-0.5B-Instruct-Q4_K_M.gguf: 469 MiB, " in status and "context 4,096 tokens" in status
    offline.run_line_magic("qwen_local", "unload")
    assert "Unloaded 1 local model(s)." in capsys.readouterr().out


def test_a_prompt_too_long_for_the_context_is_one_line(offline):
    offline.run_line_magic("config", "QwenMagics.local_context = 64")
    with pytest.raises(UsageError, match=r"The prompt is \d+ tokens but the local context holds 64"):
        offline.run_line_magic("qwen", "-m local:0.5b " + "word " * 100)


def test_a_file_that_is_not_gguf_is_one_line(offline, tmp_path):
    bogus = tmp_path / "model.gguf"
    bogus.write_bytes(b"not a model")
    with pytest.raises(UsageError, match="is not a GGUF model file"):
        offline.run_line_magic("qwen", f"-m local:{bogus} hi")


@pytest.mark.e2e
@pytest.mark.timeout(900)  # ten real answers from the default model: the 1.5B once it is installed (~13 tok/s)
def test_the_quickstart_runs_on_the_local_model_with_no_key(monkeypatch, tmp_path):
    monkeypatch.delenv("DASHSCOPE_API_KEY", raising=False)
    monkeypatch.delenv("QWEN_MAGICS_DASHSCOPE_URL", raising=False)
    nb = nbformat.read(ROOT / "notebooks" / "quickstart.ipynb", as_version=4)
    nb.cells.insert(2, nbformat.v4.new_code_cell("%config QwenMagics.max_tokens = 40"))  # keep the test short
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    plain = "\n".join(o.get("text", "") + o.get("data", {}).get("text/plain", "") for o in outputs)
    assert f"answering with {default_title()}, running locally" in plain
    assert plain.count(f"{default_title()} · ") >= 6  # footers of real local answers
    assert f"{default_title()} complete" in plain


def test_local_logprobs_match_the_answer_token_for_token(offline):
    result = offline.run_line_magic("qwen", "-m local:0.5b --logprobs 4 -t 0 --max-tokens 12 Say hello.")
    assert "".join(e.token for e in result.logprobs) == result.text
    assert len(result.logprobs) == result.usage.output or result.finish_reason == "stop"
    for entry in result.logprobs:
        assert 0 < math.exp(entry.logprob) <= 1 and len(entry.top) == 4
        assert entry.top[0][0] == entry.token  # temperature 0 picks the most likely token


@pytest.mark.e2e
@pytest.mark.timeout(600)  # a whole teaching notebook on the local model
def test_the_offline_sampling_notebook_teaches_with_real_numbers(monkeypatch, tmp_path):
    monkeypatch.delenv("DASHSCOPE_API_KEY", raising=False)
    nb = nbformat.read(ROOT / "notebooks" / "offline_sampling.ipynb", as_version=4)
    nb.cells.insert(2, nbformat.v4.new_code_cell("%config QwenMagics.max_tokens = 24\n"
                                                 "%config QwenMagics.model = 'local:0.5b'"))  # short, small
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    text = "\n".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    assert "identical: True" in text and "seed 7 twice, identical: True" in text
    assert "same as temperature 0: True" in text
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outputs)
    assert any("Token probabilities" in o.get("data", {}).get("text/html", "") for o in outputs)


def test_local_columns_take_turns_while_remote_columns_stream_at_once(ip, dashscope, capsys):
    from loopback import Script

    dashscope.enqueue(Script(reasoning="", text="r" * 120, chunk_delay=0.03, repeat=2))
    comparison = ip.run_cell_magic("qwen_compare", "-m local:0.5b,qwen-plus,local:0.5b,qwen-flash -t 0 "
                                                   "--max-tokens 16 --no-thinking", PROMPT)
    local = [r for r in comparison.results if r.model.startswith("Qwen2.5")]
    assert len(local) == 2 and all(r.complete for r in comparison.results)
    spans = sorted((r.started, r.started + r.elapsed) for r in local)
    assert spans[0][1] <= spans[1][0], "the two local columns overlapped"
    remote = dashscope.requests
    assert max(r.started for r in remote) < min(r.finished for r in remote)  # remote columns overlapped
    columns = "".join(p.value for c in comparison.columns for p in c.output.children)
    assert "one after another" not in columns  # said once, above the columns
    assert capsys.readouterr().out.count("⚠ The local model answers one column at a time: its 2 columns run one "
                                         "after another, the other columns at the same time") == 1


def test_a_comparison_of_local_columns_only_says_they_take_turns_and_nothing_of_other_columns(ip, capsys):
    ip.run_cell_magic("qwen_compare", "-m local:0.5b -t 0,1 --max-tokens 4", PROMPT)
    out = capsys.readouterr().out
    assert out.count("its 2 columns run one after another") == 1 and "other columns" not in out


def test_a_local_column_waiting_for_its_turn_says_so(ip):
    from qwen_magics import runner
    from qwen_magics.options.settings import expand
    from qwen_magics.widgets.compare import Comparison, column_specs

    specs = column_specs(expand({"model": ["local:0.5b"], "temperature": ["0", "1"]}, False), 1, ["--max-tokens", "4"])
    comparison = Comparison(PROMPT, specs, ip.magics_manager.registry["QwenWidgetMagics"].request_factory(PROMPT))
    seen = []
    for column in comparison.columns:
        column.status.observe(lambda change: seen.append(change.new), "value")
    runner.wait(runner.submit(comparison.run_all()), 120)
    assert any("waiting for the local model: it answers one column at a time" in s for s in seen), seen
    assert all(c.result.complete and c.status.value == "" for c in comparison.columns)


def test_with_no_key_the_panel_starts_on_the_local_model_and_a_refused_run_says_so_once(offline):
    from test_widgets import wait_for

    panel = offline.magics_manager.registry["QwenWidgetMagics"].make_panel()
    assert panel.model.value == "local"  # as %%qwen chooses with no key
    panel.prompt.value, panel.max_tokens.value, panel.temperature.value = PROMPT, 8, 0
    panel.run_button.click()
    wait_for(lambda: panel.result is not None and panel.result.state != "streaming", timeout=120)
    assert panel.result.complete and panel.result.parameters["protocol"] == "local"
    local = panel.result
    panel.model.value = "qwen-plus"  # a Model Studio model, and no key
    panel.run().result(30)
    assert "No API key" in panel.status.value and panel.status.value.count("<div") == 1  # one line
    assert panel.result is local  # a refused run is not a run: the local answer stays


def test_a_local_footer_says_the_run_was_local_and_free_not_cost_0(offline):
    result = offline.run_line_magic("qwen", f"-m local:0.5b -t 0 --max-tokens 4 {PROMPT}")
    footer = offline.display_pub.outputs[-1]["data"]["text/plain"]
    assert result.complete and "ran locally, free" in footer and "cost" not in footer


def test_local_structured_output_follows_the_schema(offline):
    offline.user_ns["colour"] = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}
    result = offline.run_line_magic("qwen", "-m local:0.5b -t 0 --max-tokens 40 --schema colour Name a colour as JSON.")
    assert isinstance(result.data, dict) and isinstance(result.data["name"], str)


def test_the_local_model_honours_both_penalties(offline):
    """The 0.5B loops at temperature 0; a repetition penalty (llama.cpp's repeat_penalty) changes its answer."""
    plain = offline.run_line_magic("qwen", "-m local:0.5b -t 0 --max-tokens 48 List the numbers from 1 to 30.")
    penalised = offline.run_line_magic("qwen", "-m local:0.5b -t 0 --max-tokens 48 --repetition-penalty 1.6 "
                                               "List the numbers from 1 to 30.")
    present = offline.run_line_magic("qwen", "-m local:0.5b -t 0 --max-tokens 48 --presence-penalty 2 "
                                             "List the numbers from 1 to 30.")
    assert plain.complete and penalised.complete and present.complete
    assert penalised.text != plain.text and present.text != plain.text
    assert penalised.parameters["repetition_penalty"] == 1.6 and present.parameters["presence_penalty"] == 2


def test_search_and_thinking_on_the_local_model_say_they_were_not_applied_and_are_not_recorded(
        offline, run_log_in_a_temporary_folder):
    from qwen_magics.runlog import RunLog

    result = offline.run_cell_magic("qwen", "-m local:0.5b --search --thinking --thinking-budget 200 -t 0 "
                                            "--max-tokens 4", "Who won the 2022 World Cup?")
    assert notices(offline) == ["⚠ --search is not applied: the local model cannot search the web",
                                "⚠ --thinking is not applied: the local Qwen2.5-Coder models do not reason",
                                "⚠ --thinking-budget is not applied: the local Qwen2.5-Coder models do not reason"]
    assert result.complete  # answered without them, instead of refusing the run
    assert not {"enable_search", "enable_thinking", "thinking_budget"} & set(result.parameters)
    assert qwen_magics.log().flush(10)
    [record] = RunLog(run_log_in_a_temporary_folder).recent(5)
    assert record.parameters == result.parameters and "enable_search" not in record.parameters


def test_a_configured_search_is_named_by_its_setting_on_the_local_model(offline):
    offline.run_line_magic("config", "QwenMagics.search = True")
    result = offline.run_line_magic("qwen", "-m local:0.5b -t 0 --max-tokens 2 --no-stream hi")
    assert notices(offline) == ["⚠ QwenMagics.search = True is not applied: the local model cannot search the web",
                                "⚠ --no-stream is not applied: the local model shows its answer as it generates it"]
    assert "enable_search" not in result.parameters and result.parameters["stream"] is True
