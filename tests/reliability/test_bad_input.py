"""Bad input: one line that names the problem and what to do, before anything is sent when it can be checked here.

What only the service can judge (an unknown model) costs one request and reads the same way; what can
be sent after a repair (a 50 MB value, bytes that are not UTF-8) is sent repaired, with a one-line
warning above the answer that says what was done and what to do instead.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass

import pytest

from .support import APIS, ask, audit_html, bad_input_case, generation_requests, run_panel, visible


SETUP = r'''
import math
from typing import Callable
from pydantic import BaseModel

class Unprintable:
    def __str__(self):
        raise RuntimeError("no text for you")

def explode():
    raise ValueError("first line\nsecond line")

class SchemaOfCallable(BaseModel):
    f: Callable[[], int]

nothing_here, a_number, math_module, start = "", 3, math, "def f():\n"
unprintable = Unprintable()
raw_bytes = b"\xff\xfe caf\xe9"
escaped_text = b"caf\xe9".decode("utf-8", "surrogateescape")
schema_list = ["name"]
schema_text = '{"type": "object", "properties":'
schema_bad_properties = {"type": "object", "properties": ["name"]}
schema_bad_required = {"type": "object", "properties": {"name": {"type": "string"}}, "required": "name"}
schema_not_json = {"type": "object", "properties": {"tags": {"type": "array", "default": {"a", "b"}}}}
'''
BIG = r'''
fifty_mb = "x" * 50_000_000
fifty_mb_png = b"\x89PNG\r\n\x1a\n" + bytes(50 * 2**20)
'''


@dataclass(frozen=True)
class Case:
    line: str  # %qwen options and prompt, after --api and -m (TMP/ is a folder with notes.txt in it)
    says: tuple[str, ...]  # the problem, and what to do
    how: str = "before sending"  # or "by the service" (one request), or "warned" (sent repaired, one-line warning)
    cell: str | None = None  # cell mode: the cell body


RANGE = "Use a value"
EXPR = "Fix the expression, or write {{ and }} for literal braces"
QWEN = {
    "temperature below 0": Case("-t -0.5 hi", ("temperature -0.5 is out of range", f"{RANGE} in [0, 2)")),
    "temperature of 2": Case("-t 2 hi", ("temperature 2.0 is out of range", f"{RANGE} in [0, 2)")),
    "temperature NaN": Case("-t nan hi", ("temperature nan is out of range", f"{RANGE} in [0, 2)")),
    "top_p of 0": Case("--top-p 0 hi", ("top_p 0.0 is out of range", f"{RANGE} in (0, 1]")),
    "top_p above 1": Case("--top-p 1.5 hi", ("top_p 1.5 is out of range", f"{RANGE} in (0, 1]")),
    "negative max tokens": Case("--max-tokens -5 hi", ("max_tokens -5 is out of range", f"{RANGE} between 1 and")),
    "zero max tokens": Case("--max-tokens 0 hi", ("max_tokens 0 is out of range", f"{RANGE} between 1 and")),
    "huge max tokens": Case("--max-tokens 10000000000 hi", ("max_tokens 10000000000 is out of range",
                                                            f"{RANGE} between 1 and 131,072")),
    "negative thinking budget": Case("--thinking-budget -1 hi", ("thinking_budget -1 is out of range", RANGE)),
    "zero top_k": Case("--top-k 0 hi", ("top_k 0 is out of range", f"{RANGE} 1 or more")),
    "negative seed": Case("--seed -1 hi", ("seed -1 is out of range", RANGE)),
    "zero timeout": Case("--timeout 0 hi", ("timeout 0 is out of range", "Use a number of seconds above 0")),
    "unknown option": Case("--temprature 0.5 hi", ("Unknown option --temprature", "see %qwen? for the options")),
    "unknown short option": Case("-z hi", ("Unknown option -z", "see %qwen? for the options")),
    "option without its value": Case("-t", ("Option -t needs a value", "see %qwen? for its meaning")),
    "option value that is not a number": Case("-t warm hi", ("invalid float value: 'warm'",
                                                             "see %qwen? for the options")),
    "unknown format": Case("-f yaml hi", ("invalid choice: 'yaml'", "choose from 'markdown'")),
    "unknown region": Case("--region mars hi", ("Unknown region 'mars'", "Use one of: singapore")),
    "unknown model": Case("-m qwen-nope hi", ("Model 'qwen-nope' is not available", "Check the model name"),
                          how="by the service"),
    "empty prompt": Case("", ("The prompt is empty", "Write it after %qwen")),
    "blank prompt": Case("   ", ("The prompt is empty", "Write it after %qwen")),
    "blank cell": Case("", ("The prompt is empty", "in the cell body under %%qwen"), cell="  \n\t\n"),
    "prompt that expands to nothing": Case("{nothing_here}", ("The prompt is empty", "Write it after %qwen")),
    "name that does not resolve": Case("{undefined_thing} hi", ("{undefined_thing}: name 'undefined_thing' is not "
                                                                "defined", "Define undefined_thing in a cell first")),
    "attribute that does not resolve": Case("{math_module.nope} hi", ("{math_module.nope} raised AttributeError",
                                                                      EXPR)),
    "expression that raises": Case("{1/0} hi", ("{1/0} raised ZeroDivisionError: division by zero", EXPR)),
    "expression that raises a multi-line error": Case("{explode()} hi", ("raised ValueError: first line (+1 more "
                                                                         "line)", EXPR)),
    "value whose str() raises": Case("{unprintable} hi", ("{unprintable} could not be turned into text: str() "
                                                          "raised RuntimeError", "Expand something printable")),
    "unmatched brace": Case("{ hi", ("The prompt has an unmatched brace", "Write {{ and }} for literal braces")),
    "empty braces": Case("{} hi", ("The prompt has an empty {}", "Write {{}} for literal braces")),
    "50 MB variable": Case("{fifty_mb} hi", ("{fifty_mb} is 50,000,000 characters; sent the first 20,000",
                                             "raise %config QwenMagics.max_value_chars"), how="warned"),
    "bytes that are not UTF-8": Case("{raw_bytes} hi", ("{raw_bytes} is not valid UTF-8; undecodable bytes were "
                                                        "replaced", "decode it yourself"), how="warned"),
    "text that is not UTF-8": Case("{escaped_text} hi", ("{escaped_text} is not valid UTF-8 text",
                                                         "decode the original bytes"), how="warned"),
    "image that does not exist": Case("--image /no/such/cat.png hi", ("--image '/no/such/cat.png': no such file or "
                                                                      "variable", "Give a URL, a file path")),
    "file that is not an image": Case("--image TMP/notes.txt hi", ("is not an image (unrecognised content)",
                                                                   "Give a PNG, JPEG")),
    "file that is not a video": Case("--video TMP/notes.txt hi", ("is not a video (unrecognised content)",
                                                                  "MP4/WEBM video")),
    "50 MB image in a variable": Case("--image fifty_mb_png hi", ("'fifty_mb_png' is 50.0 MB, over the 10 MB limit",
                                                                  "Pass a URL instead")),
    "variable that is not an image": Case("--image a_number hi", ("a_number is a int, not an image or video",
                                                                  "Pass bytes, a PIL image")),
    "schema that is a list": Case("--schema schema_list hi", ("--schema schema_list: a list is not a JSON Schema",
                                                              "Give a dict like")),
    "schema as JSON text": Case("--schema schema_text hi", ("a str is not a JSON Schema", "Give a dict like")),
    "schema whose properties are a list": Case("--schema schema_bad_properties hi",
                                               ("'properties' must map each property name", "Fix the dict")),
    "schema whose required is a string": Case("--schema schema_bad_required hi",
                                              ("'required' must be a list of property names", "Fix the dict")),
    "schema that is not JSON": Case("--schema schema_not_json hi", ("it cannot be sent as JSON", "Fix the dict")),
    "pydantic model without a JSON Schema": Case("--schema SchemaOfCallable hi",
                                                 ("pydantic cannot describe it as a JSON Schema",
                                                  "Give its fields JSON types")),
    "schema that does not exist": Case("--schema no_such_schema hi", ("--schema 'no_such_schema': no such variable",
                                                                      "Define a JSON Schema dict")),
    "output name that is not a name": Case("-o 'not a name' hi", ("-o 'not a name' is not a Python name",
                                                                  "use e.g. -o answer")),
    "JSON output with thinking": Case("-f json --thinking hi", ("JSON output cannot be combined with --thinking",
                                                                "Drop --thinking")),
    "prefix that is not text": Case("--prefix a_number hi", ("--prefix 'a_number' is not text",
                                                             "Give the text itself")),
}
ONLY = {  # protocol: cases that only it refuses
    "responses": {
        "token probabilities": Case("--logprobs 3 hi", ("--logprobs is not available with --api responses",
                                                        "Use --api chat")),
        "partial mode": Case("--prefix start hi", ("--prefix (partial mode) is not available with --api responses",
                                                   "Use --api chat or dashscope")),
    },
    "dashscope": {
        "an OpenAI-compatible server": Case("--base-url http://localhost:1/v1 hi",
                                            ("--api dashscope talks to DashScope hosts only", "Drop --base-url")),
    },
}
ODD_NAMES = ["a b/c", "../../etc/passwd", "naïve", "x" * 65, "semi;colon", "tab\tname", "$(whoami)", "😀", ""]


#: Where the protocol could make a difference (what is sent, what the service says): tried on all three.
EVERY_PROTOCOL = {"unknown model", "50 MB variable", "bytes that are not UTF-8", "text that is not UTF-8",
                  "file that is not an image", "50 MB image in a variable", "schema that is a list",
                  "schema whose properties are a list", "pydantic model without a JSON Schema",
                  "prefix that is not text", "zero timeout", "huge max tokens"}


def qwen_cases() -> list:
    """Every case over chat; over responses and dashscope, those where the protocol could matter, and their own."""
    return [pytest.param(api, name, case, id=f"{api}-{name}") for api in APIS
            for name, case in [*QWEN.items(), *ONLY.get(api, {}).items()]
            if api == "chat" or name in EVERY_PROTOCOL or name in ONLY.get(api, {})]


@pytest.fixture
def namespace(ip, tmp_path):
    (tmp_path / "notes.txt").write_text("plain text, not an image")
    assert ip.run_cell(SETUP).success
    return tmp_path


def assert_handled(ip, server, asked, case: Case, sent_prompt=None) -> None:
    """The outcome ``case.how`` promises: one line with everything ``case.says``, and the right traffic."""
    if case.how == "warned":
        assert asked.error is None and asked.value.complete
        notices = [s for s in visible(ip) if s.startswith("⚠ ")]
        assert len(notices) == 1 and "\n" not in notices[0], notices
        line = notices[0]
        (request,) = generation_requests(server)
        assert request.body is not None  # valid JSON reached the server
    else:
        line = asked.error
        assert line and "\n" not in line and "Traceback" not in line, line
        assert len(generation_requests(server)) == (1 if case.how == "by the service" else 0)
        if case.how == "before sending":
            assert ip.display_pub.outputs == []  # nothing but the line
    for part in case.says:
        assert part in line, f"{part!r} not in {line!r}"


@pytest.mark.parametrize("api, name, case", qwen_cases())
def test_bad_input_to_qwen_is_one_line_naming_the_problem_and_the_fix(ip, dashscope, namespace, api, name, case):
    with bad_input_case("%%qwen", f"{api} · {name}") as record:
        record.how = case.how
        if "fifty_mb" in case.line:
            assert ip.run_cell(BIG).success
        line = f"--api {api} -m qwen-plus {case.line.replace('TMP/', f'{namespace}/')}"
        asked = ask(ip, line, case.cell)
        assert_handled(ip, dashscope, asked, case)
        if name == "50 MB variable":
            sent = json.dumps(dashscope.requests[-1].body)
            assert 20_000 < len(sent) < 25_000  # the cut value, not 50 MB


@pytest.mark.parametrize("name", ODD_NAMES, ids=repr)
def test_an_odd_conversation_name_is_one_line_before_sending(ip, dashscope, name):
    with bad_input_case("%%qwen -c", repr(name)):
        asked = ask(ip, f"-c {shlex.quote(name)}", "hi")
        assert asked.error == (f"Conversation name {name!r} is not allowed. Use 1-64 letters, digits, '_', '.' or "
                               "'-', e.g. --chat=notes.")
        shown = ask(ip, f"show {shlex.quote(name)}", magic="qwen_chat")  # %qwen_chat keeps the quotes: IPython's split
        assert shown.error.startswith("Conversation name ") and shown.error.endswith(asked.error.split(" is ", 1)[1])
        assert generation_requests(dashscope) == [] and ip.display_pub.outputs == []


COMPARE = {  # name: (options, cell, what the line says)
    "temperature list out of range": ("-m qwen-plus -t 0,5", "hi", ("temperature 5.0 is out of range", RANGE)),
    "negative max tokens": ("-m qwen-plus,qwen-flash --max-tokens -4", "hi", ("max_tokens -4 is out of range", RANGE)),
    "lists of different lengths": ("-m qwen-plus,qwen-flash -t 0,0.5,1", "hi",
                                   ("The option lists have different lengths", "pass --grid to cross them")),
    "no repeats": ("-m qwen-plus -n 0", "hi", ("-n and --concurrency must be 1 or more",)),
    "zero timeout": ("-m qwen-plus --timeout 0", "hi", ("timeout 0 is out of range", "seconds above 0")),
    "blank cell": ("-m qwen-plus", " \n\t", ("The prompt is empty", "Type a prompt first")),
    "name that does not resolve": ("-m qwen-plus", "{undefined_thing}", ("name 'undefined_thing' is not defined",
                                                                         "Define undefined_thing")),
    "unknown option": ("-m qwen-plus --temprature 1", "hi", ("--temprature", "see %qwen_compare? for the options")),
}


@pytest.mark.parametrize("name", list(COMPARE))
@pytest.mark.parametrize("api", APIS)
def test_bad_input_to_a_comparison_is_one_line_before_any_column_runs(ip, dashscope, api, name):
    with bad_input_case("%%qwen_compare", f"{api} · {name}"):
        options, cell, says = COMPARE[name]
        asked = ask(ip, f"--api {api} {options}", cell, magic="qwen_compare")
        assert asked.error and "\n" not in asked.error, asked.error
        for part in says:
            assert part in asked.error, f"{part!r} not in {asked.error!r}"
        assert generation_requests(dashscope) == [] and ip.display_pub.outputs == []


@pytest.mark.parametrize("api", APIS)
def test_an_unknown_model_in_one_column_is_that_columns_one_line(ip, dashscope, api):
    with bad_input_case("%%qwen_compare", f"{api} · unknown model in a column") as record:
        record.how = "by the service"
        asked = ask(ip, f"--api {api} -m qwen-plus,qwen-nope", "hi", magic="qwen_compare")
        good, bad = asked.value.columns
        assert good.result.complete and bad.result.state == "incomplete"
        assert "\n" not in bad.result.error and "Model 'qwen-nope' is not available" in bad.result.error
        assert "Check the model name" in bad.result.error


PANEL = {  # name: (controls to set, what the line says, how)
    "empty prompt": ({"prompt": ""}, ("The prompt is empty", "Type a prompt first"), "before sending"),
    "seed that is not a number": ({"seed": "abc"}, ("invalid int value: 'abc'", "see %qwen? for the options"),
                                  "before sending"),
    "unknown model": ({"model": "qwen-nope"}, ("Model 'qwen-nope' is not available", "Check the model name"),
                      "by the service"),
}


@pytest.mark.parametrize("name", list(PANEL))
@pytest.mark.parametrize("api", APIS)
def test_bad_input_in_the_panel_is_one_line_in_its_output(ip, dashscope, api, name):
    with bad_input_case("%qwen_panel", f"{api} · {name}") as record:
        controls, says, record.how = PANEL[name]
        ip.run_line_magic("config", f"QwenMagics.api = '{api}'")
        panel = ip.magics_manager.registry["QwenWidgetMagics"].make_panel()
        panel.model.value, panel.prompt.value = "qwen-plus", "hi"
        for control, value in controls.items():
            getattr(panel, control).value = value
        run_panel(panel)
        column = panel.columns[0]
        refused = record.how == "before sending"
        error = column.refusal if refused else column.result.error  # a refused run is not a run
        assert error and "\n" not in error and (refused or column.result.state == "incomplete")
        for part in says:
            assert part in error, f"{part!r} not in {error!r}"
        assert len(generation_requests(dashscope)) == (0 if refused else 1)
        line = column.status.value if refused else panel.output.children[-1].value
        shown = audit_html(line)[1]  # the panel's line, as a reader sees it
        assert all(part in shown for part in says), (says, shown)


def test_in_a_real_kernel_every_bad_input_is_one_line_and_nothing_is_sent(kernel, dashscope, tmp_path):
    (tmp_path / "notes.txt").write_text("plain text, not an image")
    kernel.ok(SETUP + BIG)
    cases = [("chat", name, case) for name, case in QWEN.items()]
    cases += [(api, name, case) for api, only in ONLY.items() for name, case in only.items()]
    for api, name, case in cases:
        with bad_input_case("%%qwen in a kernel", f"{api} · {name}") as record:
            record.how = case.how
            dashscope.reset()
            line = f"--api {api} -m qwen-plus {case.line.replace('TMP/', f'{tmp_path}/')}"
            cell = kernel.run(f"%%qwen {line}\n{case.cell}" if case.cell is not None else f"%qwen {line}")
            if case.how == "warned":
                assert cell.status == "ok"
                (line_shown,) = [s for s in cell.visible if s.startswith("⚠ ")]
            else:
                line_shown = cell.one_error_line()
                assert len(generation_requests(dashscope)) == (1 if case.how == "by the service" else 0)
                if case.how == "before sending":
                    assert not cell.of_type("display_data", "update_display_data"), name
            assert "\n" not in line_shown and all(part in line_shown for part in case.says), (name, line_shown)
    kernel.ok("del fifty_mb, fifty_mb_png")
