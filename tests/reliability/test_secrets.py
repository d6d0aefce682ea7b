"""Secrets: with a known fake key set, no part of it (beyond "sk-" and two characters) is ever shown.

Every test of this suite already runs with the fake key and scans what it produced (fixtures ``ip`` and
``kernel``: displays, printed text, DEBUG log records, reprs, exception messages and tracebacks, every
iopub message of the real kernel).  Here: every command in-process, a wrong key, the key inside an
expression's error; and a notebook executed by nbclient in a real kernel, through every command and
fault, whose iopub traffic, DEBUG log file, reprs, exceptions and saved .ipynb are scanned.
"""

from __future__ import annotations

import json
import socket

import nbformat
import pytest
from loopback import Script
from nbclient import NotebookClient

from .support import (APIS, FAST_RETRY, FIGURES, SECRET_KEY, SEEN, WRONG_KEY, ask, generation_requests,
                      key_fragments_in)

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32


def test_the_scan_finds_the_key_even_in_part():
    counted = (FIGURES.key_scans, FIGURES.key_chars, FIGURES.key_found)
    assert key_fragments_in([f"Authorization: Bearer {SECRET_KEY}"], "self-test")
    assert key_fragments_in(["…" + SECRET_KEY[7:13] + "…"], "self-test")  # six characters from its middle
    assert key_fragments_in([WRONG_KEY[-6:]], "self-test")
    assert not key_fragments_in(["sk-R7*** and sk-*** are masked"], "self-test")
    FIGURES.key_scans, FIGURES.key_chars, FIGURES.key_found = counted  # planted: not part of the figures


def test_every_command_keeps_the_key_out_of_displays_prints_logs_reprs_and_errors(ip, dashscope, allowance,
                                                                                  capsys):
    from pydantic import BaseModel

    class City(BaseModel):
        name: str

    def get_time(city: str) -> str:
        """The local time in a city."""
        return f"noon in {city}"

    allowance.connections = 8  # several clients: three protocols, other timeouts, the panel's listing
    ip.user_ns.update(City=City, get_time=get_time, png=PNG)
    for api in APIS:
        ask(ip, f"--api {api} -m qwen3.5-plus -o first_{api} hi")
        ask(ip, f"--api {api} --no-stream -m qwen-plus hi")
    ask(ip, "-c notes -m qwen-plus", "remember this")
    for line in ("", "show notes", "reset notes"):
        ask(ip, line, magic="qwen_chat")
    ip.run_line_magic("config", "QwenMagics")
    ip.run_line_magic("pinfo", "%qwen")
    ask(ip, "-f json -m qwen-plus list two colours")
    dashscope.enqueue(Script(reasoning="", text='{"name": "Lyon"}'))
    ask(ip, "--schema City -m qwen-plus a city")
    ask(ip, "--image png -m qwen3.5-plus what is it")
    ask(ip, "--logprobs 3 -m qwen-plus hi")
    ask(ip, "", magic="qwen_probs")
    dashscope.enqueue(Script(tool_calls=[{"name": "get_time", "arguments": {"city": "Paris"}}]))
    ask(ip, "--tools get_time -y -m qwen-plus what time is it in Paris?")
    ask(ip, "", magic="qwen_models")
    ask(ip, "", magic="qwen_local")
    ask(ip, "", magic="qwen_panel")
    ask(ip, "-m qwen-plus,qwen-flash -o runs", "hi", magic="qwen_compare")
    SEEN.extend([repr(ip.user_ns["runs"].to_dataframe()), repr(ip.user_ns["_qwen"].tool_runs)])
    SEEN.append(repr(ip.magics_manager.registry["QwenMagics"].trait_values()))
    ask(ip, f"--base-url {dashscope.url}/compatible-mode/v1 -m qwen-plus hi")
    expression = ask(ip, "{int(__import__('os').environ['DASHSCOPE_API_KEY'])} hi")
    assert "invalid literal for int()" in expression.error  # the error quotes the value: masked
    assert len(generation_requests(dashscope)) > 15
    assert all(r.headers.get("authorization") == f"Bearer {SECRET_KEY}" for r in generation_requests(dashscope))


@pytest.mark.parametrize("api", APIS)
def test_a_rejected_key_is_named_by_its_variable_never_by_its_value(ip, dashscope, monkeypatch, api):
    monkeypatch.setenv("DASHSCOPE_API_KEY", WRONG_KEY)
    asked = ask(ip, f"--api {api} -m qwen-plus hi")
    assert "The API key was rejected by the singapore region (401" in asked.error and "DASHSCOPE_API_KEY" in asked.error


# ---------------------------------------------------------------------------- a notebook, in a kernel

class RecordingClient(NotebookClient):
    """nbclient's own executor, keeping every iopub message it receives."""

    def __init__(self, *args, **kw) -> None:
        super().__init__(*args, **kw)
        self.iopub: list[dict] = []

    def process_message(self, msg, cell, cell_index):
        self.iopub.append(msg)
        return super().process_message(msg, cell, cell_index)


SETUP = '''
import json, logging, os, traceback
logging.basicConfig(filename={log!r}, level=logging.DEBUG, format="%(name)s %(levelname)s %(message)s")
logging.getLogger("markdown_it").setLevel(logging.INFO)
_errors = []

def _record(result):
    err, seen = result.error_in_exec, set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        _errors.extend(["".join(traceback.format_exception(err)), str(err), repr(err)])
        err = err.__cause__ or (None if err.__suppress_context__ else err.__context__)  # as Python shows it

get_ipython().events.register("post_run_cell", _record)
get_ipython().run_line_magic("load_ext", "qwen_magics")
get_ipython().run_line_magic("config", "QwenMagics.max_retries = 1")

def get_time(city: str) -> str:
    """The local time in a city."""
    return f"noon in {{city}}"

colour = {{"type": "object", "properties": {{"name": {{"type": "string"}}}}, "required": ["name"]}}
'''
SWAP = '''
_was = os.environ["{var}"]
os.environ["{var}"] = {value}
try:
    get_ipython().run_line_magic("qwen", "{line}")
finally:
    os.environ["{var}"] = _was
'''
DUMP = '''
from qwen_magics.result import Result
from qwen_magics.widgets.compare import Comparison
texts = list(_errors)
for value in list(globals().values()):
    if isinstance(value, Result):
        texts += [repr(value), repr(value.parameters), repr(value.messages), repr(value.tool_runs), str(value.error)]
    elif isinstance(value, Comparison):
        texts += [repr(value), repr(value.rows), value.to_markdown()]
texts.append(repr(get_ipython().magics_manager.registry["QwenMagics"].trait_values()))
json.dump(texts, open({reprs!r}, "w"))
'''


def secrets_notebook(log, reprs, closed_port):
    """Every command, and the faults, on every protocol; ``reliability`` metadata scripts the server."""
    cells = [(SETUP.format(log=str(log)), None), ("%config QwenMagics", None),
             ("%qwen?", None), ("%qwen_models", None), ("%qwen_local", None), ("%qwen_panel", None)]
    faults = {"cut": dict(reasoning="", text="alpha beta gamma", chunk_chars=4, fault="cut", fault_after=2),
              "moderation_mid": dict(reasoning="", text="alpha beta gamma", chunk_chars=4, fault="moderation_mid"),
              "500": dict(status=500, headers=FAST_RETRY, repeat=2),
              "429": dict(status=429, headers=FAST_RETRY, repeat=2),
              "malformed": dict(reasoning="", text="alpha beta gamma", chunk_chars=4, fault="malformed")}
    for api in APIS:
        cells += [(f"%%qwen --api {api} -m qwen3.5-plus -o answer_{api.replace('-', '_')}\nExplain entropy.", None),
                  (f"%qwen --api {api} --no-stream -m qwen-plus hi", None),
                  (f"%qwen --api {api} -m qwen-plus --schema colour a colour", {"reasoning": "",
                                                                                "text": '{"name": "teal"}'}),
                  (f"%qwen --api {api} -m qwen-plus --tools get_time -y the time in Paris?",
                   {"tool_calls": [{"name": "get_time", "arguments": {"city": "Paris"}}]}),
                  (f"%qwen --api {api} -m qwen-nope hi", None),
                  (f"%qwen --api {api} -m qwen-plus tell me [[blocked]]", None),
                  (f"%%qwen_compare --api {api} -m qwen-plus,qwen-flash\nhi", None),
                  (SWAP.format(var="DASHSCOPE_API_KEY", value="os.environ['RELIABILITY_WRONG_KEY']",
                               line=f"--api {api} -m qwen-plus hi"), None),
                  (SWAP.format(var="QWEN_MAGICS_DASHSCOPE_URL", value=repr(f"http://127.0.0.1:{closed_port}"),
                               line=f"--api {api} -m qwen-plus hi"), None)]
        cells += [(f"%qwen --api {api} -m qwen-plus {fault}", script) for fault, script in faults.items()]
    cells += [("%%qwen -c notes -m qwen-plus\nremember this", None), ("%qwen_chat show notes", None),
              ("%qwen --logprobs 3 -m qwen-plus hi", None), ("%qwen_probs", None),
              ("%qwen -m qwen-plus {int(os.environ['DASHSCOPE_API_KEY'])}", None), ("%qwen -t 5 hi", None),
              (DUMP.format(reprs=str(reprs)), None)]
    nb = nbformat.v4.new_notebook()
    for source, script in cells:
        cell = nbformat.v4.new_code_cell(source)
        if script is not None:
            cell.metadata["reliability"] = {"script": script}
        nb.cells.append(cell)
    return nb


def test_a_notebook_run_by_nbclient_never_shows_logs_raises_or_saves_the_key(dashscope, monkeypatch, tmp_path):
    monkeypatch.setenv("DASHSCOPE_API_KEY", SECRET_KEY)
    monkeypatch.setenv("RELIABILITY_WRONG_KEY", WRONG_KEY)  # the kernel has both; no cell spells either out
    monkeypatch.setenv("PYTHONUNBUFFERED", "1")
    log, reprs, saved = tmp_path / "kernel.log", tmp_path / "reprs.json", tmp_path / "secrets.ipynb"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    nb = secrets_notebook(log, reprs, closed)

    def script_the_server(cell, cell_index):
        if "reliability" in cell.metadata:
            dashscope.enqueue(Script(**cell.metadata["reliability"]["script"]))

    client = RecordingClient(nb, timeout=60, kernel_name="python3", allow_errors=True,
                             on_cell_execute=script_the_server, resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    nbformat.write(nb, saved)

    assert not [o for c in nb.cells for o in c.outputs if o.output_type == "error"]  # no traceback anywhere
    # A cell's stderr as a front end shows it: ipykernel may send one printed line in two messages
    # (the text, then its newline) when its flush timer falls between the two writes.
    stderr = ["".join(o.text for o in c.outputs if o.output_type == "stream" and o.name == "stderr") for c in nb.cells]
    lines = [line for text in stderr for line in text.splitlines(keepends=True)]
    assert len(lines) == 9 * 3 + 2 and all(t.startswith("UsageError: ") and t.endswith("\n") for t in lines), \
        "\n".join(f"cell {i}: {text!r}" for i, text in enumerate(stderr) if text)  # in full (pytest cuts a list)
    assert len(client.iopub) > 100 and log.stat().st_size > 10_000  # a real amount of traffic and logging
    keys = {r.headers.get("authorization") for r in generation_requests(dashscope)}
    assert f"Bearer {SECRET_KEY}" in keys and f"Bearer {WRONG_KEY}" in keys  # both keys were really used
    log_records = log.read_text(errors="replace").splitlines()
    FIGURES.log_records += len(log_records)
    FIGURES.notebook_chars += saved.stat().st_size
    found = (key_fragments_in([json.dumps(m, default=str) for m in client.iopub], "nbclient iopub")
             + key_fragments_in(log_records, "kernel log")
             + key_fragments_in(json.loads(reprs.read_text()), "kernel reprs and exceptions")
             + key_fragments_in([saved.read_text()], "saved .ipynb"))
    assert not found, found
