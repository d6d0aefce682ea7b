"""--tools: Python functions the model may call, over every protocol, run only when allowed.

The real SDKs talk to the loopback server, which streams tool calls in each
protocol's own shape (chat deltas, Responses function_call items, native
incremental frames) and, after tool outputs, answers with what they returned.
"""

from typing import Literal, Optional

import pytest
from IPython.core.error import UsageError
from jupyter_client.manager import start_new_kernel
from loopback import Script

from conftest import outputs_text
from qwen_magics.tools import tool_from

APIS = ["chat", "responses", "dashscope"]


def get_weather(city: str, unit: Literal["C", "F"] = "C", days: Optional[int] = None) -> dict:
    """Today's weather in a city.

    Args:
        city: the city's name in English
        unit: degrees Celsius or Fahrenheit
    """
    return {"city": city, "temp": 12 if unit == "C" else 54, "sky": "rain"}


def test_a_function_becomes_a_tool_schema_from_its_signature_and_docstring():
    spec = tool_from(get_weather).spec
    assert spec["name"] == "get_weather" and spec["description"] == "Today's weather in a city."
    params = spec["parameters"]
    assert params["required"] == ["city"]
    assert params["properties"]["city"] == {"type": "string", "description": "the city's name in English"}
    assert params["properties"]["unit"] == {"enum": ["C", "F"], "description": "degrees Celsius or Fahrenheit",
                                            "default": "C"}
    assert params["properties"]["days"] == {"type": "integer"}


def tool_outputs(api, body):
    """The tool outputs a follow-up request carries, in the protocol's own shape."""
    if api == "responses":
        return [(i["call_id"], i["output"]) for i in body["input"] if i.get("type") == "function_call_output"]
    messages = body["messages"] if api == "chat" else body["input"]["messages"]
    return [(m["tool_call_id"], m["content"]) for m in messages if m["role"] == "tool"]


@pytest.mark.parametrize("api", APIS)
def test_the_model_calls_a_tool_its_output_goes_back_and_the_answer_uses_it(ip, dashscope, api):
    calls = []
    ip.user_ns["get_weather"] = lambda city, unit="C": calls.append(city) or {"city": city, "temp": 12}
    dashscope.enqueue(Script(tool_calls=[{"name": "get_weather", "arguments": {"city": "Paris"}, "id": "call_1"}]))
    result = ip.run_cell_magic("qwen", f"--api {api} -m qwen-plus --tools get_weather -y",
                               "Should I take an umbrella in Paris?")
    assert calls == ["Paris"]
    first, second = [r.body for r in dashscope.requests]
    tools = first["tools"] if api != "dashscope" else first["parameters"]["tools"]
    assert [t.get("name") or t["function"]["name"] for t in tools] == ["get_weather"]
    assert tool_outputs(api, second) == [("call_1", '{"city": "Paris", "temp": 12}')]
    assert result.text == 'The tools returned: {"city": "Paris", "temp": 12}' and result.complete
    assert [(r.name, r.arguments, r.ran) for r in result.tool_runs] == [("get_weather", '{"city": "Paris"}', True)]
    assert [r.finish_reason for r in result.rounds] == ["tool_calls", "stop"]
    assert result.rounds[-1] is result
    assert result.total_usage.input == sum(r.usage.input for r in result.rounds) > result.usage.input
    shown = outputs_text(ip)
    assert "🔧 asks to call get_weather(city='Paris')" in shown
    assert "🔧 get_weather(city=&#x27;Paris&#x27;) → {&quot;city&quot;: &quot;Paris&quot;" in shown  # html
    assert "🔧 get_weather(city='Paris') → {\"city\": \"Paris\", \"temp\": 12}" in shown  # plain


def test_a_tool_that_raises_tells_the_model_what_went_wrong(ip, dashscope):
    def convert(amount: float, currency: str) -> float:
        raise ValueError(f"unknown currency {currency}")

    ip.user_ns["convert"] = convert
    dashscope.enqueue(Script(tool_calls=[{"name": "convert", "arguments": {"amount": 3, "currency": "XYZ"}}]))
    result = ip.run_cell_magic("qwen", "-m qwen-plus --tools convert -y", "3 XYZ in euros?")
    assert result.tool_runs[0].error == "Error: ValueError: unknown currency XYZ"
    assert result.text == "The tools returned: Error: ValueError: unknown currency XYZ"


def test_several_calls_in_one_answer_all_run_and_all_outputs_go_back(ip, dashscope):
    ip.user_ns["double"] = lambda x: 2 * x
    dashscope.enqueue(Script(tool_calls=[{"name": "double", "arguments": {"x": 2}},
                                         {"name": "double", "arguments": {"x": 5}}]))
    result = ip.run_line_magic("qwen", "-m qwen-plus --tools double -y double 2 and 5")
    assert [r.output for r in result.tool_runs] == ["4", "10"]
    assert result.text == "The tools returned: 4; 10"


def test_a_model_that_keeps_calling_tools_is_stopped_after_the_configured_rounds(ip, dashscope):
    ip.user_ns["ping"] = lambda: "pong"
    ip.run_line_magic("config", "QwenMagics.max_tool_rounds = 2")
    dashscope.enqueue(Script(tool_calls=[{"name": "ping", "arguments": {}}], repeat=10))
    result = ip.run_line_magic("qwen", "-m qwen-plus --tools ping -y ping forever")
    assert len(dashscope.requests) == 3 and len(result.tool_runs) == 2
    assert result.state == "incomplete" and "still calling tools after 2 rounds" in result.error
    assert "max_tool_rounds" in outputs_text(ip)


def test_without_permission_and_no_way_to_ask_nothing_runs_and_one_line_says_how_to_allow(ip, dashscope):
    ran = []
    ip.user_ns["delete_files"] = lambda path: ran.append(path)
    dashscope.enqueue(Script(tool_calls=[{"name": "delete_files", "arguments": {"path": "/"}}]))
    with pytest.raises(UsageError, match=r"The model wants to run delete_files\(path='/'\), but this front end "
                                         r"cannot ask you first\. Allow tool calls with -y"):
        ip.run_line_magic("qwen", "-m qwen-plus --tools delete_files clean up")
    assert ran == [] and len(dashscope.requests) == 1
    assert ip.user_ns["_qwen"].tool_calls[0]["name"] == "delete_files"


def test_run_tools_auto_in_the_config_allows_calls_without_asking(ip, dashscope):
    ip.user_ns["now"] = lambda: "noon"
    ip.run_line_magic("config", "QwenMagics.run_tools = 'auto'")
    dashscope.enqueue(Script(tool_calls=[{"name": "now", "arguments": {}}]))
    assert ip.run_line_magic("qwen", "-m qwen-plus --tools now what time is it").text == "The tools returned: noon"


@pytest.mark.parametrize("setup, line, message", [
    ("", "--tools nope hi", "--tools: no function named 'nope' in the namespace. Define it in a cell first"),
    ("x = 3", "--tools x hi", "--tools: 'x' is a int, not a function. Pass the names of functions"),
    ("def f(*args): pass", "--tools f hi", "--tools: f() takes *args; a tool needs named parameters"),
    ("def f(a): pass", "-m local --tools f hi", "--tools is not available with the local models"),
])
def test_bad_tools_are_refused_in_one_line_before_any_request(ip, dashscope, setup, line, message):
    ip.run_cell(setup)
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)").replace("*", r"\*")):
        ip.run_line_magic("qwen", line)
    assert dashscope.requests == []


@pytest.mark.e2e
def test_in_a_notebook_each_call_waits_for_the_users_yes(dashscope, monkeypatch):
    """A real kernel asks through the front end (input_request); 'n' declines, 'y' runs."""
    monkeypatch.setenv("PYTHONUNBUFFERED", "1")
    km, kc = start_new_kernel(kernel_name="python3")
    try:
        dashscope.enqueue(Script(tool_calls=[{"name": "lookup", "arguments": {"word": "a"}},
                                             {"name": "lookup", "arguments": {"word": "b"}}]))
        code = ("%load_ext qwen_magics\nran = []\ndef lookup(word: str) -> str:\n    ran.append(word)\n"
                "    return word.upper()\n")
        kc.execute_interactive(code, timeout=60)
        prompts = []

        def answer(msg):
            prompts.append(msg["content"]["prompt"])
            kc.input("n" if len(prompts) == 1 else "y")

        kc.execute_interactive("r = %qwen -m qwen-plus --tools lookup look up a and b", allow_stdin=True,
                               stdin_hook=answer, output_hook=lambda msg: None, timeout=60)
        assert prompts == ["Run lookup(word='a')? [y/N] ", "Run lookup(word='b')? [y/N] "]
        seen = []
        kc.execute_interactive("print(ran, [x.ran for x in r.tool_runs], r.text)", timeout=30,
                               output_hook=lambda m: seen.append(m["content"].get("text", "")))
        assert "".join(seen).strip() == ("['b'] [False, True] The tools returned: The user declined to run this "
                                         "tool.; B")
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def test_a_tools_run_logs_every_rounds_tokens_with_every_rounds_cost(ip, dashscope):
    import qwen_magics

    ip.run_line_magic("config", "QwenMagics.prices = {'qwen-plus': [1.0, 2.0]}")
    ip.user_ns["get_weather"] = lambda city: {"city": city, "temp": 12}
    dashscope.enqueue(Script(tool_calls=[{"name": "get_weather", "arguments": {"city": "Paris"}, "id": "call_1"}]))
    result = ip.run_cell_magic("qwen", "-m qwen-plus --tools get_weather -y", "Umbrella in Paris?")
    assert len(result.rounds) == 2 and result.price is not None
    qwen_magics.log().flush(10)
    (record,) = qwen_magics.log().recent(1)
    total = result.total_usage
    assert (record.input_tokens, record.output_tokens) == (total.input, total.output) > (result.usage.input,
                                                                                         result.usage.output)
    price_in, price_out = 1.0, 2.0  # what QwenMagics.prices set, per million tokens
    assert record.cost == pytest.approx((total.input * price_in + total.output * price_out) / 1_000_000)
    per_round = [(r.usage.input * price_in + r.usage.output * price_out) / 1_000_000 for r in result.rounds]
    assert record.cost == pytest.approx(sum(per_round)) == result.cost
