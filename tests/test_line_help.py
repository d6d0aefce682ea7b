"""``%qwen What is a Python list?`` sends its question (trailing ``?`` included); ``%qwen?`` is still help.

Checked in an InteractiveShell, in a real Jupyter kernel (the extension loaded in
one cell, used in the next) and in the terminal IPython, against the loopback server.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from jupyter_client.manager import start_new_kernel

from conftest import FAKE_KEY, outputs_text
from test_e2e import run


def prompts(server) -> list[str]:
    return [r.body["messages"][-1]["content"] for r in server.requests if r.path.endswith("/chat/completions")]


@pytest.mark.parametrize("line, prompt", [
    ("%qwen What is a Python list?", "What is a Python list?"),
    ("%qwen What's a list?", "What's a list?"),
    ("%qwen -m qwen-flash What is recursion??", "What is recursion??"),
    ("answer = %qwen Why is the sky blue?", "Why is the sky blue?"),
])
def test_a_question_mark_line_is_sent_to_the_model(ip, dashscope, line, prompt):
    result = ip.run_cell(line)
    assert result.error_in_exec is None and result.error_before_exec is None
    assert prompts(dashscope) == [prompt]
    assert "Echo:</strong> " + prompt in outputs_text(ip)


def test_each_question_of_a_cell_is_sent_in_order_and_other_lines_run(ip, dashscope):
    ip.run_cell("topic = 'recursion'\n%qwen What is {topic} exactly?\nafter = 1\n"
                "for n in (1, 2):\n    %qwen Why {n} times?\n")
    assert prompts(dashscope) == ["What is recursion exactly?", "Why 1 times?", "Why 2 times?"]
    assert ip.user_ns["after"] == 1


def test_help_requests_and_strings_are_left_to_ipython(ip):
    assert ip.transform_cell("%qwen?") == "get_ipython().run_line_magic('pinfo', '%qwen')\n"
    assert ip.transform_cell("%qwen??") == "get_ipython().run_line_magic('pinfo2', '%qwen')\n"
    assert ip.transform_cell("%qwen_chat?") == "get_ipython().run_line_magic('pinfo', '%qwen_chat')\n"
    assert ip.transform_cell("%%qwen\nWhat is X?") == "get_ipython().run_cell_magic('qwen', '', 'What is X?\\n')\n"
    inside_a_string = "s = '''\n%qwen What?\n'''\n"
    assert ip.transform_cell(inside_a_string) == inside_a_string


def test_loading_twice_keeps_one_transformer(ip):
    ip.run_line_magic("reload_ext", "qwen_magics")
    ip.run_line_magic("load_ext", "qwen_magics")
    names = [getattr(f, "__qualname__", None) for f in ip.input_transformers_cleanup]
    assert names.count("keep_questions") == 1


@pytest.fixture
def quiet_home(tmp_path, monkeypatch):
    """Kernels and terminal shells keep their files (connection files, profiles) in tmp_path."""
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    monkeypatch.setenv("PYTHONUNBUFFERED", "1")
    return tmp_path


@pytest.mark.e2e
def test_in_a_kernel_the_question_reaches_the_model_and_help_still_shows(dashscope, quiet_home):
    km, kc = start_new_kernel(kernel_name="python3")
    try:
        run(kc, "%load_ext qwen_magics")
        reply, messages = run(kc, "%qwen What is a Python list?")
        assert reply["content"]["status"] == "ok"
        assert prompts(dashscope) == ["What is a Python list?"]
        shown = "\n".join(str(m["content"]) for _, m in messages)
        assert "Echo:</strong> What is a Python list?" in shown
        assert "mutable sequence" not in shown  # list's docstring

        reply, messages = run(kc, "%qwen What is recursion?")
        assert prompts(dashscope)[-1] == "What is recursion?"
        assert "not found" not in "\n".join(str(m["content"]) for _, m in messages)

        reply, _ = run(kc, "%qwen?")
        helps = [p["data"]["text/plain"] for p in reply["content"]["payload"] if p.get("source") == "page"]
        assert helps and "Ask a Qwen model" in helps[0]
        assert len(prompts(dashscope)) == 2
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


@pytest.mark.e2e
def test_in_the_terminal_the_question_reaches_the_model(dashscope, quiet_home):
    env = dict(os.environ, QWEN_MAGICS_DASHSCOPE_URL=dashscope.url, DASHSCOPE_API_KEY=FAKE_KEY)
    typed = "%load_ext qwen_magics\n%qwen What is recursion?\n%qwen?\nexit\n"
    done = subprocess.run([sys.executable, "-m", "IPython", "--simple-prompt", "--no-banner", "--colors=NoColor",
                           "--HistoryManager.enabled=False"], input=typed, capture_output=True, text=True,
                          env=env, cwd=quiet_home, timeout=120)
    assert prompts(dashscope) == ["What is recursion?"]
    assert "Echo: What is recursion?" in done.stdout or "**Echo:** What is recursion?" in done.stdout
    assert "not found" not in done.stdout + done.stderr
    assert "Ask a Qwen model" in done.stdout
