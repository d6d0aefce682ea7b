"""Faults: whatever breaks, what streamed stays shown, the result says why, one clear line, the next cell runs.

Every fault comes from the loopback server's switches (HTTP errors, stalls, cut, malformed and empty
streams, moderation) or from the outside (a closed port, a host that does not resolve, Ctrl-C); the
real openai and dashscope SDKs meet them over 127.0.0.1, for each protocol (``--api``), in ``%%qwen``,
the panel and the comparison.  The fixtures (``ip``, ``kernel``) check afterwards that no thread, task
or socket was left behind and that the fake key was never shown.
"""

from __future__ import annotations

import socket
import time

import pytest
from loopback import Script

from .support import (APIS, FAST_RETRY, assert_clear_line, ask, ctrl_c_when, fault_case, generation_requests, run_panel,
                      visible, wait_for, widget_html)

TEXT = "alpha beta gamma delta epsilon"
PARTIAL = "alpha beta g"  # what arrives before a fault after two 6-character pieces


def cases(names) -> list:
    """(api, name) for every protocol and name."""
    return [pytest.param(api, name, id=f"{api}-{name}") for api in APIS for name in names]


def streamed(fault: str | None = None, **kw) -> Script:
    return Script(reasoning="", text=TEXT, chunk_chars=6, fault=fault, fault_after=2, **kw)


def gaps(server) -> list[float]:
    """Seconds between the starts of consecutive requests."""
    starts = [r.started for r in generation_requests(server)]
    return [b - a for a, b in zip(starts, starts[1:])]


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def assert_survived(ip, server, api, asked, *fragments, state="incomplete", partial="", reasoning=None):
    """One clear line; the result is marked with its cause; the partial answer is kept and still shown;
    and the shell answers the next cell (the fault is over by then)."""
    assert_clear_line(asked.error, *fragments)
    result = ip.user_ns["_qwen"]
    assert result.state == state
    assert result.error == ("stopped by user" if state == "stopped" else asked.error)
    if callable(partial):
        assert partial(result.text), result.text
    else:
        assert result.text == partial
    if reasoning is not None:
        assert reasoning(result.reasoning), result.reasoning
    shown = visible(ip)
    assert result.text in "".join(shown)
    assert not any(result.error in s for s in shown)  # the error is the cell's one line, not repeated above it
    if result.refused:  # nothing arrived: no footer either
        assert not any(s.startswith(f"{result.model} · ") for s in shown), shown
    else:
        assert shown[-1].endswith(f" · {state}")
    server.reset()  # whatever the fault left queued
    following = ask(ip, f"--api {api} -m qwen-plus the next cell")
    assert following.error is None and following.value.complete


# ----------------------------------------------------------------------------- %%qwen, in-process

@pytest.mark.parametrize("api", APIS)
def test_a_server_error_is_retried_with_growing_backoff_then_ends_in_one_clear_line(ip, dashscope, api):
    with fault_case("%%qwen", api, "HTTP 500, every try"):
        dashscope.enqueue(Script(status=500, repeat=3))
        asked = ask(ip, f"--api {api} -m qwen-plus hi")
        assert len(generation_requests(dashscope)) == 3  # the first try and max_retries = 2 retries, no more
        first, second = gaps(dashscope)
        assert 0.3 < first < second, (first, second)  # exponential backoff
        assert_survived(ip, dashscope, api, asked, "server error (500 ", "after 2 retries")


@pytest.mark.parametrize("status", [502, 503])
@pytest.mark.parametrize("api", APIS)
def test_gateway_errors_are_retried_as_told_then_end_in_one_clear_line(ip, dashscope, api, status):
    with fault_case("%%qwen", api, f"HTTP {status}, every try"):
        dashscope.enqueue(Script(status=status, headers=FAST_RETRY, repeat=3))
        asked = ask(ip, f"--api {api} -m qwen-plus hi")
        assert len(generation_requests(dashscope)) == 3
        # as the server asked (10 ms each): the SDKs' own backoff would wait 1.1 s or more over the two retries
        assert sum(gaps(dashscope)) < 1.1, gaps(dashscope)
        assert_survived(ip, dashscope, api, asked, f"server error ({status} ", "after 2 retries")


@pytest.mark.parametrize("api", APIS)
def test_a_passing_server_error_is_retried_and_the_answer_completes(ip, dashscope, api):
    with fault_case("%%qwen", api, "HTTP 503, once"):
        dashscope.enqueue(Script(status=503))
        asked = ask(ip, f"--api {api} -m qwen-plus hi")
        assert asked.error is None and asked.value.complete and len(generation_requests(dashscope)) == 2


@pytest.mark.parametrize("retry_after", ["1", None], ids=["with Retry-After", "without Retry-After"])
@pytest.mark.parametrize("api", APIS)
def test_a_rate_limit_is_waited_out_as_told_then_the_answer_completes(ip, dashscope, api, retry_after):
    with fault_case("%%qwen", api, f"HTTP 429 {'with' if retry_after else 'without'} Retry-After, once"):
        dashscope.enqueue(Script(status=429, retry_after=retry_after))
        asked = ask(ip, f"--api {api} -m qwen-plus hi")
        assert asked.error is None and asked.value.complete
        (gap,) = gaps(dashscope)
        assert gap >= (0.95 if retry_after else 0.3), gap  # Retry-After honoured; else the SDK's own backoff


@pytest.mark.parametrize("retry_after", ["1", None], ids=["with Retry-After", "without Retry-After"])
@pytest.mark.parametrize("api", APIS)
def test_a_rate_limit_that_does_not_clear_ends_in_one_clear_line(ip, dashscope, api, retry_after):
    with fault_case("%%qwen", api, f"HTTP 429 {'with' if retry_after else 'without'} Retry-After, every try"):
        ip.run_line_magic("config", "QwenMagics.max_retries = 1")
        dashscope.enqueue(Script(status=429, retry_after=retry_after, repeat=2))
        asked = ask(ip, f"--api {api} -m qwen-plus hi")
        assert len(generation_requests(dashscope)) <= 2
        assert_survived(ip, dashscope, api, asked, "Rate limited (429 ", "raise %config QwenMagics.max_retries")


@pytest.mark.parametrize("where", ["a closed port", "a host that does not resolve"])
@pytest.mark.parametrize("api", APIS)
def test_an_unreachable_endpoint_is_one_clear_line_soon(ip, dashscope, monkeypatch, api, where):
    with fault_case("%%qwen", api, f"unreachable: {where}"):
        url = (f"http://127.0.0.1:{closed_port()}" if where == "a closed port"
               else "http://dashscope-wrong-region.invalid")  # .invalid never resolves (RFC 2606)
        monkeypatch.setenv("QWEN_MAGICS_DASHSCOPE_URL", url)
        ip.run_line_magic("config", "QwenMagics.max_retries = 1")
        asked = ask(ip, f"--api {api} --region us -m qwen-plus hi")
        assert asked.seconds < 15
        monkeypatch.setenv("QWEN_MAGICS_DASHSCOPE_URL", dashscope.url)  # the network is back for the next cell
        assert_survived(ip, dashscope, api, asked, f"Could not reach {url}/", "the network, --region or --base-url")


@pytest.mark.parametrize("api", APIS)
def test_a_read_timeout_before_the_first_byte_is_one_clear_line(ip, dashscope, api):
    with fault_case("%%qwen", api, "read timeout before the first byte"):
        ip.run_line_magic("config", "QwenMagics.max_retries = 1")
        dashscope.enqueue(Script(first_byte_delay=20, repeat=2))
        asked = ask(ip, f"--api {api} -m qwen-plus --timeout 0.5 hi")
        assert asked.seconds < 10  # two tries of 0.5 s and a backoff, not the 20 s the server waits
        assert_survived(ip, dashscope, api, asked, "No answer from singapore within 0.5 s", "raise --timeout")


@pytest.mark.parametrize("api", APIS)
def test_a_read_timeout_mid_stream_keeps_the_partial_answer(ip, dashscope, api):
    with fault_case("%%qwen", api, "read timeout mid-stream"):
        dashscope.enqueue(streamed("stall", stall_seconds=20))
        asked = ask(ip, f"--api {api} -m qwen-plus --timeout 0.5 hi")
        assert asked.seconds < 10  # 0.5 s after the last piece, not the 20 s the server waits
        assert_survived(ip, dashscope, api, asked, "No answer from singapore within 0.5 s", partial=PARTIAL)


BROKEN = {  # fault: (what the line says, what streamed before)
    "cut": ("The stream ended ", PARTIAL),  # no finish reason, no [DONE] / response.completed
    "no_finish": ("The stream ended ", TEXT),  # every piece and [DONE], but no finish reason
    "reset": ("The connection dropped in the middle of the answer", lambda text: TEXT.startswith(text)),
    "malformed": ("The service sent a malformed stream event", PARTIAL),  # a `data: {not json` line
    "empty": ("The stream ended ", ""),  # nothing but the end
    "moderation_mid": ("Content moderation refused the answer", PARTIAL),
}


@pytest.mark.parametrize("api, fault", cases(BROKEN))
def test_a_broken_stream_keeps_what_streamed_and_says_why_in_one_line(ip, dashscope, api, fault):
    with fault_case("%%qwen", api, f"stream: {fault}"):
        message, partial = BROKEN[fault]
        dashscope.enqueue(streamed(fault))
        asked = ask(ip, f"--api {api} -m qwen-plus hi")
        assert_survived(ip, dashscope, api, asked, message, partial=partial)


@pytest.mark.parametrize("api", APIS)
def test_moderation_of_the_input_is_one_clear_line_and_nothing_streams(ip, dashscope, api):
    with fault_case("%%qwen", api, "moderation of the input"):
        asked = ask(ip, f"--api {api} -m qwen-plus tell me about [[blocked]]")
        assert_survived(ip, dashscope, api, asked, "Content moderation refused the input (400 ", "Rephrase the prompt")


SLOW = dict(chunk_chars=8, chunk_delay=0.01)
# Ctrl-C is pressed while the model pauses (a 20 s stall after 4 pieces of reasoning or of the answer), so that
# exactly what was kept is known; amid a fast stream, see test_ctrl_c_amid_a_fast_stream_stops_it_at_once.
PAUSED = dict(chunk_chars=8, fault="stall", stall_seconds=20)
CTRL_C = {  # stage: (the script, when to press Ctrl-C)
    "before the first byte": (Script(reasoning="r" * 80, text="t" * 80, first_byte_delay=20),
                              lambda ip, server: generation_requests(server)),
    "during the reasoning": (Script(reasoning="thinking " * 60, text="answer " * 60, fault_after=4, **PAUSED),
                             lambda ip, server: (r := ip.user_ns.get("_qwen")) and len(r.reasoning) >= 32),
    "during the answer": (Script(reasoning="a short thought", text="answer " * 200, fault_after=6, **PAUSED),
                          lambda ip, server: (r := ip.user_ns.get("_qwen")) and len(r.text) >= 32),
}
KEPT = {"before the first byte": (lambda text: text == "", lambda reasoning: reasoning == ""),
        "during the reasoning": (lambda text: text == "", lambda reasoning: reasoning == ("thinking " * 60)[:32]),
        "during the answer": (lambda text: text == ("answer " * 200)[:32],
                              lambda reasoning: reasoning == "a short thought")}


@pytest.mark.parametrize("stage", list(CTRL_C))
@pytest.mark.parametrize("api", APIS)
def test_ctrl_c_at_any_stage_keeps_what_streamed_and_marks_the_result_stopped(ip, dashscope, api, stage):
    with fault_case("%%qwen", api, f"Ctrl-C {stage}"):
        script, ready = CTRL_C[stage]
        dashscope.enqueue(script)
        ip.user_ns["_qwen"] = None
        with ctrl_c_when(lambda: ready(ip, dashscope), delay=0.2):
            asked = ask(ip, f"--api {api} -m qwen-plus hi")
        assert asked.seconds < 10  # stopped at once, not after the 20 s stall
        thought = ip.user_ns["_qwen"].reasoning
        assert any(s.startswith("Thinking") and thought in s for s in visible(ip)) or not thought  # still shown
        text_kept, reasoning_kept = KEPT[stage]
        assert_survived(ip, dashscope, api, asked, "Stopped by user: the partial answer is kept in _qwen",
                        state="stopped", partial=text_kept, reasoning=reasoning_kept)


def ctrl_c_amid_fast_streams(ip, server, apis: list[str], times: int) -> None:
    """Press Ctrl-C as soon as answers show, ``times`` times: each must stop its cell at once.

    A Ctrl-C that lands as the next piece arrives is the one a timeout built on asyncio.wait_for loses
    (Python 3.11, gh-86296): the cell then waits out the runner's 5 s grace while the stream goes on.
    So each press is checked by order, not by a tight clock: the server sees its stream closed within
    a few seconds of the cell's end, long before the stream's 10 s are up; and the cell ends before the
    grace a lost press would wait out, counted from the press.  A stream that a lost Ctrl-C left running
    in the background is also still a task on the package's loop when the fixture looks (before it
    cleans anything up), and fails the test.
    """
    for api in apis:
        ask(ip, f"--api {api} -m qwen-plus warm up")  # the SDK's import is not part of stopping
    for attempt in range(times):
        server.reset()
        server.enqueue(Script(reasoning="", text="word " * 1000, chunk_chars=5, chunk_delay=0.01))
        ip.user_ns["_qwen"] = None
        with ctrl_c_when(lambda: (r := ip.user_ns.get("_qwen")) and r.text) as press:
            asked = ask(ip, f"--api {apis[attempt % len(apis)]} -m qwen-plus hi")
        ended = time.monotonic()
        assert asked.error.startswith("Stopped by user"), asked.error
        assert press.at is not None and ended - press.at < 5, \
            f"Ctrl-C {attempt + 1} took {ended - press.at:.1f} s to stop the cell (the runner's 5 s grace: lost)"
        (stream,) = generation_requests(server)
        wait_for(lambda: stream.finished is not None, 3, f"the server to see stream {attempt + 1} closed")
        assert stream.finished - stream.started < 9, "the stream ran to its end: the Ctrl-C did not stop it"


def test_ctrl_c_amid_a_fast_stream_stops_it_at_once(ip, dashscope):
    with fault_case("%%qwen", "chat, responses", "Ctrl-C amid a fast stream, 20 times"):
        ctrl_c_amid_fast_streams(ip, dashscope, ["chat", "responses"], 20)


def test_ctrl_c_amid_a_fast_native_stream_stops_it_at_once(ip, dashscope):
    with fault_case("%%qwen", "dashscope", "Ctrl-C amid a fast stream, 40 times"):
        ctrl_c_amid_fast_streams(ip, dashscope, ["dashscope"], 40)


# ------------------------------------------------------------------------ the comparison and the panel

COLUMN_FAULTS = {  # name: (script for the first column, extra options, what its line says, what streamed)
    "HTTP 500, every try": (Script(status=500, headers=FAST_RETRY, repeat=3), "", "server error (500 ", ""),
    "HTTP 429, every try": (Script(status=429, headers=FAST_RETRY, repeat=3), "", "Rate limited (429 ", ""),
    "stream: cut": (streamed("cut"), "", "The stream ended ", PARTIAL),
    "stream: malformed": (streamed("malformed"), "", "The service sent a malformed stream event", PARTIAL),
    "stream: empty": (streamed("empty"), "", "The stream ended ", ""),
    "moderation of the answer": (streamed("moderation_mid"), "", "Content moderation refused the answer", PARTIAL),
    "read timeout mid-stream": (streamed("stall", stall_seconds=3), "--timeout 0.5", "No answer from singapore",
                                PARTIAL),
}


def ended_as_shown(result, last: str) -> bool:
    """A widget's last line: the footer marked incomplete, or, for a run refused before any output, its error
    line alone (no footer)."""
    if result.refused:
        return last.startswith('<div style="color:#a65e00">⚠ ') and "tokens" not in last
    return "incomplete: " in last


@pytest.mark.parametrize("api, name", cases(COLUMN_FAULTS))
def test_a_failing_column_keeps_its_partial_answer_and_its_line_while_the_others_finish(ip, dashscope, allowance,
                                                                                       api, name):
    allowance.connections = 3
    with fault_case("%%qwen_compare", api, name):
        script, extra, message, partial = COLUMN_FAULTS[name]
        dashscope.enqueue(script)
        asked = ask(ip, f"--api {api} -m qwen-plus,qwen-flash --concurrency 1 {extra}", "hi", magic="qwen_compare")
        assert asked.error is None  # one failing column never fails the cell
        failed, other = asked.value.columns
        assert failed.result.state == "incomplete" and failed.result.text == partial
        assert_clear_line(failed.result.error, message)
        shown = widget_html(failed.output)
        assert partial in "".join(shown) and ended_as_shown(failed.result, shown[-1])
        assert other.result.complete and other.result.text.startswith("**Echo:** hi")
        following = ask(ip, f"--api {api} -m qwen-plus the next cell")
        assert following.error is None and following.value.complete


@pytest.mark.parametrize("api", APIS)
def test_moderation_of_the_input_fails_every_column_in_one_line_each(ip, dashscope, api):
    with fault_case("%%qwen_compare", api, "moderation of the input"):
        asked = ask(ip, f"--api {api} -m qwen-plus,qwen-flash", "tell me about [[blocked]]", magic="qwen_compare")
        assert asked.error is None
        for column in asked.value.columns:
            assert column.result.state == "incomplete"
            assert_clear_line(column.result.error, "Content moderation refused the input")


@pytest.mark.parametrize("stage", ["during the reasoning", "during the answer"])
@pytest.mark.parametrize("api", APIS)
def test_ctrl_c_stops_every_column_and_each_keeps_its_partial_answer(ip, dashscope, allowance, api, stage):
    allowance.connections = 3
    with fault_case("%%qwen_compare", api, f"Ctrl-C {stage}"):
        dashscope.enqueue(Script(reasoning="thinking " * 60, text="answer " * 200, **SLOW, repeat=2))
        ip.user_ns.pop("_qwen_compare", None)
        mark = "Thinking" if stage == "during the reasoning" else "answer answer"

        def ready():
            comparison = ip.user_ns.get("_qwen_compare")
            return comparison and all(mark in "".join(widget_html(c.output)) for c in comparison.columns)

        with ctrl_c_when(ready):
            asked = ask(ip, f"--api {api} -m qwen-plus,qwen-flash --concurrency 2", "hi", magic="qwen_compare")
        assert_clear_line(asked.error, "Stopped by user", "every column keeps its partial answer")
        for column in ip.user_ns["_qwen_compare"].columns:
            result = wait_for(lambda: column.result, 10, "the column's result")
            assert result.state == "stopped" and ("answer " * 200).startswith(result.text)
            assert result.reasoning and ("thinking " * 60).startswith(result.reasoning)
            assert "stopped by user" in widget_html(column.output)[-1]
        following = ask(ip, f"--api {api} -m qwen-plus the next cell")
        assert following.error is None and following.value.complete


def panel_for(ip, api: str):
    ip.run_line_magic("config", f"QwenMagics.api = '{api}'")
    panel = ip.magics_manager.registry["QwenWidgetMagics"].make_panel()
    panel.model.value, panel.prompt.value = "qwen-plus", "hi"
    return panel


PANEL_FAULTS = ["HTTP 500, every try", "stream: cut", "moderation of the answer", "read timeout mid-stream"]


@pytest.mark.parametrize("api, name", cases(PANEL_FAULTS))
def test_the_panel_shows_a_failure_with_its_partial_answer_and_runs_again(ip, dashscope, allowance, api, name):
    allowance.connections = 4  # the panel lists the models too; a changed timeout makes a new client
    with fault_case("%qwen_panel", api, name):
        script, extra, message, partial = COLUMN_FAULTS[name]
        if extra:
            ip.run_line_magic("config", "QwenMagics.timeout = 0.5")
        dashscope.enqueue(script)
        panel = panel_for(ip, api)
        result = run_panel(panel).results[0]
        assert result.state == "incomplete" and result.text == partial
        assert_clear_line(result.error, message)
        assert partial in "".join(widget_html(panel.output)) and ended_as_shown(result, widget_html(panel.output)[-1])
        ip.run_line_magic("config", "QwenMagics.timeout = 60")
        assert run_panel(panel).results[0].complete


@pytest.mark.parametrize("api", APIS)
def test_the_panels_stop_button_keeps_the_partial_reasoning(ip, dashscope, api):
    with fault_case("%qwen_panel", api, "Stop during the reasoning"):
        dashscope.enqueue(Script(reasoning="thinking " * 60, text="answer " * 60, **SLOW))
        panel = panel_for(ip, api)
        panel.run()
        wait_for(lambda: "Thinking" in "".join(widget_html(panel.output)), what="the reasoning to show")
        panel.stop_button.click()
        wait_for(lambda: panel.result is not None, 10, "the panel to stop")
        result = panel.result
        assert result.state == "stopped" and result.text == "" and result.reasoning
        assert "stopped by user" in widget_html(panel.output)[-1]
        assert run_panel(panel).results[0].complete


# ------------------------------------------------------------------------------------- a real kernel

@pytest.mark.parametrize("api", APIS)
def test_in_a_real_kernel_a_failed_cell_shows_its_partial_answer_and_one_line_and_the_next_cell_runs(
        kernel, dashscope, api):
    for fault in ("cut", "moderation_mid"):
        with fault_case("%%qwen in a kernel", api, f"stream: {fault}"):
            message, partial = BROKEN[fault]
            dashscope.enqueue(streamed(fault))
            cell = kernel.run(f"%%qwen --api {api} -m qwen-plus\nhi")
            assert_clear_line(cell.one_error_line(), message)
            assert partial in "".join(cell.visible) and cell.visible[-1].endswith(" · incomplete")
            assert kernel.printed("print(_qwen.state, '|', _qwen.error)").strip() == f"incomplete | {cell.evalue}"

    with fault_case("%%qwen in a kernel", api, "HTTP 503, every try"):
        dashscope.enqueue(Script(status=503, headers=FAST_RETRY, repeat=3))
        cell = kernel.run(f"%%qwen --api {api} -m qwen-plus\nhi")
        assert_clear_line(cell.one_error_line(), "server error (503 ")
        dashscope.reset()  # what the tries left queued

    with fault_case("%%qwen in a kernel", api, "kernel interrupt during the reasoning"):
        dashscope.enqueue(Script(reasoning="thinking " * 100, text="answer " * 100, fault_after=4, **PAUSED))
        thinking_shown, pressed = [], []

        def interrupt_once_thinking_shows(messages):
            shown = [m["content"]["data"].get("text/plain", "") for m in messages
                     if m["msg_type"] in ("display_data", "update_display_data")]
            if not thinking_shown and any(text.startswith("Thinking") for text in shown):
                thinking_shown.append(time.monotonic())
            if thinking_shown and not pressed and time.monotonic() > thinking_shown[0] + 0.3:
                kernel.km.interrupt_kernel()
                pressed.append(True)

        cell = kernel.run(f"%%qwen --api {api} -m qwen-plus\nhi", watch=interrupt_once_thinking_shows)
        assert cell.one_error_line() == "Stopped by user: the partial answer is kept in _qwen"
        assert cell.visible[-1].endswith(" · stopped")
        kept = kernel.printed("print(_qwen.state, bool(_qwen.reasoning), repr(_qwen.text))")
        assert kept.strip() == "stopped True ''"

    with fault_case("%%qwen_compare in a kernel", api, "stream: cut"):
        dashscope.enqueue(streamed("cut"))
        cell = kernel.run(f"%%qwen_compare --api {api} -m qwen-plus,qwen-flash --concurrency 1\nhi")
        assert cell.status == "ok"
        html = "".join(cell.widget_html)
        assert PARTIAL in html and "incomplete: The stream ended " in html and "Echo:</strong> hi" in html

    with fault_case("%qwen_panel in a kernel", api, "stream: cut"):
        dashscope.enqueue(streamed("cut"))
        cell = kernel.ok(f"%config QwenMagics.api = '{api}'\n"
                         "p = get_ipython().magics_manager.registry['QwenWidgetMagics'].make_panel()\n"
                         "p.model.value, p.prompt.value = 'qwen-plus', 'hi'\n"
                         "r = p.run().result(30).results[0]\nprint(r.state, '|', r.text)")
        assert cell.stream("stdout").strip() == f"incomplete | {PARTIAL}"
        assert PARTIAL in "".join(cell.widget_html)

    following = kernel.run(f"%qwen --api {api} -m qwen-plus the next cell")
    assert following.status == "ok" and following.visible[-1].startswith("qwen-plus · ")
