"""The real parts some tests need beyond the test extra: a browser, llama.cpp's server, the local model,
a CJK font, ipylab.

A test whose part is missing skips with the command that installs it; under ``CI=true`` it fails with
that same line instead, so a broken install in CI cannot pass by dropping tests.  tests/conftest.py
applies this to every test marked ``local`` or ``browser``; the llama.cpp server fixture, the
Chinese-text browser test and the tests of the panel's "Copy as cell" call it too.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess

import pytest

BROWSER_INSTALL = "run .ci/install-browser"


def in_ci() -> bool:
    """``CI`` is set to true (as CI services do)."""
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def require(part: str, reason: str | None) -> None:
    """Nothing when ``reason`` is None; else skip the test, or fail it under ``CI=true``, saying why."""
    if reason is None:
        return
    line = f"{part} cannot run: {reason}"
    if in_ci():
        pytest.fail(f"{line} (CI=true: a missing part fails the test instead of skipping it)", pytrace=False)
    pytest.skip(line)


def local_model_missing(name: str = "0.5b") -> str | None:
    """Why a test of the local model ``name`` (or ``any`` installed one) cannot run here, or None."""
    from qwen_magics.local.model import MODELS, is_assembled

    wanted = list(MODELS.values()) if name == "any" else [MODELS[name]]
    hint = f"qwen-magics install-local --model {wanted[0].name}"
    if not any(is_assembled(model) for model in wanted):
        installed = [m.title for m in MODELS.values() if is_assembled(m)]
        also = f" (only {', '.join(installed)} is)" if installed else ""
        return f"this test needs {wanted[0].title}, which is not installed{also}: run `{hint}`"
    if importlib.util.find_spec("llama_cpp") is None:
        return f"the local runtime llama-cpp-python is not installed: run `{hint}`"
    return None


def browser_missing(front_end_module: str | None = None) -> str | None:
    """Why the browser tests cannot run here (Playwright, Chromium, JupyterLab, Notebook 7), or None."""
    from browser.lab import CHROMIUM, FRONT_ENDS

    try:
        importlib.import_module("playwright.sync_api")
    except ImportError as err:
        return f"Playwright cannot be imported ({err}): {BROWSER_INSTALL}"
    if shutil.which(CHROMIUM) is None:
        return f"{CHROMIUM} is missing: {BROWSER_INSTALL}"
    for module in [front_end_module] if front_end_module else [f.module for f in FRONT_ENDS]:
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed: {BROWSER_INSTALL}"
    return None


def ipylab_missing() -> str | None:
    """Why the panel's "Copy as cell" cannot insert its cell here (ipylab, which runs the front end's commands,
    is not installed), or None."""
    if importlib.util.find_spec("ipylab") is None:
        return f"ipylab is not installed: {BROWSER_INSTALL}"
    return None


def cjk_font_missing() -> str | None:
    """Why Chinese text would render as boxes here (no font that fontconfig lists for Chinese), or None."""
    if shutil.which("fc-list") is None:
        return f"fontconfig's fc-list is missing: {BROWSER_INSTALL}"
    found = subprocess.run(["fc-list", ":lang=zh", "family"], capture_output=True, text=True).stdout.strip()
    return None if found else f"no Chinese font is installed (`fc-list :lang=zh` lists none): {BROWSER_INSTALL}"
