"""One declared option set: %%qwen, %%qwen_map, %%qwen_compare and qwen_magics.map take the same request options.

Each option is declared once (``qwen_magics.options.declare``) and parsed into one typed value
(``Options``); what reaches the loopback server is the proof that an option works on a surface.
"""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest
from IPython.core.error import UsageError
from loopback import CHAT_PATH

import qwen_magics
from qwen_magics.options.declare import REQUEST_OPTIONS, words
from qwen_magics.options.value import Options

PACKAGE = Path(qwen_magics.__file__).parent
EVERY_KNOB = ("--stop END --search --presence-penalty 0.5 --repetition-penalty 1.1 --thinking "
              "--thinking-budget 100 --param foo=1")


def chat_bodies(server) -> list[dict]:
    return [r.body for r in server.requests if r.path == CHAT_PATH]


def assert_every_knob(body: dict) -> None:
    assert body["stop"] == ["END"]
    assert body["enable_search"] is True
    assert body["presence_penalty"] == 0.5 and body["repetition_penalty"] == 1.1
    assert body["enable_thinking"] is True and body["thinking_budget"] == 100
    assert body["foo"] == 1


def flags_of(parser) -> set[str]:
    return {flag for action in parser._actions for flag in action.option_strings}


def test_every_request_option_is_declared_on_every_magic_that_sends_requests(ip):
    magics = ip.magics_manager.registry
    declared = {flag for option in REQUEST_OPTIONS for flag in option.flags}
    assert declared <= flags_of(magics["QwenMagics"].qwen.parser)
    assert declared <= flags_of(magics["QwenMapMagics"].qwen_map.parser)
    compare = flags_of(magics["QwenWidgetMagics"].qwen_compare.parser)
    assert declared - {"--schema", "--prefix", "--no-stream"} <= compare


def test_the_map_puts_every_request_option_in_every_rows_request(ip, dashscope):
    ip.user_ns["rows"] = ["a", "b", "c"]
    ip.run_cell_magic("qwen_map", f"rows -m qwen-plus {EVERY_KNOB} --concurrency 1", "Say {item}")
    bodies = chat_bodies(dashscope)
    assert len(bodies) == 3
    for body in bodies:
        assert_every_knob(body)


def test_a_quoted_system_prompt_is_sent_without_its_quotes_in_every_magic(ip, dashscope):
    ip.user_ns["rows"] = ["a"]
    ip.run_cell_magic("qwen_map", 'rows -m qwen-plus -s "Answer briefly"', "Say {item}")
    ip.run_cell_magic("qwen", '-m qwen-plus -s "Answer briefly"', "Say a")
    ip.run_cell_magic("qwen_compare", "-m qwen-plus,qwen-flash -s 'Answer briefly'", "Say a")
    systems = [body["messages"][0] for body in chat_bodies(dashscope)]
    assert systems == [{"role": "system", "content": "Answer briefly"}] * 4


def test_map_from_python_takes_the_same_options_by_name(ip, dashscope):
    ip.run_line_magic("config", "QwenMagics.max_retries = 0")
    qwen_magics.map(["a", "b"], "Say {item}", model="qwen-plus", stop=["END"], search=True, presence_penalty=0.5,
                    repetition_penalty=1.1, thinking=True, thinking_budget=100, param=["foo=1"], concurrency=1)
    bodies = chat_bodies(dashscope)
    assert len(bodies) == 2
    for body in bodies:
        assert_every_knob(body)


def test_map_from_python_names_the_closest_option_for_a_typo_and_sends_nothing(ip, dashscope):
    with pytest.raises(Exception) as caught:
        qwen_magics.map(["a"], "Say {item}", temprature=0.3)
    assert "'temprature'" in str(caught.value) and "did you mean 'temperature'?" in str(caught.value)
    assert chat_bodies(dashscope) == []


def test_a_comparison_takes_comma_lists_of_the_compared_settings_and_the_rest_for_every_column(ip, dashscope):
    comparison = ip.run_cell_magic("qwen_compare", "-m qwen-plus --seed 1,2 --top-k 5 --max-tokens 40 --stop END "
                                   "--search --param foo=1", "hi")
    assert [c.spec.label for c in comparison.columns] == ["-m qwen-plus --seed 1", "-m qwen-plus --seed 2"]
    bodies = sorted(chat_bodies(dashscope), key=lambda b: b["seed"])
    assert [(b["seed"], b["top_k"], b["max_tokens"]) for b in bodies] == [(1, 5, 40), (2, 5, 40)]
    assert all(b["stop"] == ["END"] and b["enable_search"] is True and b["foo"] == 1 for b in bodies)


@pytest.mark.parametrize("magic, line", [("qwen", "--temprature 0.5"), ("qwen", "-m qwen-plus --top_p 0.5"),
                                         ("qwen_map", "rows --temprature 0.5"),
                                         ("qwen_compare", "-t 0,1 --presence-penalti 0.5")])
def test_an_unknown_option_names_the_closest_one_and_sends_nothing(ip, dashscope, magic, line):
    ip.user_ns["rows"] = ["a"]
    with pytest.raises(UsageError) as caught:
        ip.run_cell_magic(magic, line, "hello {item}" if magic == "qwen_map" else "hello")
    message = str(caught.value)
    expected = {"--temprature": "--temperature", "--top_p": "--top-p", "--presence-penalti": "--presence-penalty"}
    typo = next(t for t in expected if t in line)
    assert f"Unknown option {typo}" in message and f"did you mean {expected[typo]}?" in message
    assert "\n" not in message
    assert chat_bodies(dashscope) == []


def test_an_unknown_option_in_line_mode_names_the_closest_one_too(ip, dashscope):
    with pytest.raises(UsageError, match=r"Unknown option --temprature: did you mean --temperature\?"):
        ip.run_line_magic("qwen", "--temprature 0.5 hello")


def test_an_option_with_nothing_close_gets_no_guess(ip, dashscope):
    with pytest.raises(UsageError) as caught:
        ip.run_cell_magic("qwen", "--zzzz", "hello")
    assert "Unknown option --zzzz" in str(caught.value) and "did you mean" not in str(caught.value)


def test_words_split_a_line_as_a_shell_does():
    assert words('rows -s "Answer briefly" --stop \'a b\'') == ["rows", "-s", "Answer briefly", "--stop", "a b"]


def test_options_are_one_frozen_typed_value():
    options = Options.of({"temperature": 0.3, "stop": ["END"]})
    assert options.stop == ("END",) and options.temperature == 0.3
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.temperature = 1.0  # type: ignore[misc]


def test_argparse_is_imported_only_in_the_magic_and_option_layers():
    importers = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            if any(n.split(".")[0] == "argparse" for n in names):
                importers.add(path.relative_to(PACKAGE).parts[0])
    assert importers and importers <= {"magics", "options", "cli.py"}, importers


def test_the_package_top_level_holds_at_most_twelve_modules():
    assert len(list(PACKAGE.glob("*.py"))) <= 12
