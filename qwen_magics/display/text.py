"""Plain-text lines about a run: its footer and its tool calls.

Shared by every surface (a cell, a terminal, a comparison's export) and by the
result's own display, so they read the same everywhere.  Values are read by
attribute; nothing of the package is imported, so any module may use these.
"""

from __future__ import annotations

import json
from typing import Any

TOOL_OUTPUT_SHOWN = 500


def footer_text(result: Any, error: bool = True) -> str:
    """``model · tokens · first token · speed · time · cost · state``: one line under an answer.

    ``error`` false: the run's error is shown as a line of its own (a cell raises it), so a failed or
    stopped run's footer names its state without repeating why.

    An answer replayed from the run log (``--cache``) names the logged run
    instead of timings and cost, which would describe the replay, not a sample.
    Where the server reported no token counts, the line says so, shows no cost,
    and gives the speed of the streamed text counted in Qwen's tokens, saying so.
    """
    u = result.usage
    reported = u is not None
    reasoning = f" / {u.reasoning} reasoning" if reported and u.reasoning else ""
    parts = [result.model, f"{u.input} in / {u.output} out{reasoning} tokens" if reported
             else "tokens not reported by the server"]
    answers = len(getattr(result, "choices", ()))
    if answers > 1:
        parts[1] += f" for all {answers} answers"
    cached_from = getattr(result, "cached_from", None)
    if cached_from:
        parts.append(f"from the run log (run {cached_from[:8]}), not a new sample")
    else:
        if result.ttft is not None:
            parts.append(f"first token {result.ttft:.2f} s")
        if result.tokens_per_second:
            parts.append(f"{result.tokens_per_second:.1f} tok/s")
        elif not reported and (speed := _estimated_speed(result)):
            parts.append(speed)
        if result.elapsed is not None:
            parts.append(f"{result.elapsed:.2f} s")
        if result.parameters.get("protocol") == "local":
            parts.append("ran locally, free")
        elif (cost := getattr(result, "cost_text", None)) is not None:
            parts.append(f"cost {cost}")
    if result.state in ("stopped", "incomplete") and not error:
        parts.append(result.state)
    elif result.state == "stopped":
        parts.append("stopped by user: partial answer")
    elif result.state == "incomplete":
        parts.append(f"incomplete: {result.error}")
    elif result.finish_reason and result.finish_reason != "stop":
        parts.append(f"finish: {result.finish_reason}")
    return " · ".join(parts)


def answer_footer_text(answer: Any, index: int, count: int) -> str:
    """The line under one of ``-n K`` answers (the request's footer, with its tokens, follows the last)."""
    finish = answer.finish_reason or answer.state
    return f"answer {index + 1} of {count} · {len(answer.text):,} characters · finish: {finish}"


def sources_text(sources: Any) -> str:
    """The pages a web search drew on, one per line."""
    return "Sources:\n" + "\n".join(f"{i}. {s.title or s.url} <{s.url}>" for i, s in enumerate(sources, start=1))


def _estimated_speed(result: Any) -> str | None:
    """``≈ 38 tok/s, counted with Qwen's tokenizer``: the streamed text's tokens over the generation time.

    None for an answer that arrived whole (``--no-stream``): it has no generation time of its own.
    """
    if result.elapsed is None or result.ttft is None or result.elapsed <= result.ttft:
        return None
    if result.parameters.get("stream") is False:
        return None
    tokens = getattr(result, "counted_output", 0)
    if not tokens:
        return None
    return f"≈ {tokens / (result.elapsed - result.ttft):.0f} tok/s, counted with Qwen's tokenizer"


def call_text(name: str, arguments: str) -> str:
    """``name(a=1, b='x')``: a call as shown to the person approving it (raw arguments if not a JSON object)."""
    try:
        args = json.loads(arguments or "{}")
    except ValueError:
        return f"{name}({arguments})"
    if not isinstance(args, dict):
        return f"{name}({arguments})"
    return f"{name}({', '.join(f'{k}={v!r}' for k, v in args.items())})"


def asked_text(call: dict[str, str]) -> str:
    """A tool call the answer asked for and nobody ran (``--tools`` not given, or the rounds ran out)."""
    return f"🔧 asks to call {call_text(call['name'], call['arguments'])}"


def tool_run_text(run: Any) -> str:
    """``🔧 f(a=1) → output`` (cut to a few hundred characters; the whole output is on the result)."""
    if not run.ran and not run.error:
        outcome = "not run: declined"
    elif len(run.output) <= TOOL_OUTPUT_SHOWN:
        outcome = run.output
    else:
        outcome = run.output[:TOOL_OUTPUT_SHOWN] + "…"
    return f"🔧 {call_text(run.name, run.arguments)} → {outcome}"
