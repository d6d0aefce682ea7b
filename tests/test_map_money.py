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
