"""The feature notebooks in notebooks/, executed in a real Jupyter kernel against the loopback server.

Each notebook runs top to bottom as a user would run it; what is asserted is
what the executed notebook shows (its saved outputs) and what reached the
server (paths and bodies of the recorded requests).
"""

import base64
import json
import re
from pathlib import Path

import nbformat
import pytest
from loopback import CHAT_PATH, MODELS_PATH, NATIVE_MULTIMODAL_PATH, NATIVE_TEXT_PATH, RESPONSES_PATH, Script
from loopback_protocols import IMAGE_TOKENS
from nbclient import NotebookClient

pytestmark = pytest.mark.e2e
NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


@pytest.fixture
def kernel_env(dashscope, monkeypatch):
    """Kernels started now inherit the loopback URL and the fake key."""
    monkeypatch.setenv("PYTHONUNBUFFERED", "1")
    return dashscope


class Executed:
    """A notebook after execution, with its outputs flattened for assertions."""

    def __init__(self, name, workdir):
        self.nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
        NotebookClient(self.nb, timeout=60, kernel_name="python3",
                       resources={"metadata": {"path": str(workdir)}}).execute()
        self.code = [c for c in self.nb.cells if c.cell_type == "code"]
        self.outputs = [o for c in self.code for o in c.get("outputs", [])]
        self.html = "\n".join(o.get("data", {}).get("text/html", "") for o in self.outputs)
        self.plain = "\n".join(o.get("text", "") + o.get("data", {}).get("text/plain", "") for o in self.outputs)

    def errors(self):
        return [f"{o['ename']}: {o['evalue']}" for o in self.outputs if o.get("output_type") == "error"]

    def shown_by(self, source_start):
        """The plain text of the outputs of the one code cell whose source starts with ``source_start``."""
        cells = [c for c in self.code if c.source.startswith(source_start)]
        assert len(cells) == 1, f"{len(cells)} cells start with {source_start!r}"
        return "".join(o.get("text", "") + o.get("data", {}).get("text/plain", "") for o in cells[0].outputs)


def test_every_feature_notebook_is_saved_clean():
    for name in ("protocols", "multimodal", "structured_output", "tools"):
        nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
        nbformat.validate(nb)
        assert nb.metadata.kernelspec.name == "python3"
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert code[0].source == "%load_ext qwen_magics", name
        assert all(not c.outputs and c.execution_count is None for c in code), f"{name} has stored outputs"


def test_protocols_notebook_compares_chat_responses_and_native(kernel_env, tmp_path):
    run = Executed("protocols", tmp_path)
    assert not run.errors()
    # %qwen_models: the known table next to what the endpoint lists, then a typo check
    assert "<p>8 models listed by singapore; prices: " in run.html and "<td>qwen3.5-plus</td>" in run.html
    assert "'qwen-plsu' is neither known nor listed: did you mean 'qwen-plus'?" in run.plain
    paths = [(r.method, r.path) for r in kernel_env.requests]
    assert paths == [("GET", MODELS_PATH), ("GET", MODELS_PATH), ("POST", CHAT_PATH), ("POST", RESPONSES_PATH),
                     ("POST", NATIVE_TEXT_PATH), ("POST", RESPONSES_PATH)]  # the last one: %config QwenMagics.api
    chat, responses, native, default = [r.body for r in kernel_env.requests[2:]]
    assert (chat["temperature"], chat["seed"]) == (0, 7)
    assert (responses["temperature"], responses["seed"]) == (0, 7)
    assert (native["parameters"]["temperature"], native["parameters"]["seed"]) == (0, 7)
    question = "In one sentence, what is a prime number?"
    assert chat["messages"] == native["input"]["messages"] == [{"role": "user", "content": question}]
    assert responses["input"] == [{"role": "user", "content": question}]
    assert run.html.count(f"<strong>Echo:</strong> {question}") == 3
    table = run.shown_by("runs = ")
    for api in ("chat", "responses", "dashscope"):
        assert re.search(rf"^{api} +{api} +complete finish=stop tokens in/out/reasoning=\d+/\d+/0 ", table, re.M), table
    assert run.shown_by("via_chat.text ==") == "True"
    usages = run.shown_by("{api: (r.usage")
    assert len(set(re.findall(r"\(\d+, \d+\)", usages))) == 1, usages  # equal usage over the three protocols
    assert default["model"] == "qwen-flash" and "<strong>Echo:</strong> Name one famous prime number." in run.html
    assert run.shown_by("_qwen.parameters['protocol']") == "'responses'"


def test_multimodal_notebook_sends_the_image_from_a_variable_and_from_a_file(kernel_env, tmp_path):
    run = Executed("multimodal", tmp_path)
    assert not run.errors()
    png = (tmp_path / "pixels.png").read_bytes()  # written by the notebook in its working directory
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and png[16:24] == b"\x00\x00\x00\x02\x00\x00\x00\x02"  # 2x2
    assert "wrote pixels.png, 75 bytes" in run.plain
    assert any("image/png" in o.get("data", {}) for o in run.outputs)  # the picture itself is shown
    data_url = "data:image/png;base64," + base64.b64encode(png).decode()
    chat, native = kernel_env.requests
    assert chat.path == CHAT_PATH and chat.body["model"] == "qwen3.5-plus"
    assert chat.body["messages"][-1]["content"] == [
        {"type": "text", "text": "This is a 2x2 pixel image. Name the colour of each pixel, row by row."},
        {"type": "image_url", "image_url": {"url": data_url}}]
    assert native.path == NATIVE_MULTIMODAL_PATH and native.body["model"] == "qwen3.5-plus"
    assert native.body["input"]["messages"][-1]["content"] == [{"text": "Describe this picture in one sentence."},
                                                              {"image": data_url}]
    assert chat.body["enable_thinking"] is False and native.body["parameters"]["enable_thinking"] is False
    assert "image_url data:image/png;base64,iVBORw0KGgo" in run.shown_by("for part in _qwen.messages")
    assert "<strong>Echo:</strong> This is a 2x2 pixel image." in run.html
    assert "<strong>Echo:</strong> Describe this picture in one sentence." in run.html
    protocol, tokens = re.fullmatch(r"\('(\w+)', (\d+)\)", run.shown_by("described.parameters")).groups()
    assert protocol == "dashscope" and int(tokens) > IMAGE_TOKENS  # the image's tokens are counted as input


def test_structured_output_notebook_parses_json_schemas_and_continues_a_prefix(kernel_env, tmp_path):
    kernel_env.enqueue(
        Script(),  # -f json: the loopback's JSON-mode answer
        Script(reasoning="", text='{"name": "Sydney", "country": "Australia", "population": 5450000}'),
        Script(reasoning="", text='{"title": "Moby-Dick", "author": "Herman Melville", "year": 1851}'),
        Script(reasoning="", text='    cleaned = s.replace(" ", "").lower()\n    return cleaned == cleaned[::-1]\n'),
    )
    run = Executed("structured_output", tmp_path)
    assert not run.errors()
    assert kernel_env.pending == 0 and [r.path for r in kernel_env.requests] == [CHAT_PATH] * 4
    as_json, city, book, partial = [r.body for r in kernel_env.requests]
    # -f json: JSON mode, no thinking, doubled braces sent as single ones, the answer parsed
    assert as_json["response_format"] == {"type": "json_object"} and as_json["enable_thinking"] is False
    assert 'e.g. {"planets": [{"name": "...", "moons": 0}]}.' in as_json["messages"][-1]["content"]
    assert run.shown_by("planets.data") == "{'answer': 'List the three planets closest to the Su', 'ok': True}"
    # --schema with a dict: sent as a strict json_schema response format, answer parsed
    fmt = city["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["strict"] is True
    assert fmt["json_schema"]["schema"]["required"] == ["name", "country", "population"]
    assert fmt["json_schema"]["schema"]["properties"]["population"] == {"type": "integer"}
    assert run.shown_by('city.data["name"]') == "('Sydney', 5450000)"
    # --schema with a pydantic class: its JSON Schema is sent, result.data is an instance
    fmt = book["response_format"]["json_schema"]
    assert fmt["name"] == "Book" and fmt["schema"]["required"] == ["title", "author", "year"]
    assert fmt["schema"]["properties"]["year"]["description"] == "year of first publication"
    assert run.shown_by("book.data") == "Book(title='Moby-Dick', author='Herman Melville', year=1851)"
    assert run.shown_by("f'{book.data.title}") == "'Moby-Dick by Herman Melville, first published in 1851'"
    # --prefix: the start of the function as a partial assistant message, the continuation printed after it
    start = 'def is_palindrome(s: str) -> bool:\n    """Whether s reads the same backwards, ignoring case and spaces."""\n'
    assert partial["messages"][-2] == {"role": "user", "content": "Write the Python function is_palindrome."}
    assert partial["messages"][-1] == {"role": "assistant", "content": start, "partial": True}
    assert partial["enable_thinking"] is False and "response_format" not in partial
    assert run.shown_by("print(start + body.text)") == (
        start + '    cleaned = s.replace(" ", "").lower()\n    return cleaned == cleaned[::-1]\n\n')


def test_tools_notebook_runs_the_calls_and_the_answer_uses_their_output(kernel_env, tmp_path):
    kernel_env.enqueue(
        Script(tool_calls=[{"name": "get_weather", "arguments": {"city": "Paris"}, "id": "call_paris"}]),
        Script(),  # the answer after the tool output: "The tools returned: ..."
        Script(tool_calls=[{"name": "get_weather", "arguments": {"city": "Oslo"}, "id": "call_oslo"},
                           {"name": "get_weather", "arguments": {"city": "Singapore"}, "id": "call_sg"}]),
    )
    run = Executed("tools", tmp_path)
    assert not run.errors()
    assert kernel_env.pending == 0
    bodies = [r.body for r in kernel_env.requests]
    assert len(bodies) == 4 and [r.path for r in kernel_env.requests] == [CHAT_PATH] * 4
    # The schema shown in the notebook is the one sent
    spec = bodies[0]["tools"][0]["function"]
    assert spec["name"] == "get_weather" and spec["description"] == "Today's weather in a city."
    assert spec["parameters"]["required"] == ["city"]
    assert spec["parameters"]["properties"]["unit"]["enum"] == ["C", "F"]
    assert "'description': \"Today's weather in a city.\"" in run.shown_by("from qwen_magics.tools import")
    # -y: the call ran in the kernel, its output went back, the final answer carries it
    paris = '{"city": "Paris", "temperature": 14, "unit": "C", "sky": "rain"}'
    assert [(m["tool_call_id"], m["content"]) for m in bodies[1]["messages"] if m["role"] == "tool"] == [
        ("call_paris", paris)]
    assert f"The tools returned: {paris}" in run.plain
    assert "🔧 asks to call get_weather(city=&#x27;Paris&#x27;)" in run.html
    assert run.shown_by("r = _qwen") == f"get_weather(city='Paris') -> {paris} (ran)\n"
    rounds = run.shown_by("[(round.finish_reason")
    (_, in1, out1), (_, in2, out2) = re.findall(r"\('(tool_calls|stop)', (\d+), (\d+)\)", rounds)
    assert re.fullmatch(r"\[\('tool_calls', \d+, 0\), \('stop', \d+, \d+\)\]", rounds), rounds
    totals = re.findall(r"Usage\(input=(\d+), output=(\d+),", run.shown_by("r.usage, r.total_usage"))
    assert totals == [(in2, out2), (str(int(in1) + int(in2)), str(int(out1) + int(out2)))]
    # run_tools = 'auto': two calls in one answer run without -y, both outputs go back
    outputs = [m["content"] for m in bodies[3]["messages"] if m["role"] == "tool"]
    assert [json.loads(o)["sky"] for o in outputs] == ["snow", "sun"]
    assert "The tools returned: " + "; ".join(outputs) in run.plain
    assert run.shown_by("[run.call_text()") == "[\"get_weather(city='Oslo')\", \"get_weather(city='Singapore')\"]"
