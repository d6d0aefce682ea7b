"""What `pip install -e ".[notebook]"` brings: the front end the README opens the notebooks with."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]


def extra(name: str) -> dict[str, Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return {(r := Requirement(line)).name.lower(): r for line in project["optional-dependencies"][name]}


def test_the_notebook_extra_brings_jupyterlab_notebook_7_and_ipylab_in_the_series_the_browser_tests_pin():
    notebook = extra("notebook")
    pins = dict(re.findall(r'^(JUPYTERLAB|NOTEBOOK|IPYLAB)_VERSION="([\d.]+)"',
                           (ROOT / ".ci" / "install-browser").read_text(), re.M))
    assert set(pins) == {"JUPYTERLAB", "NOTEBOOK", "IPYLAB"}
    for package, pin in (("jupyterlab", pins["JUPYTERLAB"]), ("notebook", pins["NOTEBOOK"]),
                         ("ipylab", pins["IPYLAB"])):
        assert package in notebook, f"the notebook extra does not install {package}"
        assert notebook[package].specifier.contains(pin), (package, str(notebook[package].specifier), pin)
    assert not notebook["notebook"].specifier.contains("6.5.7")  # Notebook 7, not the classic 6


def test_the_readme_says_how_to_open_the_notebooks():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert 'pip install -e ".[notebook]"' in readme and "`jupyter lab notebooks/`" in readme


def test_every_data_file_the_package_reads_is_shipped_as_package_data():
    """A wheel holds a package's non-Python files only where ``package-data`` names them: the price table and
    the sums dataset would be missing from an installed (not editable) package otherwise."""
    shipped = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]["package-data"]
    data = [f for f in (ROOT / "qwen_magics").rglob("*") if f.is_file() and f.suffix not in (".py", ".pyc")]
    assert {f.name for f in data} >= {"prices.json", "sums.csv"}
    for file in data:
        package = ".".join(file.parent.relative_to(ROOT).parts)
        candidates = [(owner, pattern) for owner, patterns in shipped.items() for pattern in patterns
                      if package == owner or package.startswith(owner + ".")]
        relative = {owner: file.relative_to(ROOT.joinpath(*owner.split("."))) for owner, _ in candidates}
        assert any(relative[owner].match(pattern) for owner, pattern in candidates), f"{file} is not package data"
