"""``%%qwen_map``'s progress view in JupyterLab and Notebook 7: one display updated in place while the rows
run (rows done / failed / in flight, tokens, rows/s, ETA), a small table of the latest answers, and the
end line; run again, it sends only the row that failed.

The loopback server paces every answer, refuses the row holding its moderation marker, and echoes each
prompt back, so the last row's answer carries a script tag, which must show as text and never run.
"""

from __future__ import annotations

import re

import pytest
from loopback import BLOCK_MARKER, Script

from .lab import PANEL, open_notebook, page_errors, run_all

HOSTILE = "<script>document.title='pwned'</script> last review"
ROWS = [f"review {i}" for i in range(1, 7)] + [f"{BLOCK_MARKER} review"] + [f"review {i}" for i in range(8, 14)] \
    + [HOSTILE]
NOTEBOOKS = {"map.ipynb": [
    "%load_ext qwen_magics",
    f"rows = {ROWS!r}",
    "%%qwen_map rows -m qwen-flash --concurrency 2\nSay: {item}",
]}
MAP_CELL = f"{PANEL} .jp-CodeCell:nth-child(3)"
VIEW = f"{MAP_CELL} .qwen-map"
END_LINE = re.compile(r"14 rows: 13 answered, 1 failed \(moderation x1\): run the cell again to retry the failed rows")
# Every distinct line of figures the progress view shows while the rows run.
WATCH_STATS = """sel => {
    window.__stats = [];
    new MutationObserver(() => {
        const text = document.querySelector(sel + ' > span')?.textContent;
        if (text && window.__stats[window.__stats.length - 1] !== text) window.__stats.push(text);
    }).observe(document.body, {subtree: true, childList: true, characterData: true});
}"""


def figures(stats: str) -> dict[str, float]:
    """The numbers of a stats line (``5/14 rows · 1 failed · 2 in flight · 80 in / 60 out tokens · 3.1 rows/s``)."""
    found = re.search(r"(\d+)/(\d+) rows · (\d+) failed · (\d+) in flight · ([\d,]+) in / ([\d,]+) out tokens · "
                      r"([\d.]+) rows/s", stats)
    assert found, stats
    names = ("done", "total", "failed", "in_flight", "tokens_in", "tokens_out", "rate")
    return {name: float(value.replace(",", "")) for name, value in zip(names, found.groups())}


@pytest.fixture(scope="module")
def page(jupyter, browser, server):
    """The notebook open, before any run."""
    page = open_notebook(browser, jupyter, "map.ipynb")
    return page


def test_one_view_counts_every_row_live_and_shows_the_answers_as_text(page, server):
    server.reset()
    server.enqueue(Script(chunk_chars=8, chunk_delay=0.05, repeat=len(ROWS) - 1))  # the refused row takes none
    page.evaluate(WATCH_STATS, VIEW)
    run_all(page, timeout=120_000)
    assert len(server.requests) == len(ROWS)

    assert page.locator(VIEW).count() == 1  # one display, updated in place
    final = figures(page.locator(f"{VIEW} > span").text_content())
    assert (final["done"], final["total"], final["failed"], final["in_flight"]) == (14, 14, 1, 0)
    assert final["tokens_in"] > 0 and final["tokens_out"] >= 13 and final["rate"] > 0
    assert "ETA" not in page.locator(f"{VIEW} > span").text_content()
    assert END_LINE.search(page.locator(VIEW).text_content()), page.locator(VIEW).text_content()
    progress = page.locator(f"{VIEW} progress")
    assert progress.get_attribute("value") == progress.get_attribute("max") == "14"

    seen = page.evaluate("window.__stats")
    done = [figures(s)["done"] for s in seen]
    assert done == sorted(done) and len(set(done)) >= 4, seen  # the counts climbed in steps
    assert any(figures(s)["in_flight"] == 2 for s in seen), seen  # --concurrency 2 was seen at work
    assert any("ETA" in s for s in seen[:-1]), seen

    latest = page.locator(f"{VIEW} table tr")
    assert latest.count() == 3
    assert any(HOSTILE in t for t in latest.all_text_contents()), latest.all_text_contents()  # as text
    table = page.locator(f"{MAP_CELL} .jp-OutputArea-output table.dataframe")  # the returned DataFrame
    assert table.locator("tbody tr").count() == 14
    hostile_row = table.locator("tbody tr").filter(has_text="<script>document.title='pwned'</script>")  # cut by pandas
    assert hostile_row.filter(has_text="complete").count() == 1
    assert table.locator("tbody tr").filter(has_text="failed").count() == 1
    assert page.locator(".jp-OutputArea script").count() == 0
    assert "pwned" not in page.title()
    assert page_errors(page) == []


def test_run_again_sends_only_the_failed_row(page, server):
    server.reset()
    run_all(page, timeout=60_000)
    assert [BLOCK_MARKER in str(r.body.get("messages")) for r in server.requests] == [True]
    text = page.locator(VIEW).text_content()
    assert "13 answered (13 from the run log), 1 failed (moderation x1)" in text, text
    final = figures(page.locator(f"{VIEW} > span").text_content())
    assert (final["done"], final["failed"], final["in_flight"]) == (14, 1, 0)
    assert page.locator(VIEW).count() == 1
    assert page_errors(page) == []
