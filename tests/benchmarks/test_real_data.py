"""The real MMLU, C-Eval and CMMLU zips load whole, with the published row counts and subjects.
Skipped where the files are absent."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.loaders import load_benchmark
from benchmarks.prompts import build_prompts
from benchmarks.suites import get_suite

DATA = Path("/work/shared/data/benchmarks")
COUNTS = {
    "mmlu": {"dev": 285, "val": 1531, "test": 14042},
    "ceval": {"dev": 260, "val": 1346, "test": 12342},
    "cmmlu": {"dev": 335, "test": 11582},
}


@pytest.mark.parametrize("suite", sorted(COUNTS))
def test_real_zip_loads_with_published_counts(suite: str) -> None:
    archive = DATA / f"{suite}.zip"
    if not archive.is_file():
        pytest.skip(f"{archive} is not here")
    data = load_benchmark(archive, suite)
    assert {split: len(items) for split, items in data.items.items()} == COUNTS[suite]
    for split in COUNTS[suite]:
        assert set(data.by_subject(split)) == set(get_suite(suite).subjects)
    answered = [i for split in data.items.values() for i in split if i.answer is not None]
    assert len(answered) == sum(COUNTS[suite].values()) - (12342 if suite == "ceval" else 0)
    prompts = build_prompts(data.items["dev"][:1], data.items["dev"])  # every dev file has 5
    assert prompts[0].shots == 5
