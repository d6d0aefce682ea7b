"""A test whose real part is missing skips outside CI and fails under ``CI=true``, saying what to install.

The rule itself (tests/parts.py), what it says when a local model or the browser is missing, and the
rule at work: a real pytest run of a local-model test and of a browser test with the part taken away.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from parts import in_ci, local_model_missing, require

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("value, ci", [("true", True), ("1", True), ("TRUE", True), ("", False), ("false", False)])
def test_ci_is_read_from_the_environment(monkeypatch, value, ci):
    monkeypatch.setenv("CI", value)
    assert in_ci() is ci


def test_a_present_part_lets_the_test_run(monkeypatch):
    monkeypatch.setenv("CI", "true")
    assert require("the browser", None) is None


def test_a_missing_part_skips_outside_ci_and_fails_under_ci(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"^the browser cannot run: run \.ci/install-browser$"):
        require("the browser", "run .ci/install-browser")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception) as failed:
        require("the browser", "run .ci/install-browser")
    assert str(failed.value) == ("the browser cannot run: run .ci/install-browser "
                                 "(CI=true: a missing part fails the test instead of skipping it)")


def test_with_only_the_1_5b_installed_a_0_5b_test_says_to_install_the_0_5b(tmp_path, monkeypatch):
    from qwen_magics.local.model import MODELS

    monkeypatch.setenv("QWEN_MAGICS_CACHE", str(tmp_path))
    assert local_model_missing("0.5b") == (
        "this test needs Qwen2.5-Coder-0.5B-Instruct, which is not installed: "
        "run `qwen-magics install-local --model 0.5b`")
    with open(MODELS["1.5b"].path, "wb") as f:  # the 1.5B's size, as far as the check looks
        f.truncate(MODELS["1.5b"].size)
    assert local_model_missing("0.5b") == (
        "this test needs Qwen2.5-Coder-0.5B-Instruct, which is not installed (only Qwen2.5-Coder-1.5B-Instruct "
        "is): run `qwen-magics install-local --model 0.5b`")
    assert not (local_model_missing("any") or "").startswith("this test needs")  # any model will do: the 1.5B


def pytest_run(tmp_path: Path, *args: str, ci: bool, **env: str) -> subprocess.CompletedProcess:
    """``python -m pytest ARGS`` on this checkout, with or without ``CI=true``."""
    environ = {k: v for k, v in os.environ.items() if k != "CI" and not k.startswith("PYTEST_")}
    environ.update(env, PYTHONPATH=os.pathsep.join(filter(None, [env.get("PYTHONPATH"), str(ROOT)])))
    if ci:
        environ["CI"] = "true"
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rsE", *args],
                          cwd=ROOT, env=environ, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("ci", [False, True], ids=["outside CI", "CI=true"])
def test_a_local_model_test_without_the_model_skips_or_under_ci_fails(tmp_path, ci):
    run = pytest_run(tmp_path, "tests/test_local_install.py::test_unknown_names_list_the_choices", ci=ci,
                     QWEN_MAGICS_CACHE=str(tmp_path / "empty-cache"))
    said = run.stdout + run.stderr
    assert "install-local --model 0.5b" in said, said
    if ci:
        assert run.returncode == 1 and re.search(r"\b1 error\b", said) and "CI=true: a missing part fails" in said, said
    else:
        assert run.returncode == 0 and re.search(r"\b1 skipped\b", said), said


@pytest.mark.parametrize("ci", [False, True], ids=["outside CI", "CI=true"])
def test_a_browser_test_without_playwright_skips_or_under_ci_fails(tmp_path, ci):
    fake = tmp_path / "no-playwright" / "playwright"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('playwright is not installed here')\n")
    run = pytest_run(tmp_path, "tests/browser/test_widgets.py", ci=ci, PYTHONPATH=str(fake.parent))
    said = run.stdout + run.stderr
    assert "Playwright cannot be imported (playwright is not installed here): run .ci/install-browser" in said, said
    if ci:
        assert run.returncode == 1 and re.search(r"\b2 errors\b", said) and "passed" not in said, said
    else:
        assert run.returncode == 0 and re.search(r"\b2 skipped\b", said), said
