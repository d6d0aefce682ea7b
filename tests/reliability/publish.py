"""The reliability suite's figures: where a run leaves them, what in them is not clean, and the README table.

``python -m pytest tests/reliability`` writes the figures of every full run of the suite, failures
included, to :func:`figures_path`; the run fails when a figure is not clean (:func:`problems`).
Tests never touch the checkout: this command puts the last full run's figures into README.md::

    python -m tests.reliability.publish [--figures FILE] [--readme README.md]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

BEGIN, END = "<!-- reliability -->", "<!-- /reliability -->"
README = Path(__file__).resolve().parents[2] / "README.md"


def figures_path() -> Path:
    """``$QWEN_MAGICS_FIGURES``, else ``qwen-magics-reliability.json`` in the temp folder: outside the checkout."""
    return Path(os.environ.get("QWEN_MAGICS_FIGURES") or Path(tempfile.gettempdir()) / "qwen-magics-reliability.json")


def _named(items: list[str] | dict[str, str], most: int = 8) -> str:
    """Up to ``most`` names in backticks (with what happened, for a dict), then how many more."""
    shown = [f"`{k}` ({v})" for k, v in items.items()] if isinstance(items, dict) else [f"`{k}`" for k in items]
    return ", ".join(shown[:most]) + (f" and {len(shown) - most} more" if len(shown) > most else "")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def problems(report: dict[str, Any]) -> list[str]:
    """What in ``report`` is not clean, one line each; [] when every figure is."""
    f = report["figures"]
    out = []
    if report["failed"]:
        out.append(f"{_count(len(report['failed']), 'test')} failed: {', '.join(report['failed'])}")
    if lost := sorted(set(f["faults_tried"]) - set(f["faults_survived"])):
        out.append(f"{_count(len(lost), 'fault')} not survived: {'; '.join(lost)}")
    if unclear := sorted(set(f["bad_tried"]) - set(f["bad_handled"])):
        out.append(f"{_count(len(unclear), 'bad input')} not handled in one line: {'; '.join(unclear)}")
    for key, what in (("key_found", "fragments of the key found"), ("unsafe", "executable or injected elements"),
                      ("leaks", "leaks found")):
        if f[key]:
            out.append(f"{f[key]} {what}")
    if f["hangs"]:
        out.append(f"{_count(len(f['hangs']), 'hang')}: " + "; ".join(f"{k} ({v})" for k, v in f["hangs"].items()))
    return out


def markdown(report: dict[str, Any]) -> str:
    """The table (and the line under it) that goes between the README's markers."""
    f = report["figures"]
    lost = sorted(set(f["faults_tried"]) - set(f["faults_survived"]))
    handled = list(f["bad_handled"].values())
    before, service, warned = (handled.count(h) for h in ("before sending", "by the service", "warned"))
    unclear = sorted(set(f["bad_tried"]) - set(f["bad_handled"]))
    load = f["load"]
    load_hangs = {k: v for k, v in f["hangs"].items() if "test_load.py" in k}
    rows = [
        ("Faults tried and survived: HTTP 500/502/503, 429 with and without Retry-After, refused connection, "
         "DNS failure, read timeout before the first byte and mid-stream, cut stream, stream without a finish "
         "reason, malformed SSE line, empty stream, moderation of the input and of the answer, Ctrl-C before the "
         "first byte, in the reasoning and in the answer; over `--api chat`, `responses` and `dashscope`, in "
         "`%%qwen`, the panel and the comparison, in-process and in a real kernel",
         f"**{len(f['faults_survived'])} of {len(f['faults_tried'])} survived**: what streamed stays shown, the "
         "result says `incomplete`/`stopped` and why, one clear line, the next cell runs"
         + (f"; not survived: {_named(lost)}" if lost else "")),
        ("Bad inputs tried: sampling values out of range, negative or huge max tokens, unknown options, unknown "
         "model, empty prompts, unresolved `{name}`, raising expressions, a 50 MB variable, bytes and non-UTF-8 "
         "text, missing and non-image files, malformed JSON schemas, odd conversation names",
         f"**{len(handled)} of {len(f['bad_tried'])} handled in one line**: {before} refused before anything was "
         f"sent, {service} refused by the service, {warned} sent with a one-line warning"
         + (f"; not handled: {_named(unclear)}" if unclear else "")),
        ("Secrets: a known fake key, scanned for in every iopub message, log record (DEBUG), repr, exception "
         "message and a saved .ipynb",
         f"{f['key_chars'] / 1e6:.1f} MB in {f['key_scans']} scans (after each test: its outputs, log records, "
         f"reprs and errors, or its kernel's messages), {f['log_records']:,} log records and a "
         f"{f['notebook_chars'] / 1e3:.0f} kB .ipynb among them: **{f['key_found']} fragments of the key found**"),
        ("Untrusted output: `<script>`, event handlers, `javascript:` links, iframes and more, in answers and "
         "reasoning, streamed into cells, columns and the panel",
         f"{len(f['payloads'])} hostile payloads, {f['html_audited']:,} rendered HTML bundles and widget values "
         f"audited: **{f['unsafe']} executable or injected elements**"),
        ("Load: 16 concurrent comparison columns per protocol, 200 sequential cells in a real kernel and a "
         "1,000-row `%%qwen_map` at concurrency 16, random faults in 10% of requests",
         f"{load['complete'] + load['clear_errors']:,} runs ({load['columns']} columns, {load['cells']} cells, "
         f"{load.get('map_rows', 0):,} map rows) making {load['requests']:,} requests, {load['injected']} of them "
         "with an injected fault: "
         f"{load['complete']:,} complete answers, {load['clear_errors']:,} clear one-line errors, "
         f"**{_count(len(load_hangs), 'hang')}**" + (f": {_named(load_hangs)}" if load_hangs else "")),
        ("Hangs: every magic run in-process, every panel run and every cell in a kernel, under a watchdog that "
         "counts a run still going after its time (60 s for a magic or cell, 30 s for a panel run, unless the test "
         "says less), names it and stops it (Ctrl-C, the panel's Stop button, a kernel interrupt)",
         f"{f['watched']:,} runs watched ({f.get('panel_runs', 0)} of them panel runs): "
         f"**{_count(len(f['hangs']), 'hang')}**"
         + (f": {_named(f['hangs'])}" if f["hangs"] else "")),
        ("Leaks: threads, tasks on the package's loop, sockets (beyond the SDKs' keep-alive pools), checked "
         "after every test", f"{f['leak_checks']} checks: **{f['leaks']} leaks found**"),
    ]
    lines = ["| what was tried | outcome |", "|---|---|"] + [f"| {what} | {outcome} |" for what, outcome in rows]
    outcomes = ", ".join(f"{n} {name}" for name, n in report["outcomes"].items() if n)
    lines.append(f"\n{report['tests']} tests ({outcomes}), {report['seconds']:.0f} s on this machine "
                 f"({report['cores']} cores)." + (f" Failed: {_named(report['failed'])}." if report["failed"] else ""))
    return "\n".join(lines)


def write_readme(body: str, readme: Path = README) -> bool:
    """Put ``body`` between the README's markers; True when the file changed."""
    text = readme.read_text(encoding="utf-8")
    if text.count(BEGIN) != 1 or text.count(END) != 1 or text.index(BEGIN) > text.index(END):
        raise SystemExit(f"publish: {readme} needs one {BEGIN} … {END} pair around the table")
    head, rest = text.split(BEGIN, 1)
    new = f"{head}{BEGIN}\n{body}\n{END}{rest.split(END, 1)[1]}"
    if new != text:
        readme.write_text(new, encoding="utf-8")
    return new != text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.reliability.publish",
                                     description="Put the last full reliability run's figures into README.md.")
    parser.add_argument("--figures", type=Path, default=figures_path(), help="default: %(default)s")
    parser.add_argument("--readme", type=Path, default=README, help="default: %(default)s")
    args = parser.parse_args(argv)
    try:
        report = json.loads(args.figures.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        print(f"publish: no figures in {args.figures} ({err}); run `python -m pytest tests/reliability` first",
              file=sys.stderr)
        return 1
    changed = write_readme(markdown(report), args.readme)
    unclean = problems(report)
    print(f"publish: {args.readme} {'updated' if changed else 'already current'} with the figures of "
          f"{report['tests']} tests" + (f"; not clean: {len(unclean)} problems, named in the table" if unclean else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
