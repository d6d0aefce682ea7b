"""The scorers and the statistics of %%qwen_eval, the latter checked against published worked examples.

The statistics are scipy.stats' own; these tests pin that the package asks
for the right ones: Wilson intervals (Newcombe 1998, Table I, method 3),
the exact McNemar test (Fagerland, Lydersen & Laake 2013, the airway
hyper-responsiveness example: b = 1, c = 7, exact conditional p = 0.070).
"""

from __future__ import annotations

import pytest

from qwen_magics.errors import InvalidInput
from qwen_magics.evaluation import stats
from qwen_magics.evaluation.scorers import Unscorable, chosen_letter, last_number, scorer_for


def score(spec, answer, expected, row=None, namespace=None):
    return scorer_for(spec, namespace or {}).score(answer, expected, row or {})


# scorers

@pytest.mark.parametrize("answer, expected, want", [
    ("Paris.", "paris", 1.0), ("  PARIS!  ", "Paris", 1.0), ("Paris, France", "Paris", 0.0), ("7", 7, 1.0),
    ("7.0", 7.0, 0.0),  # exact compares text: "7.0" is not "7"
])
def test_exact_ignores_case_surrounding_space_and_end_punctuation(answer, expected, want):
    assert score("exact", answer, expected) == want


def test_contains_looks_for_the_expected_text_anywhere():
    assert score("contains", "The capital is Paris, of course.", "paris") == 1.0
    assert score("contains", "Lyon", "Paris") == 0.0


@pytest.mark.parametrize("answer, expected, want", [
    ("3 + 4 = 7", 7, 1.0), ("The answer is 1,234.", "1234", 1.0), ("It is -2.5", -2.5, 1.0),
    ("7 or maybe 8", 7, 0.0), ("seven", 7, 0.0), ("12", "12.0", 1.0),
])
def test_number_compares_the_answers_last_number(answer, expected, want):
    assert score("number", answer, expected) == want


def test_last_number_reads_thousands_and_decimals():
    assert last_number("from 3 to 1,000,000.5 units") == 1_000_000.5 and last_number("none") is None


@pytest.mark.parametrize("answer, letter", [
    ("B", "B"), ("(c)", "C"), ("D) because ...", "D"), ("**A**", "A"), ("The answer is (B).", "B"),
    ("Answer: c", "C"), ("A cat is an animal, so (D)", "D"), ("I cannot tell", None),
])
def test_choice_finds_the_letter_given(answer, letter):
    assert chosen_letter(answer) == letter


def test_regex_compares_its_first_group_and_json_a_field():
    assert score("regex:Answer: (\\w+)", "Thinking... Answer: Blue", "blue") == 1.0
    assert score("regex:Answer: (\\w+)", "no marker", "blue") == 0.0
    assert score("json:label", '{"label": "Positive"}', "positive") == 1.0
    assert score("json:result.n", '```json\n{"result": {"n": 4}}\n```', "4") == 1.0
    assert score("json:label", "not json", "positive") == 0.0  # a wrong answer, not a failed row


def test_py_scores_are_the_functions_and_a_raising_or_bad_return_is_unscorable():
    ns = {"half": lambda answer, expected, row: 0.5 if row["k"] else True,
          "boom": lambda answer, expected, row: 1 / 0, "big": lambda a, e, r: 3}
    assert score("py:half", "x", None, {"k": 1}, ns) == 0.5 and score("py:half", "x", None, {"k": 0}, ns) == 1.0
    with pytest.raises(Unscorable, match="^py:boom raised ZeroDivisionError: division by zero$"):
        score("py:boom", "x", None, {}, ns)
    with pytest.raises(Unscorable, match="^py:big returned 3, not a bool or a number in \\[0, 1\\]$"):
        score("py:big", "x", None, {}, ns)


@pytest.mark.parametrize("spec, namespace, message", [
    ("fuzzy", {}, "--score 'fuzzy' is not a scorer. Use one of exact, contains"),
    ("regex:(", {}, "--score regex:(: not a regular expression"),
    ("regex:\\d+", {}, "--score regex:\\d+: the pattern has no group"),
    ("py:grade", {}, "--score py:grade: 'grade' is not defined. Define def grade(answer, expected, row)"),
    ("py:grade", {"grade": 3}, "--score py:grade: grade is a int, not a function"),
])
def test_a_bad_scorer_is_one_line(spec, namespace, message):
    with pytest.raises(InvalidInput) as err:
        scorer_for(spec, namespace)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_number_and_choice_say_which_expected_values_they_cannot_compare():
    assert scorer_for("number", {}).check_expected("twelve") == "'twelve' is not a number"
    assert scorer_for("number", {}).check_expected(12) is None
    assert scorer_for("choice", {}).check_expected("(b)") is None
    assert scorer_for("choice", {}).check_expected("yes") == "'yes' is not a letter A-J"


# statistics

@pytest.mark.parametrize("k, n, low, high", [  # Newcombe (1998), Table I, method 3 (Wilson score, no correction)
    (81, 263, 0.2553, 0.3662), (15, 148, 0.0624, 0.1605), (0, 20, 0.0, 0.1611), (1, 29, 0.0061, 0.1718),
])
def test_binary_scores_get_wilsons_interval(k, n, low, high):
    got = stats.interval([1.0] * k + [0.0] * (n - k))
    assert got.method == "wilson" and got.mean == pytest.approx(k / n)
    assert (round(got.low, 4), round(got.high, 4)) == (low, high)


def test_wilson_for_seven_of_ten_matches_the_formula():
    # Wilson (1927): (p + z²/2n ± z·sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n), z = 1.959964: 0.3968 to 0.8922
    got = stats.interval([1.0] * 7 + [0.0] * 3)
    assert (round(got.low, 4), round(got.high, 4)) == (0.3968, 0.8922)


def test_other_scores_get_a_bootstrap_interval_around_the_mean():
    scores = [0.1, 0.4, 0.35, 0.8, 0.55, 0.6, 0.2, 0.9, 0.45, 0.5]
    got = stats.interval(scores)
    assert got.method == "bootstrap" and got.mean == pytest.approx(0.485)
    assert 0.3 < got.low < 0.485 < got.high < 0.7
    assert stats.interval(scores) == got  # seeded: the same scores, the same interval
    assert stats.interval([]) == stats.Interval(None, None, None, None)
    assert stats.interval([0.5, 0.5]) == stats.Interval(0.5, 0.5, 0.5, "bootstrap")


def test_binary_pairs_get_the_exact_mcnemar_test():
    # Fagerland et al. (2013): 1 pair discordant one way, 7 the other, 13 concordant: exact conditional p = 0.070
    a = [1.0] * 1 + [0.0] * 7 + [1.0] * 6 + [0.0] * 7
    b = [0.0] * 1 + [1.0] * 7 + [1.0] * 6 + [0.0] * 7
    result = stats.paired(a, b, ("x", "y"))
    assert result.method == "exact McNemar" and result.n == 21
    assert round(result.p_value, 3) == 0.070 and result.difference == pytest.approx(-6 / 21)
    assert result.low < result.difference < result.high
    assert stats.paired([1.0, 0.0], [1.0, 0.0]).p_value == 1.0  # no discordant pair


def test_other_pairs_get_wilcoxon_and_the_smallest_exact_p_for_five_pairs_is_one_sixteenth():
    # five differences, all positive, no ties: the exact two-sided p is 2 / 2^5 = 0.0625
    result = stats.paired([0.9, 0.8, 0.7, 0.95, 0.6], [0.5, 0.5, 0.5, 0.5, 0.5])
    assert result.method == "Wilcoxon signed-rank" and result.p_value == pytest.approx(0.0625)
    assert stats.paired([0.5, 0.2], [0.5, 0.2]).p_value == 1.0
    assert stats.paired([], []).difference is None


def test_past_two_thousand_rows_a_mean_gets_students_t_interval():
    scores = [(i % 7) / 6 for i in range(3000)]  # 0, 1/6, ..., 1, repeating
    got = stats.interval(scores)
    mean = sum(scores) / len(scores)
    sd = (sum((s - mean) ** 2 for s in scores) / (len(scores) - 1)) ** 0.5
    half = 1.9607 * sd / len(scores) ** 0.5  # t(0.975, 2999) = 1.9607 (a t table's entry for large df)
    assert got.method == "t" and got.mean == pytest.approx(mean)
    assert got.low == pytest.approx(mean - half, abs=1e-4) and got.high == pytest.approx(mean + half, abs=1e-4)


def test_the_shipped_arithmetic_set_is_forty_right_sums_and_differences():
    from qwen_magics.evaluation import sums

    data = sums()
    assert list(data.columns) == ["a", "op", "b", "answer"] and len(data) == 40
    assert all(answer == (a + b if op == "+" else a - b) for a, op, b, answer in data.itertuples(index=False))
