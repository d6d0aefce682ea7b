"""The comparison summary: sizes, similarities and the spread of repeated runs.

Everything here is pure text arithmetic, so expected values are worked out by
hand from small answers whose words can be counted at a glance.
"""

from __future__ import annotations

import re
from itertools import combinations
from statistics import fmean

import pytest

from qwen_magics.display.summary import (
    SIMILARITY_WORDS,
    diff_html,
    similarity,
    summarize,
    summary_html,
    summary_markdown,
)

INS = '<ins style="background:#d4f7d4;text-decoration:none">'
DEL = '<del style="background:#fbd5d5">'


# similarity: word-level SequenceMatcher ratio


def test_identical_answers_are_fully_similar_whatever_their_spacing():
    assert similarity("the cat sat", "the cat sat") == 1.0
    assert similarity("the cat sat", "the  cat\nsat ") == 1.0


def test_answers_sharing_no_word_are_not_similar_at_all():
    assert similarity("the cat sat", "a dog ran") == 0.0


def test_similarity_is_twice_the_matched_words_over_all_words():
    # "the" and "sat" match: 2 * 2 / (3 + 3)
    assert similarity("the cat sat", "the dog sat") == pytest.approx(2 / 3)


def test_punctuation_stays_attached_to_its_word():
    assert similarity("the cat.", "the cat") == pytest.approx(2 * 1 / 4)


def test_two_empty_answers_are_alike_and_an_empty_one_is_unlike_any_other():
    assert similarity("", "  \n") == 1.0
    assert similarity("", "the cat") == 0.0


def test_similarity_is_symmetric_even_where_sequencematcher_is_not():
    a, b = "sat the cat", "cat sat cat"  # SequenceMatcher's ratio gives 2/3 one way and 1/3 the other
    assert similarity(a, b) == similarity(b, a)


def test_words_past_the_cap_do_not_count_towards_similarity():
    shared = " ".join(f"w{i}" for i in range(SIMILARITY_WORDS))
    assert similarity(shared + " ending one", shared + " another ending") == 1.0


# summarize: per-column numbers and the matrix


TEXTS = ["The cat sat on the mat.", "The cat sat on a mat.", "A dog ran <fast>.", "The cat sat."]


def test_lengths_are_characters_and_words_are_runs_of_non_space():
    summary = summarize(["Hello, world!", "  one\ntwo  three ", ""])
    assert summary.lengths == [13, 17, 0]
    assert summary.words == [2, 3, 0]


def test_the_matrix_is_symmetric_with_ones_on_the_diagonal():
    matrix = summarize(TEXTS).similarity
    assert [matrix[i][i] for i in range(len(TEXTS))] == [1.0] * len(TEXTS)
    for i, j in combinations(range(len(TEXTS)), 2):
        assert matrix[i][j] == matrix[j][i] == similarity(TEXTS[i], TEXTS[j])


def test_similarity_to_first_is_the_first_row_of_the_matrix():
    summary = summarize(TEXTS)
    assert summary.to_first == summary.similarity[0]
    assert summary.to_first[0] == 1.0


def test_no_columns_give_an_empty_summary():
    summary = summarize([])
    assert (summary.lengths, summary.similarity, summary.to_first, summary.groups) == ([], [], [], [])


# summarize: groups of repeats


def test_identical_repeats_are_marked_identical_with_hand_counted_distinct_n():
    spread = summarize(["the cat sat on the mat"] * 2, ["T=0"] * 2).groups[0]
    assert (spread.label, spread.runs, spread.mean_similarity, spread.identical) == ("T=0", 2, 1.0, True)
    # 12 words, 5 different ones; 2 x 5 bigrams, each answer's five all different
    assert spread.distinct_1 == pytest.approx(5 / 12)
    assert spread.distinct_2 == pytest.approx(5 / 10)


def test_three_repeats_average_their_three_pairwise_similarities():
    repeats = ["the cat sat on the mat", "the cat lay on the mat", "a dog sat on a rug"]
    spread = summarize(repeats, ["T=1.2"] * 3).groups[0]
    assert spread.runs == 3
    assert spread.mean_similarity == pytest.approx(fmean(similarity(a, b) for a, b in combinations(repeats, 2)))
    assert spread.identical is False


def test_groups_follow_first_appearance_and_collect_interleaved_repeats():
    summary = summarize(["a", "b", "a", "c"], ["T=0", "T=1", "T=0", "T=1"])
    assert [(g.label, g.runs, g.identical) for g in summary.groups] == [("T=0", 2, True), ("T=1", 2, False)]


def test_a_single_run_has_no_spread_and_is_not_called_identical():
    spread = summarize(["the cat", "a dog"], ["qwen-plus", "qwen-max"]).groups[1]
    assert (spread.runs, spread.mean_similarity, spread.identical) == (1, None, False)


def test_bigrams_never_span_two_answers():
    spread = summarize(["cat", "cat"], ["T=0", "T=0"]).groups[0]
    assert spread.distinct_1 == 0.5
    assert spread.distinct_2 == 0.0  # one-word answers have no bigrams at all


def test_without_labels_every_column_is_its_own_group():
    summary = summarize(["a", "a"])
    assert [(g.label, g.runs) for g in summary.groups] == [("column 1", 1), ("column 2", 1)]


def test_a_label_per_column_is_required():
    with pytest.raises(ValueError, match="groups has 1 labels for 2 texts"):
        summarize(["a", "b"], ["T=0"])


# diff_html


def test_diff_marks_an_inserted_and_a_deleted_word_in_place():
    assert diff_html("the cat sat", "the dog sat") == f"the {DEL}cat</del> {INS}dog</ins> sat"
    assert diff_html("the cat sat", "the sat") == f"the {DEL}cat</del> sat"
    assert diff_html("the sat", "the big sat") == f"the {INS}big</ins> sat"


def test_diff_escapes_model_html_whether_kept_inserted_or_deleted():
    out = diff_html("<b>keep</b> <script>gone()</script>", "<b>keep</b> <script>new()</script>")
    assert "<script>" not in out and "<b>" not in out
    kept = "&lt;b&gt;keep&lt;/b&gt;"
    assert out == f"{kept} {DEL}&lt;script&gt;gone()&lt;/script&gt;</del> {INS}&lt;script&gt;new()&lt;/script&gt;</ins>"


def test_diff_keeps_the_other_answers_newlines_and_leaves_whitespace_outside_marks():
    assert diff_html("one\n\ntwo", "one\n\ntwo\nthree\n") == f"one\n\ntwo\n{INS}three</ins>\n"


def test_diff_of_equal_answers_is_the_escaped_answer():
    assert diff_html("a < b\n", "a < b\n") == "a &lt; b\n"


# tables


def test_markdown_has_a_row_per_column_and_no_group_table_without_repeats():
    summary = summarize(["the cat sat", "the dog sat"])
    table, chart = summary_markdown(summary, ["qwen-plus", "qwen-max"]).split("\n\n")
    assert chart.startswith("<div><svg")  # two settings: their diversity side by side (tests/test_charts.py)
    assert table.splitlines() == [
        "| column | characters | words | similarity to first |",
        "| --- | ---: | ---: | ---: |",
        "| qwen-plus | 11 | 3 | 100% |",
        "| qwen-max | 11 | 3 | 67% |",
    ]


def test_markdown_adds_a_group_table_when_a_setting_is_repeated():
    summary = summarize(["a b", "a b", "c d"], ["T=0", "T=0", "T=1"])
    tables = summary_markdown(summary, ["T=0 #1", "T=0 #2", "T=1"]).split("\n\n")
    assert len(tables) == 3 and tables[2].startswith("<div><svg")
    assert tables[1].splitlines() == [
        "| setting | runs | mean similarity | distinct-1 | distinct-2 | identical |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
        "| T=0 | 2 | 100% | 0.50 | 0.50 | yes |",
        "| T=1 | 1 | — | 1.00 | 1.00 | — |",
    ]


def test_markdown_escapes_pipes_and_flattens_newlines_so_rows_stay_intact():
    summary = summarize(["x", "x"], ["top_p|0.9", "top_p|0.9"])
    table = summary_markdown(summary, ["a|b", "two\nlines"])
    assert "| a\\|b | 1 | 1 | 100% |" in table
    assert "| two lines | 1 | 1 | 100% |" in table
    assert "| top_p\\|0.9 | 2 |" in table


def test_tables_need_a_label_per_column():
    with pytest.raises(ValueError, match="1 labels for 2 columns"):
        summary_markdown(summarize(["a", "b"]), ["only one"])


def test_html_escapes_labels_and_includes_the_group_table():
    summary = summarize(["a", "a"], ["<i>T</i>", "<i>T</i>"])
    out = summary_html(summary, ["<script>x()</script>", "plain"])
    assert "<script>" not in out and "<i>" not in out
    assert "&lt;script&gt;x()&lt;/script&gt;" in out and "&lt;i&gt;T&lt;/i&gt;" in out
    assert out.count("<table") == 2 and out.count("<svg") == 1
    assert out.count("<tr>") == 1 + 2 + 1 + 1  # column header and rows, group header and row


# Chinese and Japanese: words are Qwen's token pieces

PARK = "今天天气很好，我们去公园散步吧。"
BEACH = "今天天气很好，我们去海边散步吧。"


def test_two_chinese_answers_one_word_apart_are_mostly_similar():
    assert similarity(PARK, BEACH) >= 0.75
    assert similarity(PARK, "完全不同的一句话，讲的是编程。") < 0.3


def test_chinese_words_are_counted_and_distinct_n_reads_them():
    summary = summarize([PARK, PARK + PARK], ["a", "b"])
    assert summary.words == [10, 20]
    (_, b) = summary.groups
    assert b.distinct_1 == pytest.approx(10 / 20)


def test_the_word_diff_marks_the_one_chinese_word_and_adds_no_spaces():
    page = diff_html(PARK, BEACH)
    assert "<del" in page and ">公园</del>" in page and ">海边</ins>" in page
    assert re.sub(r"<[^>]*>", "", page) == "今天天气很好，我们去公园海边散步吧。"


def test_japanese_is_segmented_and_english_stays_split_on_spaces():
    assert similarity("東京は晴れです。", "東京は雨です。") > 0.5
    assert summarize(["The cat sat."]).words == [3]
