from __future__ import annotations

import pytest

from evaluators.parsing import parse_pair_scores, parse_rating, parse_verdict


@pytest.mark.parametrize(("text", "expected"), [
    ("8 7", (8.0, 7.0)),
    ("8 7\nAssistant 1 gave more detail.", (8.0, 7.0)),
    ("  9    6  \n\nexplanation", (9.0, 6.0)),
    ("\n\n7\t8\n", (7.0, 8.0)),
    ("8/10 7/10", (8.0, 7.0)),
    ("10/10 9/10", (10.0, 9.0)),
    ("8 out of 10, 7 out of 10", (8.0, 7.0)),
    ("8, 7", (8.0, 7.0)),
    ("8，7", (8.0, 7.0)),
    ("8、7", (8.0, 7.0)),
    ("８ ７", (8.0, 7.0)),
    ("8.5 7", (8.5, 7.0)),
    ("Scores: 8 and 7", (8.0, 7.0)),
    ("Assistant 1: 8, Assistant 2: 7", (8.0, 7.0)),
    ("Assistant 1: 8/10\nAssistant 2: 7/10\nBoth were fine.", (8.0, 7.0)),
    ("Both answers are good.\nAssistant 1 scores 9, Assistant 2 scores 4.", (9.0, 4.0)),
    ("助手1：8分，助手2：7分", (8.0, 7.0)),
    ("Both answers are good.\n6 5", (6.0, 5.0)),
])
def test_pair_scores_parsed(text: str, expected: tuple[float, float]) -> None:
    assert parse_pair_scores(text) == expected


@pytest.mark.parametrize("text", [
    "", "   \n ", "no scores here", "11 7", "0 5", "8 -", "Assistant 1: 12, Assistant 2: 7",
    "8", "I can not judge these.",
])
def test_pair_scores_unparseable(text: str) -> None:
    assert parse_pair_scores(text) is None


@pytest.mark.parametrize(("text", "expected"), [
    ("[[A]]", "A"), ("Explanation...\n[[B]]", "B"), ("It is a tie. [[C]]", "C"),
    ("[[ a ]]", "A"), ("[[tie]]", "C"), ("Final verdict: [[A]]. So [[A]].", "A"),
    ("［［B］］", "B"),
])
def test_verdict_parsed(text: str, expected: str) -> None:
    assert parse_verdict(text) == expected


@pytest.mark.parametrize("text", ["", "A is better", "[A]", "[[A]] or maybe [[B]]", "[[D]]"])
def test_verdict_unparseable(text: str) -> None:
    assert parse_verdict(text) is None


@pytest.mark.parametrize(("text", "expected"), [
    ("Rating: [[8]]", 8.0), ("[[ 7.5 ]]", 7.5), ("[[8/10]]", 8.0), ("[[10]]", 10.0),
    ("Rating: [7]", 7.0), ("Rating: 6", 6.0), ("评分：[[９]]", 9.0), ("[[1]]", 1.0),
])
def test_rating_parsed(text: str, expected: float) -> None:
    assert parse_rating(text) == expected


@pytest.mark.parametrize("text", ["", "good answer", "[[11]]", "[[0]]", "[[8]] then [[9]]"])
def test_rating_unparseable(text: str) -> None:
    assert parse_rating(text) is None
