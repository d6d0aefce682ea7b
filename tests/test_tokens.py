"""Qwen's tokenizer: the pieces, the counts, the chat template, and agreement with llama.cpp's own tokenizer
of the Qwen2.5 GGUF (the vocabulary loaded alone: ``vocab_only``)."""

from __future__ import annotations

import subprocess
import sys

import pytest

import qwen_magics
from qwen_magics.errors import InvalidInput
from qwen_magics.tokens import qwen

CORPUS = [
    "今天天气很好，我们去公园散步吧。",
    "The quick brown fox jumps over the lazy dog.",
    "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n\n\nprint(fib(10))  # 55\n",
    "日本語のテキストも大丈夫ですか？東京は晴れです。",
    "Mixed 中文 and English, 1234567 numbers; émojis 🎉👍 and tabs\t\there.",
    "  leading spaces and trailing   \n\n  ",
    "SELECT name, COUNT(*) FROM users WHERE id = 42 GROUP BY name;",
    "한국어 문장입니다. Ünïcödé 𠀀 rare",
    "It's we're they'll I'd YOU'VE",
    "\r\n\r\nwindows line ends\r\n",
    "<div class=\"x\">{{ value }}</div> <|im_start|> not special",
    "机器学习（Machine Learning）是人工智能的一个分支，它使计算机能够从数据中学习。\n```python\nimport numpy as np\n```",
]


def test_the_chinese_sentence_and_the_pangram_give_ten_pieces_each():
    assert qwen_magics.tokenize("今天天气很好，我们去公园散步吧。") == [
        "今天", "天气", "很好", "，", "我们", "去", "公园", "散步", "吧", "。"]
    assert len(qwen_magics.tokenize("The quick brown fox jumps over the lazy dog.")) == 10


@pytest.mark.parametrize("text", CORPUS)
def test_pieces_join_to_the_text_and_hold_every_token(text):
    pieces = qwen.pieces(text)
    assert "".join(p.text for p in pieces) == text
    assert [i for p in pieces for i in p.ids] == qwen.token_ids(text)
    assert qwen.count(text) == len(qwen.token_ids(text))


def test_a_character_split_across_tokens_is_one_piece_of_several_ids():
    pieces = qwen.pieces("a 🎉 b")
    party = next(p for p in pieces if "🎉" in p.text)
    assert len(party.ids) > 1 and "\ufffd" not in party.text


def test_counting_many_texts_counts_each():
    assert qwen.count_many(CORPUS) == [qwen.count(t) for t in CORPUS]


def test_the_chat_template_adds_five_tokens_a_message_and_three_for_the_answer():
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "今天天气很好"}]
    assert qwen.count_messages(messages) == qwen.count("Be brief.") + qwen.count("今天天气很好") + 2 * 5 + 3
    parts = [{"role": "user", "content": [{"type": "text", "text": "hello"}, {"type": "image_url", "image_url": {}}]}]
    assert qwen.count_messages(parts) == qwen.count("hello") + 5 + 3


def test_a_model_outside_the_qwen_family_is_refused_in_one_line():
    assert qwen_magics.tokenize("hi", model="qwen-plus") == ["hi"]
    assert qwen_magics.tokenize("hi", model="local:0.5b") == ["hi"]
    with pytest.raises(InvalidInput, match="No tokenizer is known for 'deepseek-v3'"):
        qwen_magics.tokenize("hi", model="deepseek-v3")


def test_importing_the_package_does_not_load_the_tokenizer():
    code = ("import sys, qwen_magics; assert 'tiktoken' not in sys.modules and 'dashscope' not in sys.modules; "
            "qwen_magics.tokenize('x'); assert 'tiktoken' in sys.modules and 'dashscope' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.local
def test_counts_agree_with_llama_cpp_on_the_qwen25_gguf():
    from llama_cpp import Llama

    from qwen_magics.local.model import MODELS

    vocab = Llama(str(MODELS["0.5b"].path), vocab_only=True, verbose=False)
    for text in CORPUS:
        assert qwen.token_ids(text) == vocab.tokenize(text.encode(), add_bos=False, special=False), text


@pytest.mark.local
def test_the_template_count_agrees_with_llama_cpp_reading_chatml():
    from llama_cpp import Llama

    from qwen_magics.local.model import MODELS

    vocab = Llama(str(MODELS["0.5b"].path), vocab_only=True, verbose=False)
    messages = [{"role": "system", "content": "Answer in Chinese."}, {"role": "user", "content": CORPUS[2]},
                {"role": "assistant", "content": CORPUS[0]}, {"role": "user", "content": "再说一遍"}]
    chatml = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages) + "<|im_start|>assistant\n"
    assert qwen.count_messages(messages) == len(vocab.tokenize(chatml.encode(), add_bos=False, special=True))


def test_the_magic_shows_the_count_and_the_pieces_as_chips_with_ids(ip):
    view = ip.run_line_magic("qwen_tokens", "今天天气很好，我们去公园散步吧。")
    assert view.header() == "10 Qwen tokens for 16 characters, 1.60 characters a token"
    page = view._repr_html_()
    assert page.count("<span title=\"id ") == 10 and ">散步</span>" in page
    assert f'title="id {qwen.token_ids("散步")[0]}"' in page
    cell = ip.run_cell_magic("qwen_tokens", "", "<b>x</b> 🎉\n")
    assert "<b" not in cell._repr_html_() and "&lt;b" in cell._repr_html_()
    assert "one character, " in cell._repr_html_() and repr(cell).endswith("|".join(qwen.tokenize("<b>x</b> 🎉\n")))


def test_the_magic_without_text_says_what_to_write(ip):
    from IPython.core.error import UsageError

    with pytest.raises(UsageError, match="No text to count"):
        ip.run_line_magic("qwen_tokens", "  ")


def test_the_speed_of_an_answer_without_reported_tokens_is_counted_in_qwens_tokens():
    from qwen_magics.display.text import footer_text
    from qwen_magics.result import Result

    answer = "今天天气很好，我们去公园散步吧。" * 5
    result = Result(model="served", parameters={"stream": True}, text=answer,
                    started=0.0, ttft=1.0, elapsed=3.0, state="complete")
    assert result.counted_output == 50
    assert "≈ 25 tok/s, counted with Qwen's tokenizer" in footer_text(result)  # 80 characters: not 80 / 4 / 2
