"""The lm-eval engine: lm-eval 0.4.13's own ``mmlu``, ``ceval-valid`` and ``cmmlu`` tasks on the
local data.

For each subject a generated config ``include``s lm-eval's own task file (so its description,
``doc_to_text``, choices, target, few-shot split and ``first_n`` sampler are used unchanged) and
replaces only where the data comes from: ``dataset_path: json`` with ``data_files`` written here
in the hub data set's schema (``cais/mmlu``: question, subject, choices, answer index;
``ceval/ceval-exam`` and ``haonan-li/cmmlu``: their CSV columns). The rows are the ones our
loader read and checked, so both engines score the same items and share a data fingerprint;
(pandas, through ``dataset_path: csv``, would turn a choice "0.50" into 0.5.) ``--limit`` keeps
the first N items of each subject, as the native engine does.

The model is any lm-eval ``LM``: lm-eval's ``hf`` for a checkpoint folder, or our ``arena``
class (``benchmarks.lm_eval_model``) for a model behind the control plane.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.engine import BenchmarkResults, ItemResult, predict, summarize
from benchmarks.loaders import LETTERS, BenchmarkData, Item
from benchmarks.suites import Suite, get_suite

Doc = dict[str, Any]


def _mmlu_doc(item: Item) -> Doc:
    return {"question": item.question, "subject": item.subject, "choices": list(item.choices),
            "answer": LETTERS.index(item.answer) if item.answer else None}


def _ceval_doc(item: Item) -> Doc:
    a, b, c, d = item.choices
    return {"id": item.id, "question": item.question, "A": a, "B": b, "C": c, "D": d,
            "answer": item.answer, "explanation": item.explanation or ""}


def _cmmlu_doc(item: Item) -> Doc:
    a, b, c, d = item.choices
    return {"Question": item.question, "A": a, "B": b, "C": c, "D": d, "Answer": item.answer}


DOCS: dict[str, Callable[[Item], Doc]] = {"mmlu": _mmlu_doc, "ceval": _ceval_doc,
                                          "cmmlu": _cmmlu_doc}


def lm_eval_tasks_dir() -> Path:
    import lm_eval

    return Path(lm_eval.__file__).resolve().parent / "tasks"


def _write_jsonl(path: Path, items: list[Item], doc: Callable[[Item], Doc]) -> None:
    with path.open("w", encoding="utf-8") as handle:
        for item in items:
            handle.write(json.dumps(doc(item), ensure_ascii=False) + "\n")


def write_tasks(data: BenchmarkData, split: str, root: Path, *,
                limit: int | None = None) -> dict[str, list[Item]]:
    """Configs and data for every subject of ``data`` under ``root``; task name → its items
    (in file order: lm-eval's ``doc_id`` indexes this list)."""
    suite = get_suite(data.suite)
    if split not in suite.lm_eval.splits:
        raise ValueError(f"lm-eval's {suite.title} tasks score {', '.join(suite.lm_eval.splits)}"
                         f", not {split!r}")
    root.mkdir(parents=True, exist_ok=True)
    dev = data.by_subject("dev")
    tasks: dict[str, list[Item]] = {}
    for subject, items in data.by_subject(split).items():
        items = items[:limit]
        files = {"dev": root / f"{subject}_dev.jsonl", suite.lm_eval.split_key:
                 root / f"{subject}_{split}.jsonl"}
        _write_jsonl(files["dev"], dev.get(subject, []), DOCS[suite.name])
        _write_jsonl(files[suite.lm_eval.split_key], items, DOCS[suite.name])
        name = suite.lm_eval.task.format(subject=subject)
        config = {
            "include": str(lm_eval_tasks_dir() / suite.lm_eval.config.format(subject=subject)),
            "task": name,
            "dataset_path": "json",
            "dataset_name": None,
            "dataset_kwargs": {"data_files": {k: str(v) for k, v in files.items()},
                               "cache_dir": str(root / "datasets-cache")},
        }
        (root / f"{name}.yaml").write_text(json.dumps(config, ensure_ascii=False, indent=1),
                                           encoding="utf-8")  # JSON is YAML
        tasks[name] = items
    return tasks


def results_from_samples(suite: Suite, tasks: dict[str, list[Item]],
                         samples: dict[str, list[dict[str, Any]]], *, shots: int,
                         fingerprint: str) -> BenchmarkResults:
    """Our result shape from lm-eval's logged samples (one log-likelihood per letter)."""
    results: list[ItemResult] = []
    for name, items in tasks.items():
        logged = sorted(samples.get(name, []), key=lambda s: s["doc_id"])
        if len(logged) != len(items):
            raise RuntimeError(f"lm-eval scored {len(logged)} of the {len(items)} items of {name}")
        for item, sample in zip(items, logged, strict=True):
            logprobs = [float(resp[0]) for resp in sample["filtered_resps"]]
            results.append(ItemResult(subject=item.subject, split=item.split, index=item.index,
                                      id=item.id, answer=item.answer,
                                      prediction=predict(logprobs), logprobs=logprobs,
                                      shots=shots))
    return summarize(suite.name, results, shots=shots, fingerprint=fingerprint, engine="lm-eval",
                     prompt_format="lm-eval")


def run_lm_eval(data: BenchmarkData, *, split: str, shots: int, root: Path, model: Any,
                model_args: dict[str, Any] | None = None, limit: int | None = None,
                batch_size: int = 16, device: str | None = None) -> BenchmarkResults:
    """Run lm-eval's tasks for the subjects in ``data`` with ``model`` (an ``LM`` or a registered
    name with ``model_args``); task files go under ``root``."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    tasks = write_tasks(data, split, root, limit=limit)
    evaluated = simple_evaluate(
        model=model, model_args=model_args, tasks=list(tasks), num_fewshot=shots,
        batch_size=batch_size, device=device, log_samples=True, bootstrap_iters=0,
        task_manager=TaskManager(include_path=str(root), include_defaults=False),
        verbosity="WARNING")
    if evaluated is None:
        raise RuntimeError("lm-eval returned no results")
    return results_from_samples(get_suite(data.suite), tasks, evaluated["samples"], shots=shots,
                                fingerprint=data.fingerprint)
