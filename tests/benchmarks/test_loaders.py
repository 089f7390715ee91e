"""Loading the official layouts from folders and zips; malformed data named by path and line."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from benchmarks.loaders import BenchmarkDataError, Item, load_benchmark
from tests.benchmarks.conftest import write_csv, zip_folder

Sample = Callable[[str], Path]


def test_mmlu_folder_items(sample: Sample) -> None:
    data = load_benchmark(sample("mmlu"), "mmlu")
    assert {split: len(items) for split, items in data.items.items()} == {
        "dev": 10, "val": 4, "test": 6}
    tricky = data.by_subject("test")["anatomy"][1]
    assert tricky == Item(suite="mmlu", subject="anatomy", split="test", index=1, id="1",
                          question='Which "bone",\nif any?',
                          choices=("anatomy test a1", "anatomy test b1", "anatomy test c1",
                                   "anatomy test d1"), answer="C")
    assert len(data.file_hashes) == 6 and len(data.fingerprint) == 64


def test_ceval_test_split_has_no_answers_and_dev_has_explanations(sample: Sample) -> None:
    data = load_benchmark(sample("ceval"), "ceval")
    assert [len(data.items[s]) for s in ("dev", "val", "test")] == [10, 6, 4]
    assert all(item.answer is None for item in data.items["test"])
    dev = data.by_subject("dev")["logic"][0]
    assert (dev.id, dev.answer, dev.explanation) == ("0", "A", "logic逻辑 解析0")


def test_cmmlu_and_subject_filter(sample: Sample) -> None:
    data = load_benchmark(sample("cmmlu"), "cmmlu", splits=["test"], subjects=["logical"])
    assert list(data.items) == ["test"]
    assert [(i.subject, i.id, i.answer) for i in data.items["test"]] == [
        ("logical", "0", "D"), ("logical", "1", "B"), ("logical", "2", "A")]


@pytest.mark.parametrize("suite", ["mmlu", "ceval", "cmmlu"])
@pytest.mark.parametrize("prefix", ["", "release-1.0/"])
def test_zip_reads_like_the_folder(sample: Sample, tmp_path: Path, suite: str,
                                   prefix: str) -> None:
    folder = sample(suite)
    archive = zip_folder(folder, tmp_path / f"{suite}.zip", prefix=prefix)
    from_folder, from_zip = load_benchmark(folder, suite), load_benchmark(archive, suite)
    assert from_zip.items == from_folder.items
    assert from_zip.fingerprint == from_folder.fingerprint


def test_fingerprint_changes_with_the_data(sample: Sample) -> None:
    folder = sample("cmmlu")
    before = load_benchmark(folder, "cmmlu").fingerprint
    path = folder / "test" / "logical.csv"
    path.write_text(path.read_text(encoding="utf-8").replace("试 q0", "试 q0!"), encoding="utf-8")
    assert load_benchmark(folder, "cmmlu").fingerprint != before


def test_bad_row_is_reported_with_path_and_line(sample: Sample) -> None:
    folder = sample("mmlu")
    path = folder / "data" / "test" / "anatomy_test.csv"
    # line 1: a row; lines 2-3: the quoted two-line question; line 4: a row with a bad answer
    rows = [["q0", "a", "b", "c", "d", "A"], ["two\nlines", "a", "b", "c", "d", "B"],
            ["q2", "a", "b", "c", "d", "E"]]
    write_csv(path, rows)
    with pytest.raises(BenchmarkDataError, match=r"anatomy_test\.csv:4: answer must be one of"):
        load_benchmark(folder, "mmlu", splits=["test"])
    write_csv(path, [["q0", "a", "b", "c", "d", "A"], ["q1", "a", "b", "c", "B"]])
    with pytest.raises(BenchmarkDataError, match=r"anatomy_test\.csv:2: expected 6 fields, got 5"):
        load_benchmark(folder, "mmlu", splits=["test"])


def test_bad_header_encoding_and_names_are_errors(sample: Sample, tmp_path: Path) -> None:
    folder = sample("ceval")
    val = folder / "val" / "logic_val.csv"
    write_csv(val, [["0", "q", "a", "b", "c", "d", "A"]], ["id", "q", "A", "B", "C", "D", "answer"])
    with pytest.raises(BenchmarkDataError, match=r"logic_val\.csv:1: expected header"):
        load_benchmark(folder, "ceval", splits=["val"])
    val.write_bytes("id,question,A,B,C,D,answer\n0,逻辑,a,b,c,d,A\n".encode("gbk"))
    with pytest.raises(BenchmarkDataError, match=r"logic_val\.csv:2: not UTF-8"):
        load_benchmark(folder, "ceval", splits=["val"])
    val.unlink()
    with pytest.raises(BenchmarkDataError, match="no val file for logic"):
        load_benchmark(folder, "ceval", splits=["val"], subjects=["logic"])
    write_csv(folder / "val" / "logics_val.csv", [])
    with pytest.raises(BenchmarkDataError, match="unknown C-Eval subject 'logics'"):
        load_benchmark(folder, "ceval", splits=["val"])


def test_zip_errors_name_the_member_and_several_roots_are_refused(sample: Sample,
                                                                  tmp_path: Path) -> None:
    folder = sample("cmmlu")
    write_csv(folder / "test" / "logical.csv", [["0", "q", "a", "b", "c", "d", "X"]],
              ["", "Question", "A", "B", "C", "D", "Answer"])
    archive = zip_folder(folder, tmp_path / "cmmlu.zip", prefix="CMMLU/")
    with pytest.raises(BenchmarkDataError, match=r"cmmlu\.zip!CMMLU/test/logical\.csv:2"):
        load_benchmark(archive, "cmmlu", splits=["test"])
    shutil.copytree(folder / "test", folder / "copy" / "test")
    with pytest.raises(BenchmarkDataError, match="several roots"):
        load_benchmark(folder, "cmmlu", splits=["test"])
    with pytest.raises(BenchmarkDataError, match="no such folder"):
        load_benchmark(tmp_path / "missing", "cmmlu")
