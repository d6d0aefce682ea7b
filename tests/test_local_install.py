"""Installing and resolving the local model, against the real 0.5B file and runtime, with no network.

These need ``qwen-magics install-local --model 0.5b`` to have run once (the ``local`` mark skips them
without it, or fails them under CI=true).  The reinstall is fed part packages built here from the
installed file, so pip reads only a local folder: nothing is downloaded.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import textwrap
import zipfile
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
    """The real 0.5B file in the user's cache, checked against its pinned SHA-256 (once: then the stamp)."""
    return install_local.verify(MODEL)


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("QWEN_MAGICS_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_second_run_says_it_is_installed(installed: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(["install-local", "--model", "0.5b"]) == 0
    out = capsys.readouterr()
    assert out.out == f"Qwen2.5-Coder-0.5B-Instruct is already installed: {installed}\n"
    assert out.err == ""


def test_the_stamp_spares_hashing_the_file_again(installed: Path, cache: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """A file of the model's size whose bytes are not the model's, stamped as verified for its size and
    mtime, is taken as installed and kept: hashing it would have found the mismatch and deleted it."""
    cache.mkdir()
    with open(MODEL.path, "wb") as f:
        f.truncate(MODEL.size)
    stat = MODEL.path.stat()
    MODEL.stamp.write_text(json.dumps({"sha256": MODEL.sha256, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}))
    capsys.readouterr()

    assert main(["install-local", "--model", "0.5b"]) == 0

    assert capsys.readouterr().out == f"Qwen2.5-Coder-0.5B-Instruct is already installed: {MODEL.path}\n"
    assert MODEL.path.exists() and MODEL.stamp.exists()


def test_corrupted_file_is_caught_by_checksum_and_deleted(installed: Path, cache: Path) -> None:
    cache.mkdir()
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


def _has_dist(name: str) -> bool:
    try:
        importlib.metadata.distribution(name)
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


def _record_hash(digest: "hashlib._Hash") -> str:
    return "sha256=" + base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode()


def build_part_wheels(source: Path, folder: Path) -> Path:
    """The model's part packages, built from the installed file: its bytes cut into ``MODEL.parts`` pieces
    in order, each in a wheel of the pinned name and version holding one ``.bin`` file, as the published
    packages do (install_local finds a part by that suffix)."""
    folder.mkdir(parents=True)
    step = -(-source.stat().st_size // MODEL.parts)
    with source.open("rb") as src:
        for requirement in MODEL.requirements:
            name, _, version = requirement.partition("==")
            module = name.replace("-", "_")
            info = f"{module}-{version}.dist-info"
            records = []
            with zipfile.ZipFile(folder / f"{module}-{version}-py3-none-any.whl", "w", zipfile.ZIP_STORED) as whl:
                digest, written = hashlib.sha256(), 0
                with whl.open(f"{module}/weights.bin", "w") as out:
                    while written < step and (block := src.read(min(8 << 20, step - written))):
                        out.write(block)
                        digest.update(block)
                        written += len(block)
                records.append(f"{module}/weights.bin,{_record_hash(digest)},{written}")
                for path, text in {f"{module}/__init__.py": "",
                                   f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
                                   f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\n"
                                                    "Tag: py3-none-any\n"}.items():
                    whl.writestr(path, text)
                    records.append(f"{path},{_record_hash(hashlib.sha256(text.encode()))},{len(text.encode())}")
                whl.writestr(f"{info}/RECORD", "\n".join(records + [f"{info}/RECORD,,"]) + "\n")
    return folder


def installed_parts() -> list[str]:
    return [name for name in (r.partition("==")[0] for r in MODEL.requirements) if _has_dist(name)]


@pytest.fixture
def local_parts(installed: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """pip, as the install runs it, finds the part packages only in a local folder built from the installed
    file: with no index it cannot download anything.  None of them is left installed afterwards."""
    assert installed_parts() == [], "part packages are installed here; `pip uninstall` them to run this test"
    wheels = build_part_wheels(installed, tmp_path / "wheels")
    for name, value in {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(wheels),
                        "PIP_DISABLE_PIP_VERSION_CHECK": "1"}.items():
        monkeypatch.setenv(name, value)
    yield wheels
    if left := installed_parts():
        subprocess.run([sys.executable, "-m", "pip", "uninstall", "--yes", *left], capture_output=True)
    shutil.rmtree(wheels)  # half a gigabyte, as is the model assembled in the test's cache (the `cache` fixture's)
    (tmp_path / "cache" / installed.name).unlink(missing_ok=True)


def test_install_rebuilds_a_damaged_copy_from_the_parts_then_removes_them(
        installed: Path, cache: Path, local_parts: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cache.mkdir()
    with open(cache / installed.name, "wb") as f:  # right size, wrong content
        f.write(b"GGUF")
        f.truncate(MODEL.size)

    assert main(["install-local", "--model", "0.5b"]) == 0

    out = capsys.readouterr().out
    assert "Installing the weights of Qwen2.5-Coder-0.5B-Instruct: 6 of 6 part packages" in out
    assert out.startswith(install_local.provenance(MODEL) + "\n")  # said before anything is downloaded
    assert out.endswith(f"Qwen2.5-Coder-0.5B-Instruct is installed: {MODEL.path}\n")
    assert f"Removing the 6 part packages: the verified {installed.name} holds the weights" in out
    assert MODEL.stamp.exists()
    assert resolve("local:0.5b") == cache / installed.name
    assert installed_parts() == []
    assert main(["install-local", "--model", "0.5b"]) == 0
    assert capsys.readouterr().out == f"Qwen2.5-Coder-0.5B-Instruct is already installed: {MODEL.path}\n"


def test_full_disk_is_refused_before_any_work(installed: Path, cache: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """The line names the model cache (the folder QWEN_MAGICS_CACHE moves) and what its disk needs in all:
    the model, plus the part packages and pip's temporary copy when site-packages and the temp folder are
    on that disk too (as on most laptops), wherever the folders of this machine live."""
    cache.mkdir()
    monkeypatch.setattr(install_local.shutil, "disk_usage", lambda path: SimpleNamespace(free=10 << 20))
    parts = MODEL.size * len(install_local._missing_parts(MODEL)) // MODEL.parts
    beside = [folder for folder in (Path(sysconfig.get_paths()["purelib"]), Path(tempfile.gettempdir()))
              if parts and folder.stat().st_dev == cache.stat().st_dev]
    needed = (MODEL.size + parts * len(beside) + (64 << 20)) / 2**30

    assert main(["install-local", "--model", "0.5b"]) == 1

    err = capsys.readouterr().err
    assert err.startswith(f"qwen-magics: Not enough disk space on {cache.resolve()}: 0.0 GiB free, "
                          f"{needed:.1f} GiB needed on that disk (the model"), err
    assert err.rstrip().endswith("Free some space or set QWEN_MAGICS_CACHE to a folder on a larger disk."), err
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
