"""lm-eval's `local-completions` model and our registered `arena` model class run a 2-subject
multiple-choice sample through the gateway.

The same tasks run with lm-eval's own `hf` model on the same checkpoint; all must agree on every
log-likelihood, so the gateway + worker path computes exactly what transformers computes.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from tests.conftest import register

pytestmark = pytest.mark.e2e

SUBJECTS = {
    "astronomy": [
        ("What is the closest star to Earth?", "The Sun", "Sirius", "Vega", "Polaris", "A"),
        ("How many planets are in the solar system?", "Seven", "Eight", "Nine", "Ten", "B"),
        ("What is the largest planet?", "Mars", "Venus", "Jupiter", "Earth", "C"),
        ("Which planet is called the red planet?", "Venus", "Jupiter", "Saturn", "Mars", "D"),
    ],
    "world_religions": [
        ("Which city is sacred in Islam?", "Mecca", "Rome", "Kyoto", "Lhasa", "A"),
        ("What is the holy book of Sikhism?", "Vedas", "Guru Granth Sahib", "Torah", "Quran", "B"),
        ("Where was the Buddha born?", "Tibet", "India", "Lumbini", "China", "C"),
    ],
}


def _write_mmlu_layout(root: Path) -> None:
    """MMLU's official layout: data/{dev,test}/<subject>_{split}.csv, no header."""
    for split in ("dev", "test"):
        (root / "data" / split).mkdir(parents=True, exist_ok=True)
    for subject, rows in SUBJECTS.items():
        for split, part in (("dev", rows[:1]), ("test", rows[1:])):
            with (root / "data" / split / f"{subject}_{split}.csv").open("w", newline="") as f:
                csv.writer(f).writerows(part)


def _write_tasks(root: Path, data: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for subject in SUBJECTS:
        (root / f"{subject}.yaml").write_text(f"""
task: sample_{subject}
dataset_path: csv
dataset_kwargs:
  data_files:
    dev: {data}/data/dev/{subject}_dev.csv
    test: {data}/data/test/{subject}_test.csv
  column_names: [question, A, B, C, D, answer]
test_split: test
fewshot_split: dev
fewshot_config:
  sampler: first_n
output_type: multiple_choice
doc_to_text: "{{{{question.strip()}}}}\\nA. {{{{A}}}}\\nB. {{{{B}}}}\\nC. {{{{C}}}}\\nD. {{{{D}}}}\\nAnswer:"
doc_to_choice: ["A", "B", "C", "D"]
doc_to_target: "{{{{['A', 'B', 'C', 'D'].index(answer)}}}}"
metric_list:
  - metric: acc
""")


def _loglikelihoods(results: dict) -> dict[tuple[str, int], list[float]]:
    return {
        (task, sample["doc_id"]): [resp[0] for resp in sample["filtered_resps"]]
        for task, samples in results["samples"].items()
        for sample in samples
    }


def test_lm_eval_local_completions_agrees_with_hf(control_plane, start_worker, tiny_models, tmp_path):
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    _write_mmlu_layout(tmp_path / "mmlu")
    _write_tasks(tmp_path / "tasks", tmp_path / "mmlu")
    assert register(control_plane, name="tiny-llama", source=str(tiny_models["llama"])).status_code == 201
    start_worker("tiny-llama")

    tasks = [f"sample_{s}" for s in SUBJECTS]
    common = {"tasks": tasks, "num_fewshot": 1, "log_samples": True,
              "task_manager": TaskManager(include_path=str(tmp_path / "tasks"))}
    via_gateway = simple_evaluate(
        model="local-completions",
        model_args={"model": "tiny-llama", "base_url": control_plane.url + "/v1/completions",
                    "tokenizer": str(tiny_models["llama"]), "tokenizer_backend": "huggingface",
                    "num_concurrent": 4, "max_retries": 1, "add_bos_token": True},
        **common,
    )
    import benchmarks.lm_eval_model  # noqa: F401  # registers "arena"

    via_arena = simple_evaluate(
        model="arena",
        model_args={"model": "tiny-llama", "base_url": control_plane.url,
                    "tokenizer": str(tiny_models["llama"])},
        **common,
    )
    local = simple_evaluate(
        model="hf", model_args={"pretrained": str(tiny_models["llama"]), "add_bos_token": True}, device="cpu", **common)

    local_ll = _loglikelihoods(local)
    for remote in (via_gateway, via_arena):
        remote_ll = _loglikelihoods(remote)
        assert remote_ll.keys() == local_ll.keys() and len(remote_ll) == 5
        for key, values in remote_ll.items():
            assert values == pytest.approx(local_ll[key], abs=1e-3), key
        for task in tasks:
            assert remote["results"][task]["acc,none"] == local["results"][task]["acc,none"]
