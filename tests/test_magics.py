"""%%qwen and %qwen in a real IPython shell, against the loopback DashScope server.

The real openai SDK sends every request here over 127.0.0.1; nothing in the
SDK or the magics is patched.
"""

import json

import pytest
from IPython.core.error import UsageError
from loopback import Script

from conftest import FAKE_KEY, interrupt_once_text_arrives, outputs_text, suspended_sdk_generators


def last_body(server):
    return server.requests[-1].body


def test_a_cell_streams_reasoning_then_markdown_and_returns_a_result(ip, dashscope):
    ip.user_ns["topic"] = "entropy"
    result = ip.run_cell_magic("qwen", "-m qwen3.5-plus -t 0.7 --top-p 0.8",
                               "Explain what {topic} means, in three bullet points.")
    body = last_body(dashscope)
    assert body["messages"] == [{"role": "user", "content": "Explain what entropy means, in three bullet points."}]
    assert (body["model"], body["temperature"], body["top_p"]) == ("qwen3.5-plus", 0.7, 0.8)
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert result is ip.user_ns["_qwen"]
    assert str(result) == "**Echo:** Explain what entropy means, in three bullet points.\n\n- first point\n- second point\n\nDone."
    assert result.reasoning.startswith("Let me think about this.")
    assert result.finish_reason == "stop" and result.state == "complete"
    assert result.usage.input > 0 and result.usage.output > 0 and result.usage.reasoning > 0
    assert result.request_id.startswith("chatcmpl-")
    assert 0 < result.ttft <= result.elapsed
    assert result.parameters == {"model": "qwen3.5-plus", "temperature": 0.7, "top_p": 0.8, "stream": True,
                                 "protocol": "chat"}
    shown = outputs_text(ip)
    assert "<summary>Thinking (" in shown and "<li>first point</li>" in shown
    assert "qwen3.5-plus · " in shown and "tok/s" in shown and "first token" in shown


def test_every_sampling_option_is_sent_the_documented_way(ip, dashscope):
    ip.run_line_magic("qwen", "-m qwen-plus -s 'Be terse.' --top-k 20 --seed 7 --max-tokens 300 --stop END "
                              "--stop STOP --thinking --thinking-budget 50 -- What's 2+2?")
    body = last_body(dashscope)
    assert body["messages"][0] == {"role": "system", "content": "Be terse."}
    assert body["messages"][1] == {"role": "user", "content": "What's 2+2?"}
    assert (body["top_k"], body["seed"], body["max_tokens"], body["stop"]) == (20, 7, 300, ["END", "STOP"])
    assert (body["enable_thinking"], body["thinking_budget"]) == (True, 50)
    ip.run_line_magic("qwen", "--no-thinking hi")
    assert last_body(dashscope)["enable_thinking"] is False


def test_help_lists_every_option(ip):
    doc = ip.find_line_magic("qwen").__doc__
    for option in ("--model", "--system", "--temperature", "--top-p", "--top-k", "--seed", "--max-tokens", "--stop",
                   "--thinking", "--no-thinking", "--thinking-budget", "--format", "--out", "--chat", "--region",
                   "--base-url", "--no-stream"):
        assert option in doc
    assert "Ask a Qwen model" in doc


def test_config_sets_defaults_and_per_call_options_do_not_change_them(ip, dashscope):
    ip.run_line_magic("config", "QwenMagics.model = 'qwen-flash'")
    ip.run_line_magic("config", "QwenMagics.temperature = 0.3")
    ip.run_line_magic("qwen", "hi")
    assert (last_body(dashscope)["model"], last_body(dashscope)["temperature"]) == ("qwen-flash", 0.3)
    ip.run_line_magic("qwen", "-m qwen-max -t 1.1 hi")
    assert (last_body(dashscope)["model"], last_body(dashscope)["temperature"]) == ("qwen-max", 1.1)
    magics = ip.magics_manager.registry["QwenMagics"]
    assert (magics.model, magics.temperature) == ("qwen-flash", 0.3)


def test_config_rejects_out_of_range_defaults(ip):
    from traitlets import TraitError

    magics = ip.magics_manager.registry["QwenMagics"]
    with pytest.raises(TraitError, match=r"temperature 2.0 is out of range"):
        magics.temperature = 2.0
    with pytest.raises(TraitError, match=r"Unknown region 'mars'"):
        magics.region = "mars"


def test_out_stores_the_result_and_str_is_the_answer(ip):
    ip.run_line_magic("qwen", "-o answer --no-thinking hello")
    answer = ip.user_ns["answer"]
    assert answer is ip.user_ns["_qwen"] and str(answer).startswith("**Echo:** hello")
    bundle = answer._repr_mimebundle_()
    assert bundle["text/markdown"] == str(answer) and "<strong>Echo:</strong>" in bundle["text/html"]


def test_the_cell_does_not_repeat_the_streamed_answer_but_later_displays_do(ip):
    ip.run_cell("%qwen --no-thinking hello")
    outputs = len(ip.display_pub.outputs)
    ip.run_cell("_qwen")
    assert len(ip.display_pub.outputs) == outputs + 1
    assert "<strong>Echo:</strong> hello" in ip.display_pub.outputs[-1]["data"]["text/html"]


def test_format_code_puts_the_code_into_the_next_cell(ip, dashscope):
    dashscope.enqueue(Script(reasoning="", text="Here:\n\n```python\ndef rev(s):\n    return s[::-1]\n```\n"))
    ip.run_line_magic("qwen", "-f code a function that reverses a string")
    assert ip.rl_next_input == "def rev(s):\n    return s[::-1]"
    assert "code block" in last_body(dashscope)["messages"][0]["content"]


def test_format_json_uses_json_mode_and_parses_the_answer(ip, dashscope):
    result = ip.run_line_magic("qwen", "-f json -m qwen3.5-plus list two colours as json")
    body = last_body(dashscope)
    assert body["response_format"] == {"type": "json_object"} and body["enable_thinking"] is False
    assert result.data == {"answer": "list two colours as json", "ok": True}


def test_a_json_answer_streams_exactly_as_written(ip, dashscope):
    answer = '{"colours": ["red", "blue"],\n "note": "<b>not bold</b>"}'
    dashscope.enqueue(Script(reasoning="", text=answer, chunk_chars=3))
    ip.run_line_magic("qwen", "-f json colours")
    parts = [o["data"] for o in ip.display_pub.outputs]
    assert all("```" not in p["text/plain"] and "```" not in p["text/html"] for p in parts)
    assert parts[-2]["text/plain"] == answer  # the answer's last part, above the footer
    assert "&lt;b&gt;not bold&lt;/b&gt;" in parts[-2]["text/html"]


def test_invalid_json_is_reported_with_the_raw_text_kept(ip, dashscope):
    dashscope.enqueue(Script(reasoning="", text="{not json"))
    with pytest.raises(UsageError, match=r"The answer is not valid JSON .*raw text is kept in _qwen.text"):
        ip.run_line_magic("qwen", "-f json colours")
    assert ip.user_ns["_qwen"].text == "{not json"


def test_format_text_shows_the_answer_as_written(ip, dashscope):
    dashscope.enqueue(Script(reasoning="", text="**not bold** <b>x</b>"))
    ip.run_line_magic("qwen", "-f text hi")
    assert '<pre style="white-space:pre-wrap;margin:0">**not bold** &lt;b&gt;x&lt;/b&gt;</pre>' in outputs_text(ip)


def test_no_stream_waits_for_the_whole_answer(ip, dashscope):
    result = ip.run_line_magic("qwen", "--no-stream -m qwen3.5-plus hi")
    assert last_body(dashscope)["stream"] is False
    assert result.reasoning and result.text.startswith("**Echo:** hi") and result.usage.output > 0


def test_cells_are_independent_without_chat_and_continue_with_it(ip, dashscope):
    ip.run_line_magic("qwen", "--no-thinking first")
    ip.run_line_magic("qwen", "--no-thinking second")
    assert len(last_body(dashscope)["messages"]) == 1
    ip.run_cell_magic("qwen", "-c tutor --no-thinking", "one")
    ip.run_cell_magic("qwen", "-c tutor --no-thinking", "two")
    messages = last_body(dashscope)["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    assert messages[0]["content"] == "one" and messages[1]["content"].startswith("**Echo:** one")
    ip.run_line_magic("qwen", "--chat --no-thinking default chat")  # line mode: bare --chat means "default"
    assert len(last_body(dashscope)["messages"]) == 1


def test_history_is_bounded(ip, dashscope):
    ip.run_line_magic("config", "QwenMagics.history_turns = 2")
    for i in range(4):
        ip.run_cell_magic("qwen", "-c --no-thinking", f"turn {i}")
    contents = [m["content"] for m in last_body(dashscope)["messages"] if m["role"] == "user"]
    assert contents == ["turn 1", "turn 2", "turn 3"]


def test_conversations_can_be_listed_shown_and_reset(ip, capsys):
    ip.run_cell_magic("qwen", "-c notes --no-thinking", "remember 42")
    ip.run_line_magic("qwen_chat", "")
    assert "notes: 1 turn(s)" in capsys.readouterr().out
    ip.run_line_magic("qwen_chat", "show notes")
    assert "remember 42" in outputs_text(ip)
    ip.run_line_magic("qwen_chat", "reset notes")
    with pytest.raises(UsageError, match="No conversation 'notes'"):
        ip.run_line_magic("qwen_chat", "show notes")
    with pytest.raises(UsageError, match="Conversation name 'a b/c' is not allowed"):
        ip.run_cell_magic("qwen", "-c 'a b/c'", "hi")


@pytest.mark.parametrize("line, message", [
    ("-t 2 hi", "temperature 2.0 is out of range. Use a value in [0, 2)"),
    ("--top-p 0 hi", "top_p 0.0 is out of range. Use a value in (0, 1]"),
    ("--max-tokens -5 hi", "max_tokens -5 is out of range"),
    ("--max-tokens 99999999 hi", "max_tokens 99999999 is out of range"),
    ("--bogus hi", "Unknown option --bogus"),
    ("-t warm hi", "invalid float value: 'warm'"),
    ("", "The prompt is empty"),
    ("{nope} hi", "name 'nope' is not defined"),
    ("--region mars hi", "Unknown region 'mars'"),
    ("-o 'not a name' hi", "is not a Python name"),
    ("-f json --thinking hi", "JSON output cannot be combined with --thinking"),
])
def test_bad_input_is_one_line_before_any_request(ip, dashscope, line, message):
    with pytest.raises(UsageError) as err:
        ip.run_line_magic("qwen", line)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert dashscope.requests == []


def test_a_model_studio_model_without_a_key_says_how_to_set_it_and_offers_offline(ip, dashscope, monkeypatch):
    monkeypatch.delenv("DASHSCOPE_API_KEY")
    with pytest.raises(UsageError, match=r"No API key: DASHSCOPE_API_KEY is not set.*region-specific.*-m local"):
        ip.run_line_magic("qwen", "-m qwen3.5-plus hi")
    ip.run_line_magic("config", "QwenMagics.model = 'qwen-max'")  # a configured model is a named model too
    with pytest.raises(UsageError, match=r"No API key"):
        ip.run_line_magic("qwen", "hi")
    assert dashscope.requests == []


def test_base_url_reaches_any_openai_compatible_server_without_a_key(ip, dashscope, monkeypatch):
    monkeypatch.delenv("DASHSCOPE_API_KEY")
    dashscope.valid_keys.add("no-key-needed")
    try:
        result = ip.run_line_magic("qwen", f"--base-url {dashscope.url}/compatible-mode/v1 -m qwen-plus hi")
    finally:
        dashscope.valid_keys.discard("no-key-needed")
    assert result.complete and dashscope.requests[-1].path == "/compatible-mode/v1/chat/completions"


@pytest.mark.parametrize("script, message", [
    (Script(status=500, repeat=3), "server error (500 internal_error) after 2 retries"),
    (Script(status=429, retry_after="0", repeat=3), "Rate limited (429 limit_requests) after 2 retries"),
    (Script(status=429, error_code="insufficient_quota", retry_after="0", repeat=3), "no quota left"),
    (Script(status=403, error_code="access_denied"), "Access to 'qwen-plus' was denied"),
])
def test_service_errors_are_one_clear_line(ip, dashscope, script, message):
    ip.run_line_magic("config", "QwenMagics.max_retries = 2")
    dashscope.enqueue(script)
    with pytest.raises(UsageError) as err:
        ip.run_line_magic("qwen", "-m qwen-plus hi")
    assert message in str(err.value) and "\n" not in str(err.value)


def test_rate_limits_are_retried_honouring_retry_after_then_succeed(ip, dashscope):
    dashscope.enqueue(Script(status=429, retry_after="1", repeat=2))
    result = ip.run_line_magic("qwen", "--no-thinking hi")
    assert result.complete and len(dashscope.requests) == 3
    gaps = [b.started - a.started for a, b in zip(dashscope.requests, dashscope.requests[1:])]
    assert all(gap >= 0.9 for gap in gaps), gaps


def test_rejected_key_unknown_model_and_moderation(ip, dashscope, monkeypatch):
    with pytest.raises(UsageError, match=r"Model 'qwen-nope' is not available in singapore \(404 model_not_found\)"):
        ip.run_line_magic("qwen", "-m qwen-nope hi")
    with pytest.raises(UsageError, match=r"Content moderation refused the input \(400 data_inspection_failed\)"):
        ip.run_line_magic("qwen", "tell me [[blocked]]")
    monkeypatch.setenv("DASHSCOPE_API_KEY", "sk-wrong-key-123456")
    with pytest.raises(UsageError, match=r"API key was rejected by the singapore region \(401 invalid_api_key\).*--region"):
        ip.run_line_magic("qwen", "hi")


@pytest.mark.parametrize("fault, message", [
    ("cut", "The stream ended without a finish reason"),
    ("reset", "The connection dropped in the middle of the answer"),
    ("moderation_mid", "Content moderation refused the answer"),
    ("malformed", "malformed stream event"),
])
def test_a_failure_mid_stream_keeps_what_streamed_and_marks_it_incomplete(ip, dashscope, fault, message):
    dashscope.enqueue(Script(reasoning="", text="alpha beta gamma delta epsilon", chunk_chars=6,
                             fault=fault, fault_after=2))
    with pytest.raises(UsageError, match=message):
        ip.run_line_magic("qwen", "-m qwen-plus hi")
    result = ip.user_ns["_qwen"]
    assert result.state == "incomplete" and result.text == "alpha beta g" and message in result.error
    shown = [o["data"]["text/plain"] for o in ip.display_pub.outputs]
    assert "alpha beta g" in shown and shown[-1].endswith(" · incomplete")  # the error is the cell's one line
    assert result.error not in "\n".join(shown)


def test_a_run_refused_before_any_output_is_its_one_error_line_with_no_footer(ip, dashscope, capsys):
    with pytest.raises(UsageError, match=r"Model 'qwen-nope' is not available"):
        ip.run_line_magic("qwen", "-m qwen-nope hi")
    assert ip.display_pub.outputs == [] and ip.user_ns["_qwen"].state == "incomplete"
    ip.run_line_magic("config", "QwenMagics.display_mode = 'terminal'")
    with pytest.raises(UsageError, match=r"Model 'qwen-nope' is not available"):
        ip.run_line_magic("qwen", "-m qwen-nope hi")
    assert capsys.readouterr().out == ""


def test_a_stalled_stream_times_out_with_the_partial_answer(ip, dashscope):
    dashscope.enqueue(Script(reasoning="", text="one two three", fault="stall", fault_after=1, stall_seconds=3))
    with pytest.raises(UsageError, match=r"No answer from singapore within 0.5 s"):
        ip.run_line_magic("qwen", "--timeout 0.5 -m qwen-plus hi")
    assert ip.user_ns["_qwen"].text == "one " and ip.user_ns["_qwen"].state == "incomplete"


def test_ctrl_c_stops_the_stream_and_keeps_the_partial_answer(ip, dashscope):
    dashscope.enqueue(Script(reasoning="", text="x" * 400, chunk_chars=4, chunk_delay=0.02))
    interrupt_once_text_arrives(ip)
    with pytest.raises(UsageError, match="Stopped by user: the partial answer is kept in _qwen"):
        ip.run_line_magic("qwen", "-m qwen-plus hi")
    result = ip.user_ns["_qwen"]
    assert result.state == "stopped" and 0 < len(result.text) < 400
    footer = ip.display_pub.outputs[-1]["data"]["text/plain"]
    assert footer.endswith(" · stopped") and "stopped by user" not in footer.lower()  # said once, by the error
    assert suspended_sdk_generators() == []  # the SDK's stream was closed, not left to the garbage collector
    assert ip.run_line_magic("qwen", "--no-thinking again").complete  # the shell stays usable


def test_the_key_never_appears_in_outputs_errors_or_reprs(ip, dashscope, monkeypatch):
    seen = []
    for line in ("hi", "-m qwen-nope hi", "-t 5 hi"):
        try:
            seen.append(repr(ip.run_line_magic("qwen", line)))
        except UsageError as err:
            seen.append(str(err) + repr(err.__cause__) + str(err.__cause__))
    monkeypatch.setenv("DASHSCOPE_API_KEY", "sk-wrong-key-123456")
    with pytest.raises(UsageError) as err:
        ip.run_line_magic("qwen", "hi")
    seen.append(str(err.value))
    seen.append(json.dumps([o["data"] for o in ip.display_pub.outputs]))
    seen.append(repr(ip.user_ns["_qwen"]) + repr(ip.user_ns["_qwen"].parameters))
    blob = "\n".join(seen)
    assert FAKE_KEY not in blob and "sk-wrong-key-123456" not in blob and "0123456789abcdef" not in blob


def test_logprobs_are_asked_for_kept_per_token_and_shown_tinted(ip, dashscope):
    result = ip.run_line_magic("qwen", "--no-thinking --logprobs 3 -m qwen-plus hi")
    body = last_body(dashscope)
    assert (body["logprobs"], body["top_logprobs"]) == (True, 3)
    assert "".join(e.token for e in result.logprobs) == result.text
    assert all(len(e.top) == 3 and e.top[0][0] == e.token and e.logprob <= 0 for e in result.logprobs)
    view = [o["data"]["text/html"] for o in ip.display_pub.outputs if "Token probabilities" in o["data"]["text/html"]]
    assert len(view) == 1 and view[0].count("<span title=\"model probability ") == len(result.logprobs)
    ip.run_line_magic("qwen_probs", "")
    assert "application/vnd.jupyter.widget-view+json" in ip.display_pub.outputs[-1]["data"]


def test_probs_needs_a_result_with_logprobs(ip):
    ip.run_line_magic("qwen", "--no-thinking hi")
    with pytest.raises(UsageError, match=r"no token probabilities: run the cell again with --logprobs 5"):
        ip.run_line_magic("qwen_probs", "")
    with pytest.raises(UsageError, match=r"No result or logged run named 'nothing'"):
        ip.run_line_magic("qwen_probs", "nothing")
    with pytest.raises(UsageError, match=r"logprobs 50 is out of range"):
        ip.run_line_magic("qwen", "--logprobs 50 hi")


def test_html_in_a_live_answer_is_shown_as_text_not_run(ip, dashscope):
    dashscope.enqueue(Script(reasoning="<script>steal()</script>",
                             text='<script>alert(1)</script> <img src=x onerror=alert(2)> [go](javascript:alert(3))'))
    ip.run_line_magic("qwen", "-m qwen3.5-plus hi")
    html = "".join(o["data"].get("text/html", "") for o in ip.display_pub.outputs)
    assert "<script" not in html and "<img" not in html and 'href="javascript' not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "&lt;script&gt;steal()" in html
    assert "<script" not in ip.user_ns["_qwen"]._repr_mimebundle_()["text/html"]
