"""CI's last step, .ci/first-command: it runs the README's first command as written (the notebook saved
outside the checkout) and fails on any error output in the executed quickstart."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import shlex
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
_loader = importlib.machinery.SourceFileLoader("first_command", str(ROOT / ".ci" / "first-command"))
_spec = importlib.util.spec_from_loader("first_command", _loader)
first_command = importlib.util.module_from_spec(_spec)
_loader.exec_module(first_command)


def test_it_runs_the_readmes_first_command_with_the_notebook_written_outside_the_tree(tmp_path):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    command = first_command.first_command(readme, tmp_path / "out")
    line = next(line for line in readme.splitlines() if line.startswith('pip install -e ".[notebook]"'))
    assert command == line.split(" # ")[0].strip().replace("--output-dir out ", f"--output-dir '{tmp_path / 'out'}' ")
    words = shlex.split(command)
    assert words[:3] == ["pip", "install", "-e"] and "qwen-magics" in words and "nbconvert" in words
    assert words[words.index("--output-dir") + 1] == str(tmp_path / "out")
    assert words[words.index("--execute") + 1] == "notebooks/quickstart.ipynb"


def test_a_readme_without_the_output_folder_is_one_clear_line(tmp_path):
    with pytest.raises(SystemExit, match="has no single `--output-dir out`"):
        first_command.first_command('pip install -e ".[notebook]" && jupyter nbconvert x.ipynb\n', tmp_path)


def notebook(*outputs) -> dict:
    cell = nbformat.v4.new_code_cell("%%qwen\nhi")
    cell.outputs = list(outputs)
    return json.loads(nbformat.writes(nbformat.v4.new_notebook(cells=[cell])))


def test_an_executed_notebook_passes_only_without_errors_or_stderr():
    fine = nbformat.v4.new_output("stream", name="stdout", text="qwen-plus · 10 in / 20 out tokens\n")
    assert first_command.problems(notebook(fine)) == []
    error = nbformat.v4.new_output("error", ename="UsageError", evalue="Local model 1.5b is not installed",
                                   traceback=[])
    assert first_command.problems(notebook(fine, error)) == [
        "code cell 1: UsageError: Local model 1.5b is not installed"]
    stderr = nbformat.v4.new_output("stream", name="stderr", text="Traceback (most recent call last):\n  boom\n")
    assert first_command.problems(notebook(stderr)) == [
        "code cell 1 wrote to stderr: Traceback (most recent call last):\n  boom"]
    assert first_command.problems(notebook()) == ["no code cell has an output: the notebook did not run"]


def test_a_notebook_with_an_error_fails_the_step_though_the_command_succeeded(tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    out.mkdir()
    error = nbformat.v4.new_output("error", ename="RuntimeError", evalue="boom", traceback=[])
    (out / "quickstart.ipynb").write_text(json.dumps(notebook(error)))
    # a checkout whose first command succeeds without doing anything (pip finds no project there)
    (tmp_path / "README.md").write_text('pip install -e ".[notebook]" 2>/dev/null || echo --output-dir out ok\n')
    monkeypatch.setattr(first_command, "ROOT", tmp_path)
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # pip never looks beyond this machine

    assert first_command.main([str(out)]) == 1

    assert f"{out / 'quickstart.ipynb'}: code cell 1: RuntimeError: boom" in capsys.readouterr().err
    (out / "quickstart.ipynb").write_text(json.dumps(notebook(nbformat.v4.new_output("stream", name="stdout",
                                                                                        text="fine\n"))))
    assert first_command.main([str(out)]) == 0
