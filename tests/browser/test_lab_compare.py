"""A 3-column %%qwen_compare and the sampling panel, in a real JupyterLab in headless Chromium.

The kernel talks to the loopback DashScope server; the answers carry script
tags and event handlers, which must reach the page as text and never run.
Set QWEN_MAGICS_SCREENSHOTS=DIR to keep the screenshots (the README's come from here).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from loopback import Script

from conftest import FAKE_KEY

pytestmark = [pytest.mark.browser]

sync_api = pytest.importorskip("playwright.sync_api", reason="run .ci/install-browser")
pytest.importorskip("jupyterlab", reason="run .ci/install-browser")

from .lab import JupyterLab, chromium_context, open_notebook, run_all, screenshot, write_notebook  # noqa: E402

EVIL = "Entropy counts **microstates**.\n\n<script>document.title='pwned'</script>\n\n<img src=x onerror=\"document.title='pwned'\">"
COLUMN_TEXT = ".jp-OutputArea .widget-html-content"


@pytest.fixture
def lab(dashscope, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    write_notebook(root / "compare.ipynb", [
        "%load_ext qwen_magics",
        "%%qwen_compare -m qwen3.5-plus,qwen-flash,qwen-plus -t 0.7\nExplain entropy in one paragraph.",
        "%qwen_panel",
    ])
    env = {"QWEN_MAGICS_DASHSCOPE_URL": dashscope.url, "DASHSCOPE_API_KEY": FAKE_KEY}
    with JupyterLab(root, env=env, state_dir=tmp_path / "lab-state") as server:
        yield server


def test_three_columns_stream_render_and_never_run_model_html(lab, dashscope, tmp_path):
    dashscope.enqueue(Script(reasoning="Let me think about microstates. " * 4, text=EVIL, chunk_chars=6,
                             chunk_delay=0.02, repeat=3))
    with sync_api.sync_playwright() as pw:
        context = chromium_context(pw, tmp_path / "profile")
        try:
            page = open_notebook(context, lab, "compare.ipynb")
            title = page.title()
            run_all(page, timeout=120_000)
            page.wait_for_function(f"() => [...document.querySelectorAll('{COLUMN_TEXT}')]"
                                   ".filter(e => e.textContent.includes('tok/s')).length >= 3", timeout=30_000)
            texts = page.locator(COLUMN_TEXT).all_text_contents()
            for label in ("-m qwen3.5-plus -t 0.7", "-m qwen-flash -t 0.7", "-m qwen-plus -t 0.7"):
                assert label in texts
            assert sum("Entropy counts microstates." in t for t in texts) == 3  # rendered markdown, streamed
            assert sum("<script>document.title='pwned'</script>" in t for t in texts) == 3  # shown as text
            footers = [t for t in texts if "tok/s" in t]
            assert len(footers) == 3 and all("first token" in f and "reasoning" in f for f in footers)
            assert page.title() == title  # neither the script nor the onerror handler ran
            assert page.locator(".jp-OutputArea script, .jp-OutputArea img[onerror]").count() == 0
            assert page.locator(".jp-OutputArea details summary").filter(has_text="Thinking (").count() == 3
            assert "distinct" in " ".join(texts).lower() or "similar" in " ".join(texts).lower()  # summary row
            shots = [screenshot(page, tmp_path / "compare.png")]
            # The panel: type a prompt, press Run, and the answer streams into it with its footer.
            page.locator(".jp-OutputArea textarea[placeholder='prompt']").fill("What does top_p do?")
            page.locator(".jp-OutputArea .widget-button").filter(has_text="Run").last.click()
            page.wait_for_function(f"() => [...document.querySelectorAll('{COLUMN_TEXT}')]"
                                   ".filter(e => e.textContent.includes('tok/s')).length >= 4", timeout=30_000)
            assert "Echo: What does top_p do?" in " ".join(page.locator(COLUMN_TEXT).all_text_contents())
            panel = page.locator(".jp-OutputArea-output").last
            panel.scroll_into_view_if_needed()
            panel.screenshot(path=str(tmp_path / "panel.png"))
            shots.append(tmp_path / "panel.png")
            assert all(s.stat().st_size > 20_000 for s in shots)
            keep = os.environ.get("QWEN_MAGICS_SCREENSHOTS")
            if keep:
                for shot in shots:
                    shutil.copy(shot, Path(keep) / shot.name)
        finally:
            context.close()
