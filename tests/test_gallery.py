"""The gallery: the teaching notebooks are committed with the outputs of a real run on the local model.

``python notebooks/regenerate.py`` makes those outputs. These tests execute
nothing: they read the committed files and check that every code cell's
outputs come from its current source and are the ones the run saved, that nothing in them is private or
unsafe to publish (errors, local paths, keys, script elements), and that a
reader sees real answers where each notebook teaches with them.
"""

from __future__ import annotations

import copy
import importlib.util
import os
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("regenerate", ROOT / "notebooks" / "regenerate.py")
regenerate = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(regenerate)

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def committed(name: str) -> nbformat.NotebookNode:
    return nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)


def outputs(nb, starts: str = "") -> list[dict]:
    """The outputs of every code cell, or of the cells whose source starts with ``starts``."""
    return [o for c in nb.cells if c.cell_type == "code" and c.source.startswith(starts) for o in c.outputs]


def shown(nb, mime: str, starts: str = "") -> str:
    """What the outputs show as ``mime`` (``stream`` for printed text)."""
    return "\n".join(o.get("text", "") if mime == "stream" else o.get("data", {}).get(mime, "")
                     for o in outputs(nb, starts))


def falls(table: str) -> bool:
    """Whether a printed ``temperature n score ...`` table scores lower at its highest temperature than at 0."""
    rows = [line.split() for line in table.splitlines()]
    scores = {float(row[1]): float(row[3]) for row in rows if len(row) == 6 and row[0].isdigit()}
    return len(scores) >= 2 and scores[max(scores)] < scores[min(scores)]


def missing(name: str, nb) -> list[str]:
    """What a reader of notebook ``name`` should see in its saved outputs and does not."""
    plain, html = shown(nb, "text/plain"), shown(nb, "text/html")
    expected = {
        "quickstart": {
            "the notice that the local model answers": "running locally in this kernel" in plain,
            "a streamed answer about entropy": "entropy" in shown(nb, "text/html", "%%qwen -t 0.7").lower(),
            "a footer under each of the 8 answers": plain.count("ran locally, free") >= 8,
            "the result object printed": "complete stop" in shown(nb, "stream", "r = _qwen"),
        },
        "compare_sampling": {
            "7 comparisons exported as HTML, each with its summary":
                sum("<h3>" in o.get("data", {}).get("text/html", "") and "distinct" in o["data"]["text/html"]
                    for o in outputs(nb, "%%qwen_compare")) == 7,
            "the comparison ran locally": "ran locally, free" in html,
            "the DataFrame of a comparison": "<table" in shown(nb, "text/html", "by_temperature.to_dataframe"),
            "the panel of columns, run, with its static copy":
                "Comparison** of 2 runs" in shown(nb, "text/markdown", "import qwen_magics\n\npanel = qwen_magics.panel("),
            "the panel's columns as a %%qwen_compare cell":
                "%%qwen_compare -m local -t 0,1.3" in shown(nb, "stream", "print(panel.as_compare_cell())"),
        },
        "offline_sampling": {
            "temperature 0 repeats itself": "identical: True" in shown(nb, "stream"),
            "the tinted token view with its chart":
                "Token probabilities" in html and "<svg" in shown(nb, "text/html", "%%qwen -t 0 --logprobs"),
        },
        "sampling_lab": {
            "the whole vocabulary's distribution": "151,936 tokens have p > 0" in shown(nb, "stream"),
            "what each setting removes": "removed: top_p" in shown(nb, "stream"),
            "Sample 100 beside the computed shares": "observed in 100" in shown(nb, "stream"),
            "entropy along an answer": "Entropy of the next-token distribution" in shown(nb, "text/html", "%%qwen"),
            "the lab's static view": "The sampler&#x27;s stages" in html or "The sampler's stages" in html,
        },
        "datasets": {
            "every review labelled": "30 rows: 30 answered" in plain,
            "the labels as a DataFrame": all(
                word in shown(nb, "text/html", "labels[") for word in ("<table", "sentiment", "topic")),
        },
        "evaluate_sampling": {
            "the dry run's count": "20 rows x 3 settings x 2 repeats = 120 requests" in shown(nb, "stream"),
            "every answer scored": "120 requests: 120 answered" in plain,
            "the table, the chart of intervals and the sentence":
                all(part in shown(nb, "text/html", "%%qwen_eval data --expect answer --score number -m local -t 0,1,1.9 "
                                                   "--top-p 1 --repeats 2 --limit 20 --max-tokens 8 -o")
                    for part in ("<table", "<svg", 'class="interval"', "significant at 5%")),
            "accuracy falling as the temperature rises": falls(shown(nb, "text/plain", "import qwen_magics\n\nagain =")),
            "the paired test": "Wilcoxon signed-rank" in shown(nb, "text/plain", "temps.compare")
                               or "exact McNemar" in shown(nb, "text/plain", "temps.compare"),
            "the Python twin's answers from the run log": "(120 from the run log)" in plain,
        },
    }[name]
    return [what for what, seen in expected.items() if not seen]


@pytest.mark.parametrize("name", regenerate.GALLERY)
def test_the_committed_outputs_are_current_real_and_publishable(name):
    nb = committed(name)
    nbformat.validate(nb)
    assert regenerate.problems(nb) == [], f"run: python notebooks/regenerate.py {name}"
    assert missing(name, nb) == []
    assert not [o for o in outputs(nb) if WIDGET_VIEW in o.get("data", {}) and "text/html" in o["data"]]


# each check fails on a deliberately spoiled copy

@pytest.fixture(params=regenerate.GALLERY)
def spoiled(request):
    """A copy of one committed notebook, and its first code cell with outputs, to spoil."""
    nb = copy.deepcopy(committed(request.param))
    return nb, next(c for c in nb.cells if c.cell_type == "code" and c.outputs)


def test_a_cell_edited_without_regenerating_is_stale(spoiled):
    nb, cell = spoiled
    cell.source += "\n# edited"
    assert [p for p in regenerate.problems(nb) if "not from its current source" in p]


def test_an_output_edited_by_hand_is_found(spoiled):
    nb, cell = spoiled
    output = cell.outputs[0]
    if "text" in output:
        output.text = output.text.replace(output.text[:1], "X", 1)
    else:
        mime = next(m for m in output.data if m.startswith("text/"))
        output.data[mime] = "a nicer answer, typed in by hand"
    assert [p for p in regenerate.problems(nb) if "its outputs are not the ones the run saved" in p]


def test_an_output_added_or_removed_by_hand_is_found(spoiled):
    nb, cell = spoiled
    cell.outputs.append(nbformat.v4.new_output("stream", name="stdout", text="an extra line\n"))
    assert [p for p in regenerate.problems(nb) if "its outputs are not the ones the run saved" in p]
    cell.outputs[:] = []
    assert [p for p in regenerate.problems(nb) if "its outputs are not the ones the run saved" in p]


def test_an_error_output_is_found(spoiled):
    nb, cell = spoiled
    cell.outputs.append(nbformat.v4.new_output("error", ename="LocalModelError", evalue="boom", traceback=[]))
    assert [p for p in regenerate.problems(nb) if "error output LocalModelError: boom" in p]


@pytest.mark.parametrize("path", ["/home/ada/work/log.db", "/root/.cache/qwen-magics/x.gguf", "/tmp/qwen-gallery-1/",
                                  "/Users/ada/notes.txt", str(ROOT / "qwen_magics"), "{cache}/model.gguf"])
def test_a_local_path_is_found(spoiled, path):
    from qwen_magics.local.model import cache_dir

    nb, cell = spoiled
    text = f"saved to {path.format(cache=cache_dir())}\n"
    cell.outputs.append(nbformat.v4.new_output("stream", name="stdout", text=text))
    assert [p for p in regenerate.problems(nb) if p.startswith("a local path")]


def test_a_key_is_found_by_its_shape_and_by_its_value(spoiled, monkeypatch):
    nb, cell = spoiled
    monkeypatch.setenv("DASHSCOPE_API_KEY", "unusual-key-value-42")
    assert "an API key" not in regenerate.problems(nb)
    for text in ("sk-0123456789abcdef0123", "key unusual-key-value-42 here"):
        leaked = copy.deepcopy(nb)
        leaked.cells[nb.cells.index(cell)].outputs.append(nbformat.v4.new_output("stream", name="stdout", text=text))
        assert "an API key" in regenerate.problems(leaked)


def test_a_script_element_in_html_is_found(spoiled):
    nb, cell = spoiled
    cell.outputs.append(nbformat.v4.new_output("display_data", data={"text/html": "<SCRIPT>alert(1)</SCRIPT>",
                                                                     "text/plain": "x"}))
    assert [p for p in regenerate.problems(nb) if "<script>" in p]


@pytest.mark.parametrize("name", regenerate.GALLERY)
def test_a_notebook_without_outputs_misses_what_it_should_show(name):
    nb = committed(name)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
    assert missing(name, nb)


# the regeneration's own parts

def test_the_kernel_gets_no_secret_and_its_own_log(monkeypatch, tmp_path):
    private = {"DASHSCOPE_API_KEY": "k", "OPENAI_API_KEY": "k", "GITHUB_TOKEN": "t", "AWS_SECRET_ACCESS_KEY": "s",
               "QWEN_MAGICS_DASHSCOPE_URL": "http://127.0.0.1:1", "JPY_SESSION_NAME": "mine.ipynb"}
    for name, value in {**private, "QWEN_MAGICS_CACHE": str(tmp_path / "models")}.items():
        monkeypatch.setenv(name, value)
    env = regenerate.kernel_env(tmp_path)
    assert not set(private) & set(env)
    assert env["QWEN_MAGICS_CACHE"] == str(tmp_path / "models")  # where the local model is
    assert env["QWEN_MAGICS_LOG"] == str(tmp_path / "log.db") and env["IPYTHONDIR"] == str(tmp_path / "ipython")
    assert env["PATH"] == os.environ["PATH"]


def test_scrub_replaces_paths_drops_kernel_only_parts_and_hashes_sources():
    home = str(Path.home())
    cell = nbformat.v4.new_code_cell("%qwen_local", metadata={"execution": {"iopub.status.busy": "2025-01-01"}})
    cell.outputs = [
        nbformat.v4.new_output("stream", name="stdout", text=f"model: {home}/.cache/qwen-magics/m.gguf\n"),
        nbformat.v4.new_output("display_data", data={WIDGET_VIEW: {"model_id": "1"}, "text/html": "<b>grid</b>",
                                                     "text/plain": "Comparison"}),
        nbformat.v4.new_output("display_data", data={WIDGET_VIEW: {"model_id": "2"}, "text/plain": "Probs"}),
    ]
    nb = nbformat.v4.new_notebook(cells=[cell], metadata={"widgets": {"state": {}}})
    assert regenerate.problems(nb)
    regenerate.scrub(nb, [(home, "~")])
    assert regenerate.problems(nb) == []
    assert cell.outputs[0].text == "model: ~/.cache/qwen-magics/m.gguf\n"
    assert WIDGET_VIEW not in cell.outputs[1].data and cell.outputs[1].data["text/html"] == "<b>grid</b>"
    assert WIDGET_VIEW in cell.outputs[2].data  # nothing static to show in its place
    assert "execution" not in cell.metadata and "widgets" not in nb.metadata
    assert cell.metadata["qwen_magics"]["outputs_sha256"] == regenerate.outputs_sha256(cell.outputs)  # as scrubbed
    assert regenerate.problems(nbformat.reads(nbformat.writes(nb), as_version=4)) == []  # and as saved
