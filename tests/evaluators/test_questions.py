from __future__ import annotations

import json
from pathlib import Path

import pytest

from evaluators.answers import by_question, read_answers
from evaluators.errors import InputFileError
from evaluators.questions import demo_questions, read_questions

REAL = Path("/work/shared/data/questions")


def write(path: Path, *lines: object) -> Path:
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x, ensure_ascii=False)
                              for x in lines) + "\n", encoding="utf-8")
    return path


def test_demo_set_is_bilingual_with_four_categories() -> None:
    questions = demo_questions()
    assert len(questions) == 12
    assert {q.category for q in questions} == {"knowledge", "writing", "reasoning", "coding"}
    assert {q.language for q in questions} == {"en", "zh"}
    assert len({q.id for q in questions}) == 12


def test_vicuna_mtbench_and_llmzoo_records(tmp_path: Path) -> None:
    path = write(tmp_path / "q.jsonl",
                 {"question_id": 1, "category": "generic", "text": "Hello?"},
                 {"question_id": 2, "category": "math", "turns": ["2+2?", "Times 3?"],
                  "reference": ["4", "12"]},
                 "",
                 {"id": 3, "label": "generic", "query": "如何提高我的时间管理技能？"})
    q1, q2, q3 = read_questions(path)
    assert (q1.id, q1.category, q1.turns, q1.language) == ("1", "generic", ("Hello?",), "en")
    assert q2.turns == ("2+2?", "Times 3?") and q2.reference == ("4", "12")
    assert (q3.id, q3.category, q3.language) == ("3", "generic", "zh")


@pytest.mark.parametrize(("line", "message"), [
    ("{not json", "invalid JSON"),
    (json.dumps({"question_id": 1, "text": "x"}), "missing field 'category'"),
    (json.dumps({"question_id": 1, "category": "c"}), "missing field 'turns' or 'text'"),
    (json.dumps({"id": 1, "query": "x"}), "missing field 'label'"),
    (json.dumps([1, 2]), "expected a JSON object"),
])
def test_bad_question_lines_name_path_and_line(tmp_path: Path, line: str, message: str) -> None:
    path = write(tmp_path / "bad.jsonl", {"question_id": 0, "category": "c", "text": "ok"}, line)
    with pytest.raises(InputFileError, match=message) as info:
        read_questions(path)
    assert str(info.value).startswith(f"{path}:2:")


def test_duplicate_question_id(tmp_path: Path) -> None:
    row = {"question_id": 1, "category": "c", "text": "x"}
    with pytest.raises(InputFileError, match="duplicate"):
        read_questions(write(tmp_path / "d.jsonl", row, row))


@pytest.mark.parametrize(("name", "count"), [
    ("vicuna_bench.jsonl", 80), ("mt_bench.jsonl", 80),
    ("llmzoo_en100.jsonl", 100), ("llmzoo_zh100.jsonl", 100),
])
def test_real_question_sets(name: str, count: int) -> None:
    path = REAL / name
    if not path.exists():
        pytest.skip(f"{path} not present")
    questions = read_questions(path)
    assert len(questions) == count
    assert all(q.turns and q.category for q in questions)
    if name == "mt_bench.jsonl":
        assert all(len(q.turns) == 2 for q in questions)
    if name == "llmzoo_zh100.jsonl":
        assert sum(q.language == "zh" for q in questions) > 90


def test_fastchat_mtbench_and_llmzoo_answers(tmp_path: Path) -> None:
    path = write(tmp_path / "a.jsonl",
                 {"question_id": 1, "text": "Answer one", "answer_id": "x",
                  "model_id": "vicuna-7b", "metadata": {}},
                 {"question_id": 81, "model_id": "m", "choices": [{"index": 0,
                                                                   "turns": ["t1", "t2"]}]})
    one, two = read_answers(path)
    assert (one.question_id, one.model, one.text) == ("1", "vicuna-7b", "Answer one")
    assert (two.text, two.turns) == ("t1", ("t1", "t2"))
    assert by_question([one]) == {"1": "Answer one"}
    renamed = read_answers(path, model="mine")
    assert {a.model for a in renamed} == {"mine"}


def test_bad_answer_line(tmp_path: Path) -> None:
    path = write(tmp_path / "a.jsonl", {"question_id": 1, "model_id": "m"})
    with pytest.raises(InputFileError, match=r"a\.jsonl:1: missing field 'text'"):
        read_answers(path)
