"""The demo's own benchmark samples load with the official-layout loaders."""

from __future__ import annotations

from collections import Counter

from benchmarks.loaders import load_benchmark
from benchmarks.samples import write_ceval_sample, write_mmlu_sample


def test_samples_load_in_the_official_layouts(tmp_path):
    mmlu = load_benchmark(write_mmlu_sample(tmp_path / "mmlu"), "mmlu", splits=["dev", "test"])
    ceval = load_benchmark(write_ceval_sample(tmp_path / "ceval"), "ceval",
                           splits=["dev", "val"])
    assert {k: len(v) for k, v in mmlu.items.items()} == {"dev": 10, "test": 16}
    assert {k: len(v) for k, v in ceval.items.items()} == {"dev": 10, "val": 12}
    answers = Counter(item.answer for item in mmlu.items["test"] + ceval.items["val"])
    assert set(answers) == set("ABCD") and max(answers.values()) <= 9  # no letter dominates
