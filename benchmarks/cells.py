"""The code the benchmarks run in the kernel: each cell prints one ``BENCH {json}`` line.

Names start with ``_b_`` so they never collide with the package's (``_qwen``).
"""

from __future__ import annotations

import textwrap

SETUP = """\
import asyncio as _b_asyncio, gc as _b_gc, json as _b_json, os as _b_os, threading as _b_threading, time as _b_time
get_ipython().run_line_magic("load_ext", "qwen_magics")
"""

MAGIC = """\
_b_t0 = _b_time.perf_counter()
get_ipython().run_cell_magic({magic!r}, {line!r}, {prompt!r})
_b_dt = _b_time.perf_counter() - _b_t0
print("BENCH " + _b_json.dumps({{"elapsed": _b_dt, "chars": len(_qwen.text), "state": _qwen.state,
                                 "stream": _qwen.elapsed, "ttft": _qwen.ttft, "tokens": _qwen.usage.output{extra}}}))
"""

# The cell of measurements 1 and 2: a plain answer, no reasoning.
QWEN = MAGIC.format(magic="qwen", line="-m qwen-plus --no-thinking", prompt="bench", extra="")

SDK_SETUP = """\
import openai as _b_openai
_b_client = _b_openai.AsyncOpenAI(base_url={base!r}, api_key={key!r})
"""


def sdk_loop(client: str) -> str:
    """The bare loop: the same request body the magic sends, consumed by ``client`` (an AsyncOpenAI)."""
    return f"""\
_b_parts = []
async for _b_chunk in await {client}.chat.completions.create(
        model="qwen-plus", messages=[{{"role": "user", "content": "bench"}}], stream=True,
        stream_options={{"include_usage": True}}, extra_body={{"enable_thinking": False}}):
    if _b_chunk.choices and _b_chunk.choices[0].delta.content:
        if not _b_parts:
            print("FIRST", flush=True)
        _b_parts.append(_b_chunk.choices[0].delta.content)
"""


# The bare loop on the kernel's own loop.
SDK = f"""\
_b_t0 = _b_time.perf_counter()
{sdk_loop("_b_client")}_b_dt = _b_time.perf_counter() - _b_t0
print("BENCH " + _b_json.dumps({{"elapsed": _b_dt, "chars": len("".join(_b_parts))}}))
"""

# The bare loop as a coroutine on the package's loop thread, the cell waiting for it.
SDK_ON_LOOP_SETUP = f"""\
from qwen_magics import runner as _b_runner
_b_loop_client = None

async def _b_sdk_on_loop():
    global _b_loop_client
    if _b_loop_client is None:  # a client of its own: connections belong to the loop that opened them
        _b_loop_client = _b_openai.AsyncOpenAI(base_url=_b_client.base_url, api_key=_b_client.api_key)
{textwrap.indent(sdk_loop("_b_loop_client"), "    ")}    return "".join(_b_parts)
"""

SDK_ON_LOOP = """\
_b_t0 = _b_time.perf_counter()
_b_text = _b_asyncio.run_coroutine_threadsafe(_b_sdk_on_loop(), _b_runner.background_loop()).result()
_b_dt = _b_time.perf_counter() - _b_t0
print("BENCH " + _b_json.dumps({"elapsed": _b_dt, "chars": len(_b_text)}))
"""

COMPARE = """\
_b_t0 = _b_time.perf_counter()
get_ipython().run_cell_magic("qwen_compare", {line!r}, "bench")
_b_dt = _b_time.perf_counter() - _b_t0
print("BENCH " + _b_json.dumps({{"elapsed": _b_dt, "states": [r.state for r in _qwen_compare.results],
                                 "chars": [len(r.text) for r in _qwen_compare.results]}}))
"""

PROBE = """\
def _b_probe():
    _b_gc.collect()
    sockets = 0
    for fd in _b_os.listdir("/proc/self/fd"):
        try:
            sockets += _b_os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
        except OSError:
            pass
    from qwen_magics import runner

    async def count():
        return len([t for t in _b_asyncio.all_tasks() if t is not _b_asyncio.current_task()])

    tasks = _b_asyncio.run_coroutine_threadsafe(count(), runner.background_loop()).result(10)
    with open("/proc/self/status") as f:
        rss = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))
    return {"sockets": sockets, "tasks": tasks, "threads": _b_threading.active_count(), "rss": rss}
"""

STARTUP = """\
import json, sys, time
_b_before = set(sys.modules)
_b_t0 = time.perf_counter()
{statement}
_b_dt = time.perf_counter() - _b_t0
_b_new = set(sys.modules) - _b_before
print("BENCH " + json.dumps({{"seconds": _b_dt, "modules": len(_b_new),
                             "heavy": sorted(m for m in ("openai", "httpx", "httpx2", "pydantic", "ipywidgets",
                                                         "markdown_it", "llama_cpp", "pandas") if m in _b_new)}}))
"""

LOCAL_PROMPT = "Write a Python function that tells whether a number is prime."
# The bare loop runs in a thread of its own, as the package's generation does.  llama.cpp's CPU backend uses
# OpenMP: each thread that calls into it gets its own libgomp team, and one made by the kernel's main thread
# lives as long as the kernel.  With two teams on two cores libgomp throttles its spin-waiting, and every later
# generation in any other thread runs about 35% slower; a baseline in the main thread would measure that.
LOCAL_RAW = """\
import threading as _b_threading
from qwen_magics.local.model import load as _b_load, resolve as _b_resolve
_b_llm = _b_load(_b_resolve("local:0.5b")).llm
_b_parts = []
def _b_generate():
    _b_llm.reset()
    for _b_chunk in _b_llm.create_chat_completion(messages=[{{"role": "user", "content": {prompt!r}}}], stream=True,
                                                  temperature=0, seed=1, max_tokens=64):
        _b_piece = _b_chunk["choices"][0]["delta"].get("content")
        if _b_piece:
            _b_parts.append(_b_piece)
_b_t0 = _b_time.perf_counter()
_b_thread = _b_threading.Thread(target=_b_generate)
_b_thread.start()
_b_thread.join()
_b_dt = _b_time.perf_counter() - _b_t0
print("BENCH " + _b_json.dumps({{"elapsed": _b_dt, "text": "".join(_b_parts), "pieces": len(_b_parts)}}))
"""
