"""llama.cpp's own OpenAI-compatible server (``python -m llama_cpp.server``), run with the 0.5B model.

A real server the package did not write, for the tests of ``--base-url``: it
streams without usage chunks and, by default, cuts the running stream when the
next request comes.  :func:`missing` says why it cannot run here (its extra
dependencies or the model absent): a skip, or under ``CI=true`` a failure (tests/parts.py).
"""

from __future__ import annotations

import importlib.util
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ALIAS = "qwen-local"
_SERVER_MODULES = ("llama_cpp", "fastapi", "uvicorn", "pydantic_settings", "sse_starlette", "starlette_context", "yaml")
_READY_TIMEOUT = 60.0
_STOP_TIMEOUT = 10.0


def model_path() -> Path | None:
    """The installed 0.5B GGUF, or None."""
    from qwen_magics.local import model as local_model
    from qwen_magics.errors import LocalModelError

    try:
        return local_model.resolve("local:0.5b")
    except LocalModelError:
        return None


def missing() -> str | None:
    """Why the server cannot run here, or None."""
    absent = [name for name in _SERVER_MODULES if importlib.util.find_spec(name) is None]
    if absent:
        return (f"llama.cpp's server needs {', '.join(absent)}: pip install -e '.[test]' "
                "(and llama-cpp-python: qwen-magics install-local)")
    if model_path() is None:
        return "the 0.5B model is not installed: qwen-magics install-local --model 0.5b"
    return None


class LlamaServer:
    """The server on a free loopback port; ``url`` is its base URL (``http://127.0.0.1:PORT/v1``)."""

    def __init__(self, model: Path, log: Path) -> None:
        self.model, self.log = model, log
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> "LlamaServer":
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "llama_cpp.server", "--model", str(self.model), "--model_alias", ALIAS,
                 "--host", "127.0.0.1", "--port", str(self.port), "--n_ctx", "2048"],
                stdout=out, stderr=subprocess.STDOUT)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + _READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"llama.cpp's server exited with {self.process.returncode}: {self.tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/models", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"llama.cpp's server did not answer /v1/models within {_READY_TIMEOUT:.0f} s: {self.tail()}")

    def stop(self) -> None:
        """Terminate, then kill if it does not end in time."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(_STOP_TIMEOUT)

    def tail(self, chars: int = 2000) -> str:
        """The end of the server's log (for failure messages)."""
        return self.log.read_text(errors="replace")[-chars:]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
