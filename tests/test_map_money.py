"""%%qwen_map with Qwen's token counts and money: the dry run's count, the cost column, budgets."""

from __future__ import annotations

import pytest
from test_map import log_path, mp, sent  # noqa: F401 - the map's fixtures

from qwen_magics.tokens import qwen

CHINESE = ["今天天气很好，我们去公园散步吧。", "机器学习是人工智能的一个分支。", "请把这句话翻译成英文。"]


def test_a_chinese_dry_run_counts_qwen_tokens_and_the_template_not_characters_over_four(mp, dashscope, capsys):
    mp.user_ns["sentences"] = CHINESE
    assert mp.run_cell_magic("qwen_map", "sentences -m qwen-plus --dry-run", "翻译：{item}") is None
    out = capsys.readouterr().out
    counted = sum(qwen.count(f"翻译：{s}") for s in CHINESE) + 3 * 8
    assert f", {counted:,} input tokens (Qwen's tokenizer; 24 of them the chat template's" in out
    assert counted > sum(len(f"翻译：{s}") for s in CHINESE) // 4 * 2 and sent(dashscope) == 0
    assert f"estimated cost ${counted * 0.4 / 1e6:.4f} (input only" in out


def many(mp, rows: int) -> None:
    mp.user_ns["questions"] = [f"Question number {i}: what is {i} squared?" for i in range(rows)]


def row_cost(input_tokens: int, output_tokens: int) -> float:
    """qwen-plus in Singapore, from the shipped table: $0.4 in / $1.2 out per million tokens."""
    return (input_tokens * 0.4 + output_tokens * 1.2) / 1_000_000


def test_a_budget_below_the_estimate_sends_nothing_and_says_the_estimate(mp, dashscope):
    from IPython.core.error import UsageError

    many(mp, 50)
    with pytest.raises(UsageError, match=r"^The estimated cost of 50 rows, \$0\.\d{4}, is over the budget of "
                                         r"\$0\.0010: nothing was sent\. Raise --budget"):
        mp.run_cell_magic("qwen_map", "questions -m qwen-plus --max-tokens 100 --budget 0.001", "{item}")
    assert sent(dashscope) == 0


def test_a_budget_for_about_twenty_rows_of_two_hundred_answers_about_twenty(mp, dashscope, capsys):
    from loopback import Script

    many(mp, 200)
    usage = {"prompt_tokens": 20, "completion_tokens": 1000, "total_tokens": 1020}
    dashscope.enqueue(Script(text="An answer.", usage=usage, repeat=200))
    budget = 20 * row_cost(20, 1000)
    frame = mp.run_cell_magic("qwen_map", f"questions -m qwen-plus --budget {budget}", "{item}")
    out = capsys.readouterr().out
    assert out.startswith("Estimated cost of 200 rows: $0.00")  # input only: no answers to average yet
    answered = (frame.state == "complete").sum()
    assert 18 <= answered <= 22 and sent(dashscope) == answered
    assert (frame.state == "not run").sum() == 200 - answered
    assert frame.error[frame.state == "not run"].str.startswith("not run: the budget of $0.0242 ran out").all()
    assert frame.cost.sum() <= 1.1 * budget and frame.cost[frame.state == "complete"].notna().all()
    assert frame.cost[0] == pytest.approx(row_cost(20, 1000))
    assert f"Budget $0.0242: ${frame.cost.sum():.4f} spent; {200 - answered} rows not run for lack of budget" in out


def test_a_budget_from_python_and_an_unpriced_model_refused(mp, dashscope):
    import qwen_magics
    from qwen_magics.errors import InvalidInput

    many(mp, 3)
    frame = qwen_magics.map(mp.user_ns["questions"], "{item}", model="qwen-plus", budget=1.0)
    assert (frame.state == "complete").all() and frame.cost.notna().all()
    with pytest.raises(InvalidInput, match="--budget: qwen-flash has no known price here"):
        qwen_magics.map(mp.user_ns["questions"], "{item}", model="qwen-flash", budget=1.0)
    assert sent(dashscope) == 3
