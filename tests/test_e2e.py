"""End to end: notebooks and cells executed in a real Jupyter kernel, against the loopback server.

What is asserted is what the notebook receives over the kernel's iopub
channel: the same messages JupyterLab would render.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
from jupyter_client.manager import start_new_kernel
from loopback import Script
from nbclient import NotebookClient
from parts import ipylab_missing, require

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def kernel_env(dashscope, monkeypatch):
    """Kernels started now inherit the loopback URL and the fake key."""
    monkeypatch.setenv("PYTHONUNBUFFERED", "1")
    return dashscope


@pytest.fixture
def kernel(kernel_env):
    km, kc = start_new_kernel(kernel_name="python3")
    run(kc, "%load_ext qwen_magics")
    yield km, kc
    kc.stop_channels()
    km.shutdown_kernel(now=True)


def run(kc, code, timeout=60):
    """Execute code; return (reply, [(arrival time, iopub message)]) for this execution."""
    msg_id = kc.execute(code)
    messages, deadline = [], time.monotonic() + timeout
    while True:
        msg = kc.get_iopub_msg(timeout=max(0.1, deadline - time.monotonic()))
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        messages.append((time.monotonic(), msg))
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            break
    return reply_to(kc, msg_id, timeout), messages


def reply_to(kc, msg_id, timeout=30):
    """The shell reply to msg_id (skipping stray replies, e.g. extra kernel_info replies from start-up)."""
    while True:
        reply = kc.get_shell_msg(timeout=timeout)
        if reply["parent_header"].get("msg_id") == msg_id:
            return reply


def displays(messages):
    return [m for _, m in messages if m["msg_type"] in ("display_data", "update_display_data")]


def test_quickstart_notebook_runs_and_shows_streamed_answers(kernel_env, tmp_path):
    nb = nbformat.read(ROOT / "notebooks" / "quickstart.ipynb", as_version=4)
    NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    html = "\n".join(o.get("data", {}).get("text/html", "") for c in nb.cells if c.cell_type == "code"
                     for o in c.get("outputs", []))
    plain = "\n".join(o.get("text", "") + o.get("data", {}).get("text/plain", "") for c in nb.cells
                      if c.cell_type == "code" for o in c.get("outputs", []))
    assert not [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert "<summary>Thinking (" in html  # reasoning, collapsed after the answer started
    assert "<strong>Echo:</strong> Explain what entropy means, in three bullet points." in html
    assert "qwen3.5-plus · " in plain and "tok/s" in plain  # the footer
    assert "qwen3.5-plus complete stop" in plain  # the stored result
    assert "{'answer': 'List three primary colours as JSON" in plain  # -f json parsed into result.data
    nbformat.validate(nb)


def test_updates_stream_before_the_cell_ends(kernel):
    km, kc = kernel
    reply, messages = run(kc, "%%qwen -m qwen-plus\n[[long:600]]")  # 600 words, paced below
    assert reply["content"]["status"] == "ok"
    shown = displays(messages)
    assert len(shown) >= 3
    # The last visible text is the whole answer, and a footer follows it.
    assert shown[-1]["content"]["data"]["text/plain"].startswith("qwen-plus · ")


def test_paced_stream_shows_text_while_it_is_still_streaming(kernel, dashscope):
    km, kc = kernel
    dashscope.enqueue(Script(reasoning="thinking " * 20, text="word " * 300, chunk_chars=5, chunk_delay=0.005))
    reply, messages = run(kc, "%%qwen -m qwen-plus\nstream please")
    end = messages[-1][0]
    early = [t for t, m in messages if m["msg_type"] in ("display_data", "update_display_data") and end - t > 0.5]
    assert len(early) >= 3, "updates must reach the front end while the answer streams, not only at the end"
    answer_updates = [m for m in displays(messages) if m["content"]["data"]["text/plain"].startswith("word")]
    assert answer_updates and len(messages) / (end - messages[0][0]) < 30 * 2


@pytest.mark.parametrize("words", [800, 3200])
def test_front_end_traffic_is_linear_in_the_answer(kernel, dashscope, words):
    km, kc = kernel
    # ~1,000 chunks per second, the pace at which resending the whole answer shows its quadratic cost.
    dashscope.enqueue(Script(reasoning="", text=" ".join(f"w{i:04d}" for i in range(words)), chunk_chars=5,
                             chunk_delay=0.001))
    reply, messages = run(kc, "%%qwen -m qwen-plus\ntraffic")
    answer = kc_answer_length(kc)
    sizes = [len(json.dumps(m["content"])) for m in displays(messages)]
    # Linear whatever the pace: no message carries the whole answer, and all of them together carry it a few
    # times over plus each message's envelope and open part. How many messages there are grows with how long
    # the stream takes (one per 0.1 s refresh), which a busy machine stretches; resending the whole answer
    # would cost about half of it per message (some 9,600 bytes each for 3,200 words), and its last one all of it.
    assert max(sizes) <= 5_000, f"a {max(sizes)}-byte message for a {answer}-byte answer"
    assert sum(sizes) <= 2 * answer + 2_000 * len(sizes), \
        f"{sum(sizes)} bytes in {len(sizes)} messages for a {answer}-byte answer"


def kc_answer_length(kc):
    _, messages = run(kc, "print(len(_qwen.text))")
    return int([m for _, m in messages if m["msg_type"] == "stream"][0]["content"]["text"])


def test_kernel_interrupt_keeps_the_partial_answer_and_the_kernel_usable(kernel, dashscope):
    km, kc = kernel
    dashscope.enqueue(Script(reasoning="", text="x" * 2000, chunk_chars=4, chunk_delay=0.01))
    msg_id = kc.execute("%%qwen -m qwen-plus\nlong answer")
    first_text = None
    while first_text is None:
        msg = kc.get_iopub_msg(timeout=30)
        if msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "display_data":
            first_text = msg
    km.interrupt_kernel()
    reply = reply_to(kc, msg_id)
    assert reply["content"]["status"] == "error" and reply["content"]["ename"] == "UsageError"
    assert "Stopped by user" in reply["content"]["evalue"]
    _, messages = run(kc, "print(_qwen.state, 0 < len(_qwen.text) < 2000)")
    assert [m for _, m in messages if m["msg_type"] == "stream"][0]["content"]["text"].strip() == "stopped True"


def printed(kc, code):
    """What ``code`` prints in the kernel, and its execute reply."""
    reply, messages = run(kc, code)
    return "".join(m["content"]["text"] for _, m in messages if m["msg_type"] == "stream"), reply


@pytest.mark.parametrize("ipylab", ["installed", "missing"])
def test_copy_as_cell_clicked_where_no_front_end_takes_a_cell_shows_it_and_how_to_insert_it(kernel, ipylab):
    """jupyter_client is no front end that runs ipylab: the click shows the cell with the line that says how to
    insert it, and leaves nothing for the next cell that runs; ``p.copy_as_cell()`` in a cell makes it the next."""
    if ipylab == "installed":
        require("this test", ipylab_missing())
    km, kc = kernel
    assert printed(kc, "import sys; print('ipylab' in sys.modules)")[0] == "False\n"  # not with %load_ext
    if ipylab == "missing":
        run(kc, "sys.modules['ipylab'] = None")  # as if not installed: importing it raises ImportError
    run(kc, "import qwen_magics\np = qwen_magics.panel(model=['qwen-plus', 'qwen-flash'], temperature=[0, 1.2])\n"
            "p.prompt.value = 'Name a colour.'\np")
    shown, _ = printed(kc, "print(sys.modules.get('ipylab') is not None)")
    assert shown == ("True\n" if ipylab == "installed" else "False\n")  # the shown panel made its ipylab front end
    button = printed(kc, "print(p.copy_button.model_id, end='')")[0]
    click = kc.session.msg("comm_msg", {"comm_id": button, "data": {"method": "custom", "content": {"event": "click"}}})
    kc.shell_channel.send(click)  # what a front end sends when the button is clicked, outside any execute request
    shown, reply = printed(kc, "print(p.notice.value); print(p.cell.value); print(p.as_compare_cell())")
    assert reply["content"]["payload"] == []  # no set_next_input left over for this cell to pick up
    notice, cell = shown.split("\n", 1)
    assert "run p.copy_as_cell() in a cell" in notice and "Notebook 7 with ipylab" in notice
    assert "%%qwen_compare -m qwen-plus,qwen-flash -t 0,1.2\nName a colour.</pre>" in cell
    _, reply = printed(kc, "p.copy_as_cell()")
    assert reply["content"]["payload"] == [{"source": "set_next_input", "replace": False,
                                            "text": "%%qwen_compare -m qwen-plus,qwen-flash -t 0,1.2\nName a colour."}]


def test_terminal_ipython_streams_plain_text(kernel_env, tmp_path):
    script = tmp_path / "ask.ipy"
    script.write_text("%load_ext qwen_magics\n%qwen -m qwen3.5-plus hello from the terminal\n")
    out = subprocess.run([sys.executable, "-m", "IPython", "--no-banner", "--colors=NoColor", str(script)],
                         capture_output=True, text=True, timeout=120, env=os.environ.copy())
    assert out.returncode == 0, out.stderr
    assert "Thinking: Let me think about this." in out.stdout
    assert "**Echo:** hello from the terminal" in out.stdout
    assert "[qwen3.5-plus · " in out.stdout and "<" not in out.stdout.replace("<Result", "")


@pytest.mark.timeout(400)  # one comparison runs on the local model
def test_compare_sampling_notebook_runs_in_a_kernel(kernel_env, tmp_path):
    nb = nbformat.read(ROOT / "notebooks" / "compare_sampling.ipynb", as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    widgets = [o for o in outputs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert len(widgets) == 8  # one comparison widget per %%qwen_compare cell, and the panel of columns
    panel = [o for c in nb.cells if c.cell_type == "code" and "qwen_magics.panel(" in c.source for o in c.outputs
             if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert len(panel) == 1 and panel[0]["data"]["text/html"].count("<h3>") == 2  # its two columns' static copy
    widgets = [o for o in widgets if o not in panel]
    # Saved without a widget manager, each comparison still shows as HTML: settings, answers and the summary.
    assert all(any(f"<h3>{head}" in o["data"]["text/html"] for head in ("-t ", "--seed", "-m local", "variant 1"))
               for o in widgets)
    assert any("distinct" in o["data"]["text/html"] for o in widgets)
    plain = "\n".join(o.get("text", "") + o.get("data", {}).get("text/plain", "") for o in outputs)
    assert "finish_reason" in plain and "temperature" in plain  # the DataFrame cell
    repetition = next(o["data"]["text/html"] for o in widgets if "<h3>-m local" in o["data"]["text/html"])
    assert "--repetition-penalty 1.3" in repetition and "--presence-penalty 1.5" in repetition
    assert "ran locally, free" in repetition  # the penalty columns ran on the local model, offline
    chats = [r for r in kernel_env.requests if r.path.endswith("/chat/completions")]
    assert len(chats) == 3 + 6 + 3 + 4 + 3 + 2 + 2  # the two phrasings, and the panel's two columns
    assert [r.path for r in kernel_env.requests if r not in chats] == ["/compatible-mode/v1/models"]  # its picker
