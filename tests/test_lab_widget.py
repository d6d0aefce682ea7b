"""The sampling lab's widget, ``qwen_magics.lab`` and ``%qwen_lab`` on the real 0.5B, in a real shell
(the browser tests drive the same widget in JupyterLab and Notebook 7)."""

from __future__ import annotations

import threading
import time

import pytest
from IPython.core.error import UsageError

import qwen_magics
from qwen_magics.errors import InvalidInput
from qwen_magics.local.model import load, resolve, unload
from qwen_magics.widgets.lab import BARS, LabWidget

pytestmark = pytest.mark.local

PROMPT = "I went to the"


@pytest.fixture(scope="module", autouse=True)
def model() -> object:
    yield load(resolve("local:0.5b"))
    unload()


def test_the_magic_and_the_function_make_the_widget_over_the_shared_model(ip) -> None:
    widget = ip.run_line_magic("qwen_lab", f"-m local:0.5b --seed 4 --top-k 5 {PROMPT}")
    assert isinstance(widget, LabWidget)
    assert widget.lab.model is load(resolve("local:0.5b")) and widget.lab.settings.top_k == 5
    assert widget.sliders["top_k"].value == 5
    assert len(widget.distribution()) == 5

    from_python = qwen_magics.lab(PROMPT, model="local:0.5b", seed=4, top_k=5)
    assert from_python.step() == widget.step()
    with pytest.raises(UsageError, match="needs a prompt"):
        ip.run_line_magic("qwen_lab", "-m local:0.5b")
    with pytest.raises(UsageError, match="top_p=2.0 is not valid"):
        ip.run_line_magic("qwen_lab", f"-m local:0.5b --top-p 2 {PROMPT}")
    cell = ip.run_cell_magic("qwen_lab", "-m local:0.5b", PROMPT)
    assert cell.lab.prompt == PROMPT


def test_clicking_a_bar_takes_it_back_removes_it_and_sliders_need_no_model() -> None:
    widget = qwen_magics.lab(PROMPT, model="local:0.5b", seed=1)
    names = [button.description for button in widget.bar_buttons]
    assert len(names) == BARS and names[0] == "␣park"

    widget.bar_buttons[2].click()
    assert widget.tokens == [" zoo"] and "zoo" in widget.text_view.value
    assert "rank 3" in widget.summary.value
    widget.back_button.click()
    assert widget.tokens == [] and widget.back_button.disabled

    # The model's lock held elsewhere: a slider that needed the model would wait here.
    lock = widget.lab.model.lock
    held, release = threading.Event(), threading.Event()
    holder = threading.Thread(target=lambda: (lock.acquire(), held.set(), release.wait(), lock.release()))
    holder.start()
    held.wait()
    try:
        before, calls = [v.value for v in widget.bar_values], widget.lab.calls
        started = time.perf_counter()
        widget.sliders["temperature"].value = 0.5
        assert time.perf_counter() - started < 5
        assert [v.value for v in widget.bar_values] != before
        widget.sliders["top_k"].value = 2
        assert "cut by top_k" in widget.bar_values[2].value and "top_k</b> k=2: 2 kept" in widget.stages_view.value
        widget.draw_button.click()
        assert "<svg" in widget.counts.value and "observed in 100" in widget.counts.value
        assert widget.lab.calls == calls and f"{calls} model calls" in widget.summary.value
    finally:
        release.set()
        holder.join()


def test_run_to_end_streams_and_stops_and_pieces_are_escaped() -> None:
    widget = qwen_magics.lab("<b>bold</b> <script>x()</script> is", model="local:0.5b", seed=2)
    bundle = widget._repr_mimebundle_()
    assert "<script>" not in bundle["text/html"] and "&lt;script&gt;" in bundle["text/html"]
    assert "application/vnd.jupyter.widget-view+json" in bundle

    widget.run_button.click()
    with pytest.raises(InvalidInput, match="running to the end"):
        widget.step()
    deadline = time.monotonic() + 60
    while len(widget.tokens) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    widget.stop_button.click()
    worker = widget._worker
    if worker is not None:
        worker.join(30)
    taken = len(widget.tokens)
    assert 3 <= taken < 200 and not widget.run_button.disabled
    time.sleep(0.3)
    assert len(widget.tokens) == taken
    assert widget.lab.model.lock.acquire(blocking=False)
    widget.lab.model.lock.release()
