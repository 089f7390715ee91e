"""``evaluators.jobs``: request checks, and ``run_judge`` as the job queue calls it."""

from __future__ import annotations

import json
from pathlib import Path

import pydantic
import pytest

from evaluators.errors import JudgeRequestError
from evaluators.jobs import JudgeRequest, run_judge, validate_request
from tests.evaluators.test_multiturn import LENGTHS_A, LENGTHS_B, MT_BENCH

pytestmark = pytest.mark.e2e


def jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def mt_bench_answers(path: Path, model: str, lengths: dict[str, tuple[int, ...]]) -> str:
    return jsonl(path, [{"question_id": qid, "model_id": model,
                         "choices": [{"index": 0, "turns": ["z" * n for n in turns]}]}
                        for qid, turns in lengths.items()])


@pytest.fixture()
def files(tmp_path: Path) -> dict[str, str]:
    return {"questions": jsonl(tmp_path / "question.jsonl", MT_BENCH),
            "a": mt_bench_answers(tmp_path / "a.jsonl", "model-a", LENGTHS_A),
            "b": mt_bench_answers(tmp_path / "b.jsonl", "model-b", LENGTHS_B),
            "bad": jsonl(tmp_path / "bad.jsonl", [{"question_id": 1, "model_id": "m"}])}


@pytest.mark.parametrize(("fields", "bad"), [
    ({"answers_a": "a"}, ("model_b", "answers_b")),
    ({"answers_a": "a", "model_a": "m", "answers_b": "b"}, ("model_a", "answers_a")),
    ({"kind": "single", "answers_a": "a", "model_b": "m"}, ("model_b", "answers_b")),
    ({"answers_a": "missing", "answers_b": "b"}, ("answers_a",)),
    ({"answers_a": "a", "answers_b": "bad"}, ("answers_b",)),
    ({"questions": "missing", "answers_a": "a", "answers_b": "b"}, ("questions",)),
    ({"questions": "bad", "answers_a": "a", "answers_b": "b"}, ("questions",)),
])
def test_bad_requests_name_the_field(files, tmp_path: Path, fields: dict,
                                     bad: tuple[str, ...]) -> None:
    values = {k: files.get(v, str(tmp_path / v)) if k != "kind" and k[:5] != "model" else v
              for k, v in fields.items()}
    request = JudgeRequest(**{"kind": "ratio", "questions": files["questions"], **values})
    with pytest.raises(JudgeRequestError) as info:
        validate_request(request)
    assert info.value.fields == bad
    assert isinstance(info.value, ValueError)
    assert str(info.value).startswith(" / ".join(bad) + ": ")


def test_request_schema() -> None:
    with pytest.raises(pydantic.ValidationError):
        JudgeRequest(kind="ratio", answers_c="x")  # type: ignore[call-arg]
    with pytest.raises(pydantic.ValidationError):
        JudgeRequest(kind="elo")  # type: ignore[arg-type]
    with pytest.raises(pydantic.ValidationError):
        JudgeRequest(kind="ratio", concurrency=0)
    good = JudgeRequest(kind="pairwise", model_a="x", model_b="y")
    assert len(validate_request(good)) == 12  # the demo set
    assert JudgeRequest(**good.model_dump()) == good  # the job row round-trips


def test_answer_files_and_judge_from_settings(judge_server, files, tmp_path: Path,
                                              monkeypatch) -> None:
    monkeypatch.setenv("ARENA_JUDGE_BASE_URL", judge_server.url)
    monkeypatch.setenv("ARENA_JUDGE_MODEL", "env-judge")
    monkeypatch.setenv("ARENA_JUDGE_API_KEY", "judge-secret")
    stages: list[tuple[str, int, int]] = []
    request = JudgeRequest(kind="ratio", questions=files["questions"], answers_a=files["a"],
                           answers_b=files["b"])
    payload = run_judge(request, store_path=tmp_path / "store" / "j.db",
                        base_url="http://unused", api_key=None,
                        on_progress=lambda *s: stages.append(s))
    assert {body["model"] for body in judge_server.state.requests} == {"env-judge"}
    assert set(judge_server.state.authorization) == {"Bearer judge-secret"}
    assert payload["judge_model"] == "env-judge" and payload["models"] == ["model-a", "model-b"]
    assert payload["judge_calls"] == 7 and payload["questions"] == 4
    assert stages[0] == ("judging", 0, 7) and stages[-1] == ("judging", 7, 7)
    result = json.loads(json.dumps(payload, allow_nan=False))["result"]
    assert result["overall"]["ratio"] == pytest.approx(100 * 39 / 25)
    assert result["by_turn"]["2"]["ratio"] == pytest.approx(160.0)
    assert [c["category"] for c in payload["categories"]] == ["extraction", "math", "writing"]
    assert payload["categories"][1]["ratio"] == pytest.approx(175.0)

    # everything unparseable: the ratio over nothing is NaN in Python and null in the payload
    judge_server.state.garble = {"Name a colour."}
    only_v1 = jsonl(tmp_path / "v1.jsonl", [MT_BENCH[-1]])
    payload = run_judge(JudgeRequest(kind="ratio", questions=only_v1, answers_a=files["a"],
                                     answers_b=files["b"]),
                        store_path=tmp_path / "other.db", base_url="http://unused",
                        api_key=None, judge_api_key="explicit")
    assert judge_server.state.authorization[-1] == "Bearer explicit"
    assert payload["result"]["overall"]["ratio"] is None
    assert payload["result"]["unparseable"] == 1 and payload["categories"] == []
    json.dumps(payload, allow_nan=False)


def test_models_through_the_gateway(judge_server, chat_server, files, tmp_path: Path) -> None:
    chat_server.state.lengths = {"m1": (150, 200), "m2": (50, 100)}
    stages: list[tuple[str, int, int]] = []
    request = JudgeRequest(kind="pairwise", questions=files["questions"], model_a="m1",
                           model_b="m2", judge_model="judge-1",
                           judge_base_url=judge_server.url, max_tokens=32, concurrency=2)
    store = tmp_path / "data" / "judgments.db"
    payload = run_judge(request, store_path=store, base_url=chat_server.url, api_key="cp-key",
                        on_progress=lambda *s: stages.append(s))
    assert [s for s in stages if s[0] != "judging"][-1] == ("answers m2", 4, 4)
    assert ("answers m1", 4, 4) in stages and stages[-1] == ("judging", 14, 14)
    assert (store.parent / "answers-m1.jsonl").exists()
    overall = payload["result"]["overall"]
    assert (overall["wins"], overall["ties"], overall["losses"]) == (7, 0, 0)
    assert set(payload["result"]["by_turn"]) == {"1", "2"}
    assert payload["categories"][0] == {"category": "extraction",
                                        **payload["result"]["by_category"]["extraction"]}

    judge_server.state.reset_counts()
    chat_server.state.requests.clear()
    again = run_judge(request, store_path=store, base_url=chat_server.url, api_key="cp-key")
    assert judge_server.state.calls == 0 and chat_server.state.requests == []
    assert again["result"] == payload["result"] and again["judge_calls"] == 0
