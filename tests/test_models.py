"""%qwen_models: the known table next to what the endpoint's /models offers, and typo warnings."""

import pytest
from IPython.core.error import UsageError
from loopback import DEFAULT_MODELS

from conftest import outputs_text
from qwen_magics.models import KNOWN, likely_typo
from qwen_magics.tokens.prices import READ_ON


def test_the_table_shows_what_the_endpoint_offers_next_to_the_known_models(ip, dashscope):
    table = ip.run_line_magic("qwen_models", "")
    assert dashscope.requests[-1].path == "/compatible-mode/v1/models"
    rows = {r["model"]: r for r in table.rows}
    assert rows["qwen-plus"]["offered"] is True and rows["qwen3.5-27b"]["offered"] is False
    assert rows["qwen2.5-7b-instruct"] == {"model": "qwen2.5-7b-instruct", "offered": True, "context": None,
                                           "thinking": None, "thinks by default": None,
                                           "price": None}  # listed, not in the table
    assert rows["qwen3.5-plus"]["thinks by default"] is True and rows["qwen-plus"]["thinks by default"] is False
    assert rows["local:0.5b"]["context"] == 4096
    text = repr(table)
    assert text.splitlines()[0] == (f"{len(DEFAULT_MODELS)} models listed by singapore; prices: Model Studio's "
                                    f"list prices read {READ_ON} (— where not known; QwenMagics.prices sets one)")
    assert rows["qwen-plus"]["price"].startswith("$0.4 in / $1.2 out per million tokens")
    assert rows["local"]["price"] == "free" and rows["qwen3.5-27b"]["price"] is None
    assert rows["qwen-plus"]["price"].endswith(", thinking out unknown (prompts up to 128K tokens)")
    assert rows["qwen-max"]["price"] == "$1.6 in / $6.4 out per million tokens (prompts up to 32K tokens)"  # no thinking
    assert "qwen-max             yes      32,768     none      off" in text
    assert "<td>qwen3.5-plus</td><td>yes</td><td>1,000,000</td><td>hybrid</td><td>on</td>" in table._repr_html_()


def test_without_a_key_the_known_table_is_shown_and_nothing_is_asked(ip, dashscope, monkeypatch):
    monkeypatch.delenv("DASHSCOPE_API_KEY")
    table = ip.run_line_magic("qwen_models", "")
    assert dashscope.requests == []
    assert repr(table).splitlines()[0].startswith("singapore was not asked (set DASHSCOPE_API_KEY to ask it); prices")
    assert {r["model"] for r in table.rows} >= {m.name for m in KNOWN}


def test_an_endpoint_that_refuses_still_gets_the_table_with_the_reason(ip, dashscope, monkeypatch):
    monkeypatch.setenv("DASHSCOPE_API_KEY", "sk-wrong-key-000000")
    table = ip.run_line_magic("qwen_models", "")
    assert repr(table).splitlines()[0].startswith(
        "singapore did not list its models (The API key was rejected by the singapore region (401")
    assert "sk-wrong-key-000000" not in repr(table)


def test_a_name_is_checked_against_the_table_and_the_listing(ip, dashscope, capsys):
    ip.run_line_magic("qwen_models", "qwen-plsu")
    ip.run_line_magic("qwen_models", "qwen2.5-7b-instruct")
    ip.run_line_magic("qwen_models", "llama-3")
    assert capsys.readouterr().out.splitlines() == [
        "'qwen-plsu' is neither known nor listed: did you mean 'qwen-plus'?",
        "'qwen2.5-7b-instruct' is offered by singapore",
        "'llama-3' is neither known nor listed by singapore",
    ]


def test_a_mistyped_model_gets_a_did_you_mean_line_above_the_services_answer(ip, dashscope):
    with pytest.raises(UsageError, match="Model 'qwen-plsu' is not available"):
        ip.run_line_magic("qwen", "-m qwen-plsu hi")
    assert "'qwen-plsu' is not a model this package knows: did you mean 'qwen-plus'?" in outputs_text(ip)


@pytest.mark.parametrize("name, guess", [("qwen3.5-plsu", "qwen3.5-plus"), ("qwen-flsh", "qwen-flash"),
                                         ("qwen-plus", None), ("local:0.5b", None), ("my-finetune-v2", None)])
def test_only_near_misses_of_known_names_count_as_typos(name, guess):
    assert likely_typo(name) == guess
