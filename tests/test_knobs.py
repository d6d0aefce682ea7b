"""Every sampling knob Model Studio takes: penalties, several answers, web search and any other field.

Each travels where its protocol takes it (the loopback records the bodies), is checked before anything
is sent, and shows in the cell.
"""

import pytest
from IPython.core.error import UsageError
from conftest import outputs_text
from loopback import Script

CHAT = "/compatible-mode/v1/chat/completions"


def parameters(request):
    """The sampling fields of a recorded request, whatever the protocol (native nests them)."""
    return request.body.get("parameters", request.body)


@pytest.mark.parametrize("api", ["chat", "dashscope"])
def test_the_penalties_travel_where_each_protocol_takes_them(ip, dashscope, api):
    result = ip.run_line_magic("qwen", f"--api {api} -m qwen-plus --presence-penalty 1.5 --repetition-penalty 1.1 hi")
    sent = parameters(dashscope.requests[-1])
    assert (sent["presence_penalty"], sent["repetition_penalty"]) == (1.5, 1.1)
    assert (result.parameters["presence_penalty"], result.parameters["repetition_penalty"]) == (1.5, 1.1)


def test_the_penalties_can_be_defaults_and_the_responses_api_refuses_them_in_one_line(ip, dashscope):
    ip.run_line_magic("config", "QwenMagics.presence_penalty = 0.5")
    ip.run_line_magic("qwen", "-m qwen-plus hi")
    assert dashscope.requests[-1].body["presence_penalty"] == 0.5
    sent = len(dashscope.requests)
    with pytest.raises(UsageError, match=r"^--presence-penalty is not available with --api responses\. Use --api "):
        ip.run_line_magic("qwen", "--api responses -m qwen-plus hi")
    ip.run_line_magic("config", "QwenMagics.presence_penalty = None")
    with pytest.raises(UsageError, match="--repetition-penalty is not available with --api responses"):
        ip.run_line_magic("qwen", "--api responses -m qwen-plus --repetition-penalty 1.2 hi")
    assert len(dashscope.requests) == sent


@pytest.mark.parametrize("options, line", [
    ("--presence-penalty 2.5", r"^presence_penalty 2\.5 is out of range\. Use a value in \[-2, 2\]"),
    ("--presence-penalty -3", r"^presence_penalty -3\.0 is out of range"),
    ("--repetition-penalty 0", r"^repetition_penalty 0\.0 is out of range\. Use a value above 0 \(1\.0 means none\)"),
    ("-n 5", r"^n 5 is out of range\. Use a value between 1 and 4"),
    ("--param temperature", r"^--param 'temperature' is not KEY=VALUE\. Write e\.g\. --param enable_search=true"),
])
def test_bad_values_are_one_line_before_anything_is_sent(ip, dashscope, options, line):
    with pytest.raises(UsageError, match=line):
        ip.run_line_magic("qwen", f"-m qwen-plus {options} hi")
    assert dashscope.requests == []


def test_n_answers_come_from_one_chat_request_and_show_one_after_another(ip, dashscope):
    result = ip.run_line_magic("qwen", "-m qwen-plus --no-thinking -n 3 Name a colour")
    assert len(dashscope.requests) == 1 and dashscope.requests[0].body["n"] == 3
    texts = [choice.text for choice in result.choices]
    assert texts[0].startswith("**Echo:** Name a colour")
    assert texts[1:] == [f"({k}) {texts[0]}" for k in (2, 3)]
    assert all(choice.complete and choice.finish_reason == "stop" for choice in result.choices)
    shown = [out["data"]["text/plain"] for out in ip.display_pub.outputs]
    assert shown.index("── Answer 2 of 3 ──") < shown.index("── Answer 3 of 3 ──")
    assert sum(texts[0] in text for text in shown) >= 3
    footers = [text for text in shown if text.startswith("answer ")]
    assert footers == [f"answer {k} of 3 · {len(texts[k - 1]):,} characters · finish: stop" for k in (1, 2, 3)]
    assert shown.index(footers[0]) < shown.index("── Answer 2 of 3 ──") < shown.index(footers[1])
    assert " for all 3 answers · " in shown[-1]  # the request's footer: its tokens cover every answer
    assert result.parameters["n"] == 3


@pytest.mark.parametrize("options, why", [
    ("--api chat -m qwen3.5-plus", "qwen3.5-plus thinks here, and a thinking request takes one answer"),
    ("--api dashscope -m qwen-plus --no-thinking", "--api dashscope takes one answer per request"),
    ("--api responses -m qwen-plus --no-thinking", "--api responses takes one answer per request"),
])
def test_where_one_request_cannot_carry_n_the_answers_are_separate_requests_and_the_cell_says_so(
        ip, dashscope, options, why):
    result = ip.run_line_magic("qwen", f"{options} -n 2 Name a colour")
    assert len(dashscope.requests) == 2 and all("n" not in r.body for r in dashscope.requests)
    assert len(result.choices) == 2 and all(choice.complete for choice in result.choices)
    notices = [o["data"]["text/plain"] for o in ip.display_pub.outputs if o["data"]["text/plain"].startswith("⚠")]
    assert notices == [f"⚠ -n 2: {why}, so the 2 answers are made as 2 requests"]
    assert "── Answer 2 of 2 ──" in outputs_text(ip)


@pytest.mark.parametrize("api", ["chat", "dashscope", "responses"])
def test_web_search_lists_the_cited_pages_under_the_answer_as_links(ip, dashscope, api):
    result = ip.run_line_magic("qwen", f"--api {api} -m qwen-plus --no-thinking --search What is entropy?")
    body = dashscope.requests[-1].body
    if api == "responses":
        assert {"type": "web_search"} in body["tools"]
    else:
        assert parameters(dashscope.requests[-1])["enable_search"] is True
        assert parameters(dashscope.requests[-1])["search_options"] == {"enable_source": True}
    assert [(s.title, s.url) for s in result.sources] == [("Entropy - a reference", "https://example.org/entropy"),
                                                          ("Sampling explained", "https://example.org/sampling")]
    html = outputs_text(ip)
    assert '<a href="https://example.org/entropy" target="_blank" rel="noopener noreferrer nofollow">' \
           'Entropy - a reference</a>' in html
    assert result.parameters["enable_search"] is True


def test_a_hostile_source_is_shown_as_text_never_as_markup_or_a_script_link(ip, dashscope):
    dashscope.enqueue(Script(sources=[{"title": "<script>alert(1)</script>", "url": "javascript:alert(1)"},
                                      {"title": "x\" onmouseover=\"alert(2)", "url": "https://e.org/\"><b>"}]))
    ip.run_line_magic("qwen", "-m qwen-plus --no-thinking --search hi")
    html = "".join(out["data"]["text/html"] for out in ip.display_pub.outputs)
    assert "<script>alert" not in html and 'href="javascript' not in html and "<b>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt; (javascript:alert(1))" in html
    assert 'href="https://e.org/&quot;&gt;&lt;b&gt;"' in html and 'x&quot; onmouseover=&quot;alert(2)' in html


def test_param_sends_any_field_as_json_or_text_and_says_when_it_replaces_one_the_package_sets(ip, dashscope):
    result = ip.run_line_magic("qwen", "-m qwen-plus --no-thinking -t 0.7 --param temperature=0.2 "
                                       "--param search_options='{\"forced_search\": true}' --param tag=blue hi")
    body = dashscope.requests[-1].body
    assert body["temperature"] == 0.2 and body["search_options"] == {"forced_search": True} and body["tag"] == "blue"
    assert result.parameters["search_options"] == {"forced_search": True} and result.parameters["tag"] == "blue"
    notices = [o["data"]["text/plain"] for o in ip.display_pub.outputs if o["data"]["text/plain"].startswith("⚠")]
    assert notices == ["⚠ --param temperature replaces the temperature this request would send (0.7 becomes 0.2)"]


def test_param_goes_into_the_native_parameters(ip, dashscope):
    ip.run_line_magic("qwen", "--api dashscope -m qwen-plus --param search_options='{\"search_strategy\": \"pro\"}' hi")
    assert dashscope.requests[-1].body["parameters"]["search_options"] == {"search_strategy": "pro"}


def test_a_comparison_takes_lists_of_penalties_zipped_or_crossed(ip, dashscope):
    zipped = ip.run_cell_magic("qwen_compare", "-m qwen-plus --no-thinking --presence-penalty 0,1.5 "
                                               "--repetition-penalty 1,1.3", "hi")
    assert [c.spec.label for c in zipped.columns] == [
        "-m qwen-plus --no-thinking --presence-penalty 0 --repetition-penalty 1",
        "-m qwen-plus --no-thinking --presence-penalty 1.5 --repetition-penalty 1.3"]
    sent = sorted((r.body["presence_penalty"], r.body["repetition_penalty"]) for r in dashscope.requests)
    assert sent == [(0, 1), (1.5, 1.3)]
    crossed = ip.run_cell_magic("qwen_compare", "-m qwen-plus --no-thinking --grid -t 0,1 --presence-penalty 0,2", "hi")
    assert len(crossed.columns) == 4
    assert crossed.rows[3]["column"] == "-m qwen-plus -t 1 --no-thinking --presence-penalty 2"


def test_prompt_variants_are_columns_named_by_their_first_words_and_cross_with_other_axes(ip, dashscope):
    cell = "Explain entropy to a child.\n---\nGive a one-line physics definition of entropy, with units.\n"
    comparison = ip.run_cell_magic("qwen_compare", "--no-thinking --variants", cell)
    prompts = [r.body["messages"][-1]["content"] for r in sorted(dashscope.requests, key=lambda r: r.started)]
    assert sorted(prompts) == ["Explain entropy to a child.",
                               "Give a one-line physics definition of entropy, with units."]
    assert [c.spec.label for c in comparison.columns] == ["variant 1 “Explain entropy to a child.” --no-thinking",
                                                          "variant 2 “Give a one-line physics definition…” "
                                                          "--no-thinking"]
    assert comparison.results[1].text.startswith("**Echo:** Give a one-line physics")
    assert "variant 2 “Give a one-line physics definition…”" in comparison.summary.value
    assert "> Give a one-line physics definition of entropy, with units." in comparison.to_markdown()
    grid = ip.run_cell_magic("qwen_compare", "--variants --grid -t 0,1", cell)
    assert [c.spec.label for c in grid.columns] == [
        "variant 1 “Explain entropy to a child.” -t 0", "variant 1 “Explain entropy to a child.” -t 1",
        "variant 2 “Give a one-line physics definition…” -t 0", "variant 2 “Give a one-line physics definition…” -t 1"]


def test_variants_need_two_prompts(ip, dashscope):
    with pytest.raises(UsageError, match=r"^--variants needs two or more prompts separated by lines holding only ---"):
        ip.run_cell_magic("qwen_compare", "-m qwen-plus --variants", "just one prompt")
    assert dashscope.requests == []


def test_the_panel_sends_its_penalties_and_web_search_and_makes_them_the_defaults(ip, dashscope):
    from test_widgets import wait_for

    panel = ip.magics_manager.registry["QwenWidgetMagics"].make_panel()
    panel.model.value, panel.thinking.value, panel.prompt.value = "qwen-plus", "off", "Name a colour."
    panel.presence_penalty.value, panel.repetition_penalty.value, panel.search.value = 1.2, 1.15, True
    panel.run_button.click()
    wait_for(lambda: "https://example.org/entropy" in "".join(part.value for part in panel.output.children))
    body = [r for r in dashscope.requests if r.path == CHAT][-1].body  # (the panel also asks for /models)
    assert (body["presence_penalty"], body["repetition_penalty"], body["enable_search"]) == (1.2, 1.15, True)
    panel.defaults_button.click()
    settings = ip.magics_manager.registry["QwenMagics"]
    assert (settings.presence_penalty, settings.repetition_penalty, settings.search) == (1.2, 1.15, True)
    controls = panel.columns[0].controls
    controls.default["presence_penalty"].value = controls.default["repetition_penalty"].value = True
    controls.search.value = False
    options = " ".join(controls.tokens())
    assert "penalty" not in options and "--search" not in options  # unset ("default" ticked): nothing sent
