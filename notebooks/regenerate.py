"""Regenerate the gallery: run the teaching notebooks on the local model and save them with their outputs.

    python notebooks/regenerate.py                      all five (30 minutes with the 1.5B on a busy 2-core machine)
    python notebooks/regenerate.py quickstart datasets  only these

GitHub and nbviewer then show real streamed answers, comparison grids and
probability views. Each notebook runs in a fresh kernel with no API key (no
environment variable that looks like a secret reaches it), a run log, IPython
profile and working directory in a temporary folder, so the local Qwen answers
and nothing of the user's is read or written. The saved outputs are scrubbed of
what is private or volatile (home, checkout and temporary paths, execution
timings, widget views beside a static export), each code cell records the SHA-256
of the source it ran and of the outputs it saved (``tests/test_gallery.py`` fails
when a cell's code changes without regenerating, or when an output is edited by
hand), and a notebook whose outputs still fail :func:`problems` is not written.

Not part of the test run: it takes minutes of real generation.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent
GALLERY = ("quickstart", "compare_sampling", "offline_sampling", "datasets", "sampling_lab", "evaluate_sampling")
METADATA = "qwen_magics"
HASH_KEY = "source_sha256"
OUTPUTS_KEY = "outputs_sha256"
#: A widget view needs a live kernel or saved widget state. nbconvert (nbviewer) skips a view with no
#: state and shows the next format, but a viewer that picks the view anyway (JupyterLab reopening the
#: file: "model not found") shows no answer; where the output also carries a static text/html export
#: (the comparison writes one), the view is dropped so every viewer shows that export.
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
#: Environment variables never passed to the kernel: the key, anything named like a secret,
#: the package's own overrides (another endpoint, another log) and the front end's session.
PRIVATE_ENV = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|CREDENTIAL|AUTH|^DASHSCOPE_|^QWEN_MAGICS_(?!CACHE$)|^JPY_", re.I)
KEY_SHAPE = re.compile(r"\bsk-[A-Za-z0-9_-]{8,}")
LOCAL_PATH = re.compile(r"(?<![\w.~-])(/root\b|/home/|/tmp/|/Users/|/var/folders/|[A-Za-z]:\\Users\\)")
SCRIPT_TAG = re.compile(r"<script\b", re.I)


def source_sha256(source: str) -> str:
    return hashlib.sha256(source.encode("utf-8")).hexdigest()


def outputs_sha256(outputs: list) -> str:
    """The SHA-256 of a cell's outputs as saved: every field, keys sorted, multi-line text joined (as
    nbformat reads it), so any edit to what a reader sees changes it."""
    return hashlib.sha256(json.dumps(outputs, sort_keys=True, ensure_ascii=False,
                                     separators=(",", ":")).encode("utf-8")).hexdigest()


def private_strings() -> list[str]:
    """This machine's paths that must not appear in a saved notebook: checkout, model cache, home, temp."""
    from qwen_magics.local.model import cache_dir

    paths = {HERE.parent, cache_dir(), Path.home(), Path(tempfile.gettempdir())}
    return [str(p) for p in paths if len(str(p)) > 1]


def problems(nb: nbformat.NotebookNode) -> list[str]:
    """Why the saved outputs of ``nb`` cannot be published as they are; empty when they can.

    Stale outputs (a code cell whose source changed since its outputs were
    made), outputs edited after the run, error outputs, local paths, API keys
    and script elements.
    """
    found = []
    for number, cell in enumerate((c for c in nb.cells if c.cell_type == "code"), 1):
        recorded = cell.metadata.get(METADATA, {})
        if recorded.get(HASH_KEY) != source_sha256(cell.source):
            found.append(f"code cell {number} ({cell.source.splitlines()[0][:40]!r}): its outputs are not from "
                         "its current source")
        if recorded.get(OUTPUTS_KEY) != outputs_sha256(cell.outputs):
            found.append(f"code cell {number} ({cell.source.splitlines()[0][:40]!r}): its outputs are not the "
                         "ones the run saved")
        found += [f"code cell {number}: error output {o.get('ename')}: {o.get('evalue')}"
                  for o in cell.outputs if o.output_type == "error"]
        found += [f"code cell {number}: a <script> element in its HTML output" for o in cell.outputs
                  if SCRIPT_TAG.search(o.get("data", {}).get("text/html", ""))]
    saved = nbformat.writes(nb)
    key = os.environ.get("DASHSCOPE_API_KEY", "")
    secrets = [m.group() for m in KEY_SHAPE.finditer(saved)] + ([key] if len(key) >= 8 and key in saved else [])
    found += ["an API key" for _ in secrets[:1]]
    paths = [m.group() for m in LOCAL_PATH.finditer(saved)] + [p for p in private_strings() if p in saved]
    found += [f"a local path: {p}" for p in dict.fromkeys(paths)]
    return found


def kernel_env(scratch: Path) -> dict[str, str]:
    """The kernel's environment: this one without secrets, with the log and profile in ``scratch``."""
    env = {name: value for name, value in os.environ.items() if not PRIVATE_ENV.search(name)}
    env.update(QWEN_MAGICS_LOG=str(scratch / "log.db"), IPYTHONDIR=str(scratch / "ipython"), PYTHONUNBUFFERED="1")
    return env


def scrub(nb: nbformat.NotebookNode, replacements: list[tuple[str, str]]) -> None:
    """Make the executed ``nb`` publishable: paths replaced, timings and kernel-only views dropped, sources and
    the scrubbed outputs hashed."""
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        cell.metadata.pop("execution", None)
        for output in cell.outputs:
            data = output.get("data", {})
            if WIDGET_VIEW in data and "text/html" in data:
                del data[WIDGET_VIEW]
            for field in ("text", "evalue"):
                if field in output:
                    output[field] = _replace(output[field], replacements)
            for mime, value in data.items():
                if isinstance(value, str) and not mime.startswith("image/"):
                    data[mime] = _replace(value, replacements)
        cell.metadata[METADATA] = {HASH_KEY: source_sha256(cell.source), OUTPUTS_KEY: outputs_sha256(cell.outputs)}


def _replace(text: str, replacements: list[tuple[str, str]]) -> str:
    for old, new in replacements:
        text = text.replace(old, new)
    return text


def regenerate(name: str) -> float:
    """Execute notebooks/NAME.ipynb on the local model and write it back; the seconds it took."""
    path = HERE / f"{name}.ipynb"
    nb = nbformat.read(path, as_version=4)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="qwen-gallery-") as scratch:
        scratch = Path(scratch).resolve()
        (scratch / "work").mkdir()
        client = NotebookClient(nb, timeout=1800, kernel_name="python3", record_timing=False,
                                store_widget_state=False, resources={"metadata": {"path": str(scratch / "work")}})
        client.execute(env=kernel_env(scratch))
    # the most specific path first (the scratch folder sits in the temp folder, the cache in home);
    # no placeholder holds "<" or "&", which an HTML output would swallow as markup
    places = {str(scratch / "work"): ".", str(scratch): "$TMPDIR/qwen-gallery", str(HERE.parent): "qwen-magics",
              str(Path.home()): "~", tempfile.gettempdir() + os.sep: "$TMPDIR/"}
    scrub(nb, sorted(places.items(), key=lambda item: -len(item[0])))
    found = problems(nb)
    if found:
        raise SystemExit(f"{name}: not written, its outputs are not publishable: " + "; ".join(found))
    nbformat.validate(nb)
    nbformat.write(nb, path)
    if found := problems(nbformat.read(path, as_version=4)):  # what the tests read: the file as saved
        raise SystemExit(f"{name}: written, but the saved file fails its checks: " + "; ".join(found))
    return time.monotonic() - started


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help=f"notebooks to regenerate (default: all of {', '.join(GALLERY)})")
    names = parser.parse_args(argv).names or list(GALLERY)
    for name in set(names) - set(GALLERY):
        parser.error(f"{name!r} is not a gallery notebook: name some of {', '.join(GALLERY)}")
    from qwen_magics.local.model import default_model, is_assembled

    model = default_model()
    if not is_assembled(model):
        raise SystemExit(f"No local model is installed: {model.install_hint()}, then run this again.")
    for name in names:
        print(f"{name}: running on {model.title} ...", flush=True)
        print(f"{name}: written in {regenerate(name):.0f} s", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
