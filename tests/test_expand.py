"""{expr} expansion: prompts built from the user's namespace, checked before sending."""

import pandas as pd
import pytest

from qwen_magics.errors import InvalidInput
from qwen_magics.options.expand import expand


def run(template, **ns):
    return expand(template, ns, max_chars=1000, dataframe_rows=5)


def test_names_attributes_subscripts_and_expressions_are_replaced():
    class Topic:
        name = "entropy"

    out = run("{t.name} / {d['k']} / {xs[1:3]} / {n * 2} / {s!r}", t=Topic(), d={"k": "v"}, xs=[0, 1, 2, 3], n=21, s="q")
    assert out.text == "entropy / v / [1, 2] / 42 / 'q'"
    assert out.warnings == []


def test_in_and_out_history_are_reachable_like_ipython_expansion():
    assert run("cell 1 was {In[1]} giving {Out[1]}", In=["", "1+1"], Out={1: 2}).text == "cell 1 was 1+1 giving 2"


def test_double_braces_stay_literal():
    assert run('JSON like {{"a": {n}}}', n=1).text == 'JSON like {"a": 1}'


def test_an_undefined_name_is_an_error_that_names_it():
    with pytest.raises(InvalidInput, match=r"\{topic\}: name 'topic' is not defined.*\{\{topic\}\}"):
        run("Explain {topic}")


def test_an_expression_that_raises_is_reported_with_its_exception():
    with pytest.raises(InvalidInput, match=r"\{1/0\} raised ZeroDivisionError"):
        run("{1/0}")


def test_unbalanced_and_non_python_braces_say_how_to_write_literals():
    with pytest.raises(InvalidInput, match=r"unmatched brace.*\{\{"):
        run("a } b")
    with pytest.raises(InvalidInput, match="not a Python expression"):
        run("{a b}")


def test_a_dataframe_becomes_a_bounded_markdown_table_with_a_warning():
    df = pd.DataFrame({"city": [f"c{i}" for i in range(50)], "pop": range(50)})
    out = run("Summarise:\n{df}", df=df)
    lines = [l for l in out.text.splitlines() if l.startswith("|")]
    assert lines[0] == "|  | city | pop |" and lines[1] == "|---|---|---|"
    assert len(lines) == 2 + 5
    assert out.warnings == ["{df} has 50 rows; sent the first 5 (raise %config QwenMagics.dataframe_rows to send more)"]


def test_a_long_value_is_cut_with_a_warning_stating_how_much():
    out = run("{big}", big="x" * 5000)
    assert out.text.startswith("x" * 1000) and out.text.endswith("[… 4,000 characters cut]")
    assert out.warnings == ["{big} is 5,000 characters; sent the first 1,000 and cut 4,000 "
                            "(raise %config QwenMagics.max_value_chars to send more)"]


def test_bytes_are_decoded_and_invalid_utf8_is_flagged():
    out = run("{b}", b=b"caf\xc3\xa9 \xff")
    assert out.text == "café \ufffd"
    assert "not valid UTF-8" in out.warnings[0]
