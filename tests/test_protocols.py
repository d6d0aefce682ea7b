"""--api chat | responses | dashscope: the same streamed experience, result and errors over each protocol.

The real openai SDK (Chat Completions, Responses) and the real dashscope SDK
(AioGeneration, AioMultiModalConversation) talk to the loopback server.
"""

import gc
import warnings

import pytest
from IPython.core.error import UsageError
from conftest import suspended_sdk_generators
from loopback import Script

APIS = ["chat", "responses", "dashscope"]
PATHS = {"chat": "/compatible-mode/v1/chat/completions",
         "responses": "/api/v2/apps/protocols/compatible-mode/v1/responses",
         "dashscope": "/api/v1/services/aigc/multimodal-generation/generation"}


def test_the_three_protocols_give_equal_results(ip, dashscope):
    results = {}
    for api in APIS:
        results[api] = ip.run_line_magic("qwen", f"--api {api} -m qwen3.5-plus -t 0.5 --top-p 0.9 Explain entropy")
        assert dashscope.requests[-1].path == PATHS[api]
    chat = results["chat"]
    assert chat.reasoning and chat.text.startswith("**Echo:** Explain entropy")
    for api in ("responses", "dashscope"):
        other = results[api]
        assert (other.text, other.reasoning, other.finish_reason, other.state) == \
            (chat.text, chat.reasoning, chat.finish_reason, chat.state), api
        assert (other.usage.input, other.usage.output, other.usage.reasoning) == \
            (chat.usage.input, chat.usage.output, chat.usage.reasoning), api
        assert other.request_id and other.parameters["protocol"] == api


def test_settings_travel_the_documented_way_on_each_protocol(ip, dashscope):
    ip.run_line_magic("qwen", "--api responses -m qwen-plus -s 'Be terse.' -t 0.3 --max-tokens 50 --thinking hi")
    body = dashscope.requests[-1].body
    assert body["instructions"] == "Be terse." and body["input"] == [{"role": "user", "content": "hi"}]
    assert (body["temperature"], body["max_output_tokens"], body["enable_thinking"]) == (0.3, 50, True)
    ip.run_line_magic("qwen", "--api dashscope -m qwen-plus -t 0.3 --top-k 5 --seed 2 --max-tokens 50 hi")
    record = dashscope.requests[-1]
    params = record.body["parameters"]
    assert record.path == "/api/v1/services/aigc/text-generation/generation"
    assert record.headers.get("x-dashscope-sse") == "enable"
    assert (params["result_format"], params["incremental_output"]) == ("message", True)
    assert (params["temperature"], params["top_k"], params["seed"], params["max_tokens"]) == (0.3, 5, 2, 50)
    assert record.body["input"]["messages"] == [{"role": "user", "content": "hi"}]


def test_qwen35_goes_to_the_multimodal_endpoint_on_the_native_protocol(ip, dashscope):
    ip.run_line_magic("qwen", "--api dashscope -m qwen3.5-flash hi")
    record = dashscope.requests[-1]
    assert record.path == PATHS["dashscope"]
    assert record.body["input"]["messages"] == [{"role": "user", "content": [{"text": "hi"}]}]


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("line, script, message", [
    ("-m qwen-nope hi", None, "Model 'qwen-nope' is not available in singapore (404"),
    ("-m qwen-plus tell me [[blocked]]", None, "Content moderation refused the input (400"),
    ("-m qwen-plus hi", Script(status=500, repeat=3), "server error (500"),
])
def test_service_errors_read_the_same_on_every_protocol(ip, dashscope, api, line, script, message):
    ip.run_line_magic("config", "QwenMagics.max_retries = 0")
    if script:
        dashscope.enqueue(script)
    with pytest.raises(UsageError) as err:
        ip.run_line_magic("qwen", f"--api {api} {line}")
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("api", APIS)
def test_a_rejected_key_names_the_region_on_every_protocol(ip, dashscope, monkeypatch, api):
    monkeypatch.setenv("DASHSCOPE_API_KEY", "sk-wrong-key-123456")
    with pytest.raises(UsageError, match=r"API key was rejected by the singapore region \(401") as err:
        ip.run_line_magic("qwen", f"--api {api} -m qwen-plus hi")
    assert "sk-wrong-key-123456" not in str(err.value)


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("fault, message", [("cut", "ended"), ("moderation_mid", "Content moderation refused")])
def test_a_stream_that_fails_midway_keeps_its_partial_answer(ip, dashscope, api, fault, message):
    dashscope.enqueue(Script(reasoning="", text="alpha beta gamma delta epsilon", chunk_chars=6, fault=fault,
                             fault_after=2))
    with pytest.raises(UsageError, match=message):
        ip.run_line_magic("qwen", f"--api {api} -m qwen-plus hi")
    result = ip.user_ns["_qwen"]
    assert result.state == "incomplete" and result.text == "alpha beta g"


def test_the_native_sdk_leaves_no_unclosed_sessions(ip, dashscope, caplog):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            ip.run_line_magic("qwen", "--api dashscope -m qwen-plus hi")
        dashscope.enqueue(Script(reasoning="", text="abcdefgh", fault="cut", fault_after=1))
        with pytest.raises(UsageError):
            ip.run_line_magic("qwen", "--api dashscope -m qwen-plus hi")
        gc.collect()
    assert not [w for w in caught if "Unclosed" in str(w.message)]
    assert "Unclosed" not in caplog.text


def test_bad_combinations_are_refused_before_sending(ip, dashscope):
    with pytest.raises(UsageError, match="--logprobs is not available with --api responses"):
        ip.run_line_magic("qwen", "--api responses --logprobs 3 hi")
    with pytest.raises(UsageError, match="--api dashscope talks to DashScope hosts only"):
        ip.run_line_magic("qwen", "--api dashscope --base-url http://localhost:1/v1 hi")
    assert dashscope.requests == []


def test_a_config_default_picks_the_protocol(ip, dashscope):
    ip.run_line_magic("config", "QwenMagics.api = 'responses'")
    ip.run_line_magic("qwen", "-m qwen-plus hi")
    assert dashscope.requests[-1].path == PATHS["responses"]


@pytest.mark.parametrize("api", ["chat", "dashscope"])
def test_prefix_continues_an_assistant_message_in_partial_mode(ip, dashscope, api):
    ip.user_ns["start"] = "def fib(n):\n"
    ip.run_line_magic("qwen", f"--api {api} -m qwen-plus --prefix start complete the function")
    body = dashscope.requests[-1].body
    messages = body["messages"] if api == "chat" else body["input"]["messages"]
    assert messages[-1] == {"role": "assistant", "content": "def fib(n):\n", "partial": True}
    assert messages[-2] == {"role": "user", "content": "complete the function"}
    thinking = body.get("enable_thinking", body.get("parameters", {}).get("enable_thinking"))
    assert thinking is False  # partial mode is documented for non-thinking mode only
    with pytest.raises(UsageError, match="not available with --api responses"):
        ip.run_line_magic("qwen", "--api responses --prefix start go")
    with pytest.raises(UsageError, match="cannot be combined with --thinking"):
        ip.run_line_magic("qwen", "--thinking --prefix start go")


PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32


def test_images_travel_in_each_protocols_own_shape(ip, dashscope, tmp_path):
    path = tmp_path / "cat.png"
    path.write_bytes(PNG)
    ip.user_ns["raw"] = PNG
    ip.run_line_magic("qwen", f"--api chat -m qwen3.5-plus --image {path} --image raw --image https://x/y.jpg what is it")
    content = dashscope.requests[-1].body["messages"][-1]["content"]
    assert content[0] == {"type": "text", "text": "what is it"}
    assert [p["image_url"]["url"][:22] for p in content[1:3]] == ["data:image/png;base64,"] * 2
    assert content[3] == {"type": "image_url", "image_url": {"url": "https://x/y.jpg"}}
    ip.run_line_magic("qwen", "--api dashscope -m qwen3.5-flash --image https://x/y.jpg --video https://x/v.mp4 what")
    record = dashscope.requests[-1]
    assert record.path == PATHS["dashscope"]
    assert record.body["input"]["messages"][-1]["content"] == [{"text": "what"}, {"image": "https://x/y.jpg"},
                                                                {"video": "https://x/v.mp4"}]
    ip.run_line_magic("qwen", "--api responses -m qwen3.5-plus --image https://x/y.jpg what")
    assert dashscope.requests[-1].body["input"][-1]["content"] == [
        {"type": "input_text", "text": "what"}, {"type": "input_image", "image_url": "https://x/y.jpg"}]


@pytest.mark.parametrize("option, message", [
    ("--image /no/such.png", "--image '/no/such.png': no such file or variable"),
    ("--image notes", "is not an image (unrecognised content)"),
    ("--image number", "number is a int, not an image or video"),
])
def test_bad_media_is_one_line_before_sending(ip, dashscope, tmp_path, option, message):
    (tmp_path / "notes").write_text("plain text")
    ip.user_ns["number"] = 3
    ip.run_line_magic("cd", str(tmp_path))
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ip.run_line_magic("qwen", f"{option} what")
    assert dashscope.requests == []


def test_a_schema_asks_for_constrained_json_and_validates_the_answer(ip, dashscope):
    from pydantic import BaseModel

    class City(BaseModel):
        name: str
        population: int

    ip.user_ns["City"] = City
    dashscope.enqueue(Script(reasoning="", text='{"name": "Lyon", "population": 522000}'))
    result = ip.run_line_magic("qwen", "-m qwen3.5-plus --schema City a French city as JSON")
    body = dashscope.requests[-1].body
    assert body["response_format"]["type"] == "json_schema" and body["enable_thinking"] is False
    assert body["messages"][0]["role"] == "system" and "JSON" in body["messages"][0]["content"]  # as -f json
    assert body["response_format"]["json_schema"]["schema"]["properties"]["population"] == \
        {"title": "Population", "type": "integer"}
    assert result.data == City(name="Lyon", population=522000)
    dashscope.enqueue(Script(reasoning="", text='{"name": "Lyon"}'))
    with pytest.raises(UsageError, match="The answer does not match City"):
        ip.run_line_magic("qwen", "-m qwen-plus --schema City a French city")
    assert ip.user_ns["_qwen"].data == {"name": "Lyon"} and ip.user_ns["_qwen"].text == '{"name": "Lyon"}'


@pytest.mark.parametrize("api", ["responses", "dashscope"])
def test_a_schema_dict_travels_in_each_protocols_shape(ip, dashscope, api):
    ip.user_ns["colour"] = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}
    dashscope.enqueue(Script(reasoning="", text='{"name": "teal"}'))
    result = ip.run_line_magic("qwen", f"--api {api} -m qwen-plus --schema colour a colour")
    body = dashscope.requests[-1].body
    if api == "responses":
        assert body["text"]["format"]["type"] == "json_schema" and body["text"]["format"]["schema"] == ip.user_ns["colour"]
    else:
        assert body["parameters"]["response_format"]["json_schema"]["schema"] == ip.user_ns["colour"]
    assert result.data == {"name": "teal"}


def test_a_malformed_schema_is_refused_before_sending(ip, dashscope):
    ip.user_ns["bad"] = ["not", "a", "schema"]
    with pytest.raises(UsageError, match="--schema bad: a list is not a JSON Schema"):
        ip.run_line_magic("qwen", "--schema bad hi")
    with pytest.raises(UsageError, match="--schema 'missing': no such variable"):
        ip.run_line_magic("qwen", "--schema missing hi")
    assert dashscope.requests == []


def test_no_unclosed_session_warning_when_the_kernel_exits(dashscope):
    import subprocess
    import sys

    code = ("from IPython.core.interactiveshell import InteractiveShell\n"
            "ip = InteractiveShell.instance(); ip.run_line_magic('load_ext', 'qwen_magics')\n"
            "ip.run_line_magic('qwen', '--api dashscope -m qwen-plus hi')\n")
    done = subprocess.run([sys.executable, "-X", "dev", "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "Echo:** hi" in done.stdout and "Unclosed" not in done.stderr


@pytest.mark.parametrize("api", APIS)
def test_a_request_always_rate_limited_is_sent_max_retries_plus_one_times_as_far_apart_as_told(ip, dashscope, api):
    """One retry policy for every protocol: the SDK's retries are off, the package's honour Retry-After."""
    dashscope.enqueue(Script(status=429, retry_after="1", repeat=10))
    with pytest.raises(UsageError) as caught:
        ip.run_line_magic("qwen", f"--api {api} -m qwen-plus hi")
    sent = [r for r in dashscope.requests if r.method == "POST"]
    assert len(sent) == 3  # the default max_retries, 2
    assert all(later.started - earlier.started >= 0.95 for earlier, later in zip(sent, sent[1:]))
    assert str(caught.value).startswith("Rate limited (429 ") and " after 2 retries" in str(caught.value)


@pytest.mark.parametrize("api, claim", [("chat", " after 1 retry"), ("dashscope", " after 1 retry")])
def test_an_unreachable_host_is_one_line_that_says_how_often_it_was_tried(ip, dashscope, monkeypatch, api, claim):
    """The openai SDK retries a refused connection; the native backend does the same itself."""
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("QWEN_MAGICS_DASHSCOPE_URL", f"http://127.0.0.1:{port}")
    ip.run_line_magic("config", "QwenMagics.max_retries = 1")
    with pytest.raises(UsageError) as caught:
        ip.run_line_magic("qwen", f"--api {api} -m qwen-plus hi")
    first = str(caught.value).split(". ")[0]
    assert first.startswith(f"Could not reach http://127.0.0.1:{port}/") and first.endswith(f"v1{claim}")


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("fault", ["malformed", "moderation_mid"])
def test_a_stream_that_fails_in_the_sdk_closes_the_sdks_generators_at_once(ip, dashscope, api, fault):
    # Held by the error (which IPython and pytest keep), they were finalised together by a later garbage
    # collection, out of order: "Exception ignored ... async generator already executing" under another cell.
    dashscope.enqueue(Script(reasoning="", text="alpha beta gamma delta epsilon", chunk_chars=6, fault=fault,
                             fault_after=2))
    with pytest.raises(UsageError) as held:
        ip.run_line_magic("qwen", f"--api {api} -m qwen-plus hi")
    assert held.value and suspended_sdk_generators() == []
