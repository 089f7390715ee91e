"""Golden k-shot prompts for the three suites, and the token budget."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from benchmarks.loaders import load_benchmark
from benchmarks.prompts import build_prompt, build_prompts

Sample = Callable[[str], Path]


def test_mmlu_prompt(sample: Sample) -> None:
    data = load_benchmark(sample("mmlu"), "mmlu", splits=["dev", "test"])
    item = data.by_subject("test")["abstract_algebra"][0]
    prompt = build_prompt(item, data.by_subject("dev")["abstract_algebra"], shots=2)
    assert prompt.shots == 2
    assert prompt.text == (
        "The following are multiple choice questions (with answers) about abstract algebra.\n\n"
        "abstract_algebra q0\nA. abstract_algebra a0\nB. abstract_algebra b0\n"
        "C. abstract_algebra c0\nD. abstract_algebra d0\nAnswer: A\n\n"
        "abstract_algebra q1\nA. abstract_algebra a1\nB. abstract_algebra b1\n"
        "C. abstract_algebra c1\nD. abstract_algebra d1\nAnswer: B\n\n"
        "abstract_algebra test q0\nA. abstract_algebra test a0\nB. abstract_algebra test b0\n"
        "C. abstract_algebra test c0\nD. abstract_algebra test d0\nAnswer:")


def test_ceval_prompt_uses_the_chinese_subject_name(sample: Sample) -> None:
    data = load_benchmark(sample("ceval"), "ceval", splits=["dev", "test"])
    item = data.by_subject("test")["college_physics"][1]
    prompt = build_prompt(item, data.by_subject("dev")["college_physics"], shots=1)
    assert prompt.text == (
        "以下是中国关于大学物理考试的单项选择题，请选出其中的正确答案。\n\n"
        "college_physics逻辑 q0\nA. college_physics逻辑 a0\nB. college_physics逻辑 b0\n"
        "C. college_physics逻辑 c0\nD. college_physics逻辑 d0\n答案：A\n\n"
        "college_physics测试 q1\nA. college_physics测试 a1\nB. college_physics测试 b1\n"
        "C. college_physics测试 c1\nD. college_physics测试 d1\n答案：")


def test_cmmlu_prompt_is_the_official_one(sample: Sample) -> None:
    data = load_benchmark(sample("cmmlu"), "cmmlu")
    item = data.by_subject("test")["ancient_chinese"][0]
    prompt = build_prompt(item, data.by_subject("dev")["ancient_chinese"], shots=1)
    assert prompt.text == (
        "以下是关于古汉语的单项选择题，请直接给出正确答案的选项。\n\n"
        "题目：ancient_chinese题 q0\nA. ancient_chinese题 a0\nB. ancient_chinese题 b0\n"
        "C. ancient_chinese题 c0\nD. ancient_chinese题 d0\n答案是：A\n\n"
        "题目：ancient_chinese试 q0\nA. ancient_chinese试 a0\nB. ancient_chinese试 b0\n"
        "C. ancient_chinese试 c0\nD. ancient_chinese试 d0\n答案是：")


def test_zero_shot_and_shots_come_from_the_items_own_subject(sample: Sample) -> None:
    data = load_benchmark(sample("mmlu"), "mmlu", splits=["dev", "test"])
    prompts = build_prompts(data.items["test"], data.items["dev"], shots=5)
    assert [p.shots for p in prompts] == [5] * 6
    for p in prompts:
        assert p.text.count("\nAnswer:") == 6
        assert p.text.count(f"{p.item.subject} q") == 5
    zero = build_prompt(data.items["test"][0], data.items["dev"], shots=0)
    assert zero.shots == 0 and zero.text.count("Answer:") == 1


def test_budget_drops_shots_from_the_end(sample: Sample) -> None:
    data = load_benchmark(sample("mmlu"), "mmlu", splits=["dev", "test"])
    item, dev = data.items["test"][0], data.by_subject("dev")["abstract_algebra"]
    full = build_prompt(item, dev, shots=5)
    three = build_prompt(item, dev, shots=3)
    fits_three = build_prompt(item, dev, shots=5, count_tokens=len, max_tokens=len(three.text) + 1)
    assert (fits_three.shots, fits_three.text) == (3, three.text)
    assert build_prompt(item, dev, shots=5, count_tokens=len, max_tokens=10).shots == 0
    assert build_prompt(item, dev, count_tokens=len, max_tokens=len(full.text) + 1).shots == 5


def test_too_few_dev_items_or_a_test_item_as_shot_are_errors(sample: Sample) -> None:
    data = load_benchmark(sample("ceval"), "ceval", splits=["dev", "test"])
    with pytest.raises(ValueError, match="6-shot prompts need 6 dev items"):
        build_prompts(data.items["test"], data.items["dev"], shots=6)
    with pytest.raises(ValueError, match="has no answer"):
        build_prompt(data.items["test"][0], data.items["test"], shots=1)
