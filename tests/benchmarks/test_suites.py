"""The subject tables: the official subject counts, categories and Chinese names."""

from __future__ import annotations

from collections import Counter

import pytest

from benchmarks.suites import get_suite


def category_sizes(name: str) -> dict[str, int]:
    suite = get_suite(name)
    return dict(Counter(c for s in suite.subjects.values() for c in s.categories))


def test_mmlu_has_57_subjects_in_four_categories() -> None:
    suite = get_suite("mmlu")
    assert len(suite.subjects) == 57
    assert category_sizes("mmlu") == {"STEM": 18, "humanities": 13, "social sciences": 12,
                                      "other": 14}
    assert suite.subject("anatomy").categories == ("other",)  # health → other, as in the paper
    assert suite.subject("high_school_us_history").title == "high school us history"


def test_ceval_has_52_subjects_the_hard_subset_and_chinese_names() -> None:
    suite = get_suite("ceval")
    assert len(suite.subjects) == 52
    assert category_sizes("ceval") == {"STEM": 20, "Social Science": 10, "Humanities": 11,
                                       "Other": 11}
    assert len(suite.groups["hard"]) == 8 and set(suite.groups["hard"]) <= set(suite.subjects)
    assert suite.subject("clinical_medicine").categories == ("Other",)
    assert suite.subject("computer_network").title == "计算机网络"
    assert all(s.name_zh for s in suite.subjects.values())


def test_cmmlu_has_67_subjects_in_five_groups() -> None:
    suite = get_suite("cmmlu")
    assert len(suite.subjects) == 67
    assert category_sizes("cmmlu") == {"STEM": 17, "Humanities": 13, "Social Science": 22,
                                       "Other": 15, "China specific": 15}
    assert suite.subject("ancient_chinese").categories == ("Social Science", "China specific")
    # every subject has a main group besides "China specific"
    assert all(set(s.categories) - {"China specific"} for s in suite.subjects.values())
    assert suite.subject("logical").title == "逻辑学"


def test_unknown_names_suggest_close_matches() -> None:
    with pytest.raises(KeyError, match="did you mean cmmlu"):
        get_suite("cmmluu")
    with pytest.raises(KeyError, match="did you mean anatomy"):
        get_suite("mmlu").subject("anatomi")
