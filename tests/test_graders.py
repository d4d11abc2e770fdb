"""Graders against hand-computed cases (unicode, punctuation, numbers), and the bootstrap."""

import numpy as np
import pytest

from common import graders
from evaluation.stats import bootstrap_mean, gap_closed


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The Cat, sat!", "cat sat"),
        ("  Ａｎ  ÉCOLE — «très» bien… ", "école très bien"),  # fullwidth NFKC, casefold, unicode punctuation
        ("x+y = 3$", "x y 3"),  # symbols become spaces
        ("Straße", "strasse"),  # casefold, not lower
    ],
)
def test_normalize(text, expected):
    assert graders.normalize(text) == expected


def test_exact_match_ignores_case_punctuation_articles():
    assert graders.exact_match("The Eiffel Tower.", "eiffel tower") == 1.0
    assert graders.exact_match("Eiffel Towers", "eiffel tower") == 0.0
    assert graders.exact_match("", "") == 1.0


def test_token_f1_hand_computed():
    # pred = [paris, capital, of, france] ("the" dropped), ref = [paris]: P = 1/4, R = 1, F1 = 0.4
    assert graders.token_f1("Paris, the capital of... France", "Paris") == pytest.approx(0.4)
    assert graders.token_f1("red red blue", "red blue blue") == pytest.approx(2 / 3)  # common: red 1 + blue 1
    assert graders.token_f1("Café", "cafe") == 0.0  # accents are kept
    assert graders.token_f1("", "x") == 0.0
    assert graders.token_f1("!!!", "") == 1.0  # both empty after normalization


def test_contains_answer_whole_words():
    assert graders.contains_answer("I think it is the `for` loop, definitely.", "For loop") == 1.0
    assert graders.contains_answer("a forum", "for") == 0.0  # no partial words
    assert graders.contains_answer("anything", "") == 0.0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("It costs 1,234.5 euros, not -3 or 2e-3 or .5", [1234.5, -3.0, 0.002, 0.5]),
        ("−7 and ４２", [-7.0, 42.0]),  # unicode minus, fullwidth digits
        ("no numbers here.", []),
        ("version 3.11.", [3.11]),
    ],
)
def test_numbers(text, expected):
    assert graders.numbers(text) == pytest.approx(expected)


def test_numeric_match_tolerance_and_applicability():
    assert graders.numeric_match("The answer is 42.", "42") == 1.0
    assert graders.numeric_match("first 7, finally 3.0", "3") == 1.0  # last number counts
    assert graders.numeric_match("3.1", "3.14159", rel_tol=0.05) == 1.0
    assert graders.numeric_match("3.1", "3.14159") == 0.0
    assert graders.numeric_match("no idea", "12") == 0.0
    assert graders.numeric_match("12", "twelve") is None  # the grader does not apply


def test_split_trace_and_format():
    text = "<think>\nadd 2 and 2\n</think>\n\n4"
    assert graders.split_trace(text) == ("add 2 and 2", "4")
    assert graders.final_answer(text) == "4"
    assert graders.format_adherence(text) == 1.0
    assert graders.format_adherence("<think>\n\n</think>\n\n4") == 0.0  # empty trace
    assert graders.format_adherence("<think>still thinking") == 0.0  # never closed: no answer
    assert graders.final_answer("<think>still thinking") == ""
    assert graders.format_adherence("<think>x</think>\n\n  ") == 0.0  # empty answer
    assert graders.final_answer("plain answer") == "plain answer"
    assert graders.format_adherence("plain answer") == 0.0


def test_string_scores_grade_the_part_after_think():
    scores = graders.string_scores("<think>the answer is 7, not 9</think>\n\nNine.", "9")
    assert scores["exact_match"] == 0.0  # "nine" is not "9"
    assert scores["numeric"] == 0.0  # the trace's numbers are not graded
    assert scores["format"] == 1.0


def test_judge_prompt_and_parse():
    messages = graders.judge_messages("Q?", "ref", "")
    assert "(empty)" in messages[0]["content"] and "ref" in messages[0]["content"]
    assert graders.parse_judge('{"score": 5}') == 1.0
    assert graders.parse_judge(' {"score": 2} ') == 0.25
    assert graders.parse_judge('{"score": 6}') is None
    assert graders.parse_judge("five") is None


@pytest.mark.parametrize(
    ("student_first", "teacher_first", "expected"),
    [
        ("1", "2", 1.0),  # the student wins in both orders
        ("2", "1", 0.0),  # the teacher wins in both orders
        ("1", "1", 0.5),  # position bias: the first answer always wins -> tie
        ("2", "2", 0.5),
        ("tie", "2", 0.5),
        ("tie", "tie", 0.5),
        (None, "2", None),
    ],
)
def test_pairwise_both_orders(student_first, teacher_first, expected):
    assert graders.pairwise_preference(student_first, teacher_first) == expected
    assert graders.parse_pairwise('{"better": "tie"}') == "tie"
    assert graders.parse_pairwise('{"better": 1}') is None


def test_bootstrap_covers_known_mean():
    rng = np.random.default_rng(1)
    values = list(rng.binomial(1, 0.3, size=2000).astype(float))
    stat = bootstrap_mean(values, samples=2000, seed=0)
    # standard error of a Bernoulli(0.3) mean over 2000: sqrt(0.21/2000) = 0.01025 -> 95% half-width ~0.0201
    assert stat["lo"] < 0.3 < stat["hi"]
    assert stat["hi"] - stat["lo"] == pytest.approx(2 * 1.96 * np.sqrt(0.3 * 0.7 / 2000), rel=0.15)
    assert stat["n"] == 2000


def test_bootstrap_skips_none_and_constant_data():
    assert bootstrap_mean([None, 1.0, 1.0]) == {"mean": 1.0, "lo": 1.0, "hi": 1.0, "n": 2}
    assert bootstrap_mean([None, None])["mean"] is None


def test_gap_closed():
    student, base, teacher = [0.5] * 10, [0.0] * 10, [1.0] * 10
    assert gap_closed(student, base, teacher)["mean"] == pytest.approx(0.5)
    assert gap_closed([1.0, 0.0], [0.5, 0.5], [0.5, 0.5])["mean"] is None  # teacher no better than base
    assert gap_closed([0.4, 0.3], [0.2, 0.1], [0.1, 0.0])["mean"] is None  # teacher worse: no gap, not a negative share
    noisy = gap_closed([1, 0, 1, 1, 0, 1, 0, 1], [0] * 8, [1] * 8, samples=500)
    assert noisy["mean"] == pytest.approx(5 / 8)
    assert noisy["lo"] < 5 / 8 < noisy["hi"] <= 1.0
