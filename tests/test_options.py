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


# The surfaces get a settings context, not the magic class -------------------------------------------

_SURFACES = ("QwenWidgetMagics", "QwenMapMagics", "QwenBatchMagics", "QwenLabMagics", "QwenEvalMagics")


def _references(tree: ast.AST) -> set[str]:
    """Names, attributes, imported names and the string "QwenMagics" (a registry key) that a module uses."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            found.add(node.id)
        elif isinstance(node, ast.Attribute):
            found.add(node.attr)
            if node.attr == "parser" and isinstance(node.value, ast.Attribute) and node.value.attr == "qwen":
                found.add(".qwen.parser")
        elif isinstance(node, ast.alias):
            found.add(node.asname or node.name.rpartition(".")[2])
        elif isinstance(node, ast.Constant) and node.value == "QwenMagics":
            found.add('"QwenMagics"')
    return found


def test_no_module_but_the_qwen_magic_reaches_into_the_magic_class():
    """Other magics and the widgets neither import nor name ``QwenMagics``, look it up, or read its parser."""
    for path in PACKAGE.rglob("*.py"):
        if path.relative_to(PACKAGE).as_posix() in ("magics/qwen.py", "__init__.py"):
            continue
        used = _references(ast.parse(path.read_text()))
        assert not used & {"QwenMagics", '"QwenMagics"', ".qwen.parser"}, path
    # the loader registers the magic and asks qwen.py for its context; it reads nothing of the instance
    loader = ast.parse((PACKAGE / "__init__.py").read_text())
    looked_up = [node for node in ast.walk(loader) if isinstance(node, ast.Subscript)
                 and isinstance(node.slice, ast.Constant) and node.slice.value == "QwenMagics"]
    assert looked_up == [] and ".qwen.parser" not in _references(loader)


def test_the_other_magics_and_the_panel_hold_the_context_and_never_the_magic(ip, dashscope):
    from qwen_magics.magics.qwen import context_of
    from qwen_magics.options.config import ConfigView

    registry = ip.magics_manager.registry
    magic, context = registry["QwenMagics"], context_of(ip)
    for name in _SURFACES:
        assert registry[name].context is context, name
        assert all(value is not magic for value in vars(registry[name]).values()), name
    panel = registry["QwenWidgetMagics"].make_panel()
    assert isinstance(panel.settings, ConfigView)
    assert all(value is not magic for value in vars(panel).values())
    assert context.run_log.log() is qwen_magics.log()  # qwen_magics.log() reaches the run log through it


def test_the_context_exposes_only_its_declared_fields(ip):
    from traitlets import TraitError

    from qwen_magics.magics.qwen import context_of
    from qwen_magics.options.config import QwenSettings
    from qwen_magics.options.context import Context

    context = context_of(ip)
    assert [f.name for f in dataclasses.fields(Context) if not f.name.startswith("_")] == \
        ["config", "run_log", "column_options", "track_live", "in_kernel"]
    assert {n for n in dir(context) if not n.startswith("_")} == \
        {"config", "run_log", "column_options", "track_live", "in_kernel", "renders_in_notebook", "once"}
    with pytest.raises(dataclasses.FrozenInstanceError):
        context.config = None  # type: ignore[misc]
    traits = sorted(QwenSettings.class_trait_names(config=True))
    assert dir(context.config) == traits and "model" in traits
    for name in ("run_log", "qwen", "shell", "context", "conversations", "track_live", "renders_in_notebook",
                 "trait_values", "config"):
        with pytest.raises(AttributeError):
            getattr(context.config, name)
    with pytest.raises(AttributeError):
        context.config.shell = None
    context.config.temperature = 0.4  # what the panel's "Make these the %%qwen defaults" does
    assert ip.magics_manager.registry["QwenMagics"].temperature == 0.4
    with pytest.raises(TraitError, match="out of range"):
        context.config.temperature = 2.5  # checked as %config checks it


def test_config_reaches_every_surface_on_its_next_run(ip, dashscope):
    """The context reads the configuration live: ``%config`` after loading applies to the next map and column."""
    ip.user_ns["rows"] = ["a"]
    for model, temperature in (("qwen-flash", 0.3), ("qwen-max", 1.1)):
        ip.run_line_magic("config", f"QwenMagics.model = '{model}'")
        ip.run_line_magic("config", f"QwenMagics.temperature = {temperature}")
        ip.run_cell_magic("qwen_map", "rows", "Say {item}")
        ip.run_cell_magic("qwen_compare", "--seed 1,2", "Say a")
        qwen_magics.map(["b"], "Say {item}")
    sent = [(body["model"], body["temperature"]) for body in chat_bodies(dashscope)]
    assert sent == [("qwen-flash", 0.3)] * 4 + [("qwen-max", 1.1)] * 4


def test_a_columns_option_words_are_read_as_a_cells_and_what_only_a_cell_does_is_refused(ip):
    from qwen_magics.errors import InvalidInput
    from qwen_magics.magics.qwen import context_of

    read = context_of(ip).column_options
    chosen = read("-m qwen-plus -t 0.7 --stop END --logprobs 3")
    assert (chosen.model, chosen.temperature, chosen.stop, chosen.logprobs, chosen.expand) == \
        ("qwen-plus", 0.7, ("END",), 3, False)
    with pytest.raises(InvalidInput, match=r"^--tools works in %%qwen cells, not in comparisons or the panel"):
        read("-m qwen-plus --tools f")
    with pytest.raises(InvalidInput, match=r"Unknown option --temprature: did you mean --temperature\? "
                                           r"\(see %qwen_eval\?"):
        read("--temprature 0.5", "qwen_eval")
    with pytest.raises(InvalidInput, match=r"Unexpected text in the options: 'hello'"):
        read("-t 0.5 hello")
