"""One benchmark run, as a library call: ``arena bench run`` and the job queue both use it.

:func:`validate_request` checks a :class:`BenchRequest` (and that its data loads) and returns it
with the defaults filled in; :func:`run_benchmark` scores a model served behind the control
plane, :func:`run_benchmark_local` a checkpoint folder in-process. Both return the summary that
``arena bench run --output`` writes: the engine's ``to_dict()`` (items included) plus ``split``,
``model``, ``data``, ``limit``, ``n_items``, ``engine`` and the token budget used.

Engines: ``native`` (ours: one forward pass per question, fewer shots where a prompt would
overflow the context) and ``lm-eval`` (lm-eval 0.4.13's own task definitions; its ``hf`` model
for a folder, our ``arena`` model class through the control plane). Prompts are the suite's
``official`` format by default for the native engine; ``prompt_format="lm-eval"`` makes it score
exactly lm-eval's prompts, which the lm-eval engine always uses.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx

from benchmarks.budget import TokenBudget, load_checkpoint_tokenizer, local_budget, remote_budget
from benchmarks.engine import BenchmarkResults, score_items
from benchmarks.loaders import BenchmarkData, BenchmarkDataError, load_benchmark
from benchmarks.prompts import DEFAULT_SHOTS
from benchmarks.scorers import DEFAULT_BATCH, LocalScorer, Scorer, WorkerScorer
from benchmarks.suites import PROMPT_FORMATS, get_suite

ENGINES = ("native", "lm-eval")
DEFAULT_SPLIT = {"mmlu": "test", "ceval": "val", "cmmlu": "test"}  # C-Eval test hides answers
Progress = Callable[[int, int], None]


class BenchmarkRequestError(ValueError):
    """A request field that can not be run; ``field`` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


@dataclass(frozen=True)
class BenchRequest:
    """What to score (the model is named by the caller)."""

    suite: str  # mmlu | ceval | cmmlu
    data: str  # the suite's official folder or zip
    split: str | None = None  # default test (val for ceval)
    shots: int = DEFAULT_SHOTS
    limit: int | None = None  # items per subject
    subjects: list[str] | None = None
    engine: str = "native"  # native | lm-eval
    batch_size: int = DEFAULT_BATCH
    prompt_format: str | None = None  # official | lm-eval; default: the engine's own


def _check_int(field: str, value: Any, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise BenchmarkRequestError(field, f"must be an integer >= {minimum}, got {value!r}")


def _validated(request: BenchRequest) -> tuple[BenchRequest, BenchmarkData]:
    try:
        suite = get_suite(request.suite)
    except KeyError as exc:
        raise BenchmarkRequestError("suite", exc.args[0]) from None
    if request.engine not in ENGINES:
        raise BenchmarkRequestError("engine", f"unknown engine {request.engine!r} (known: "
                                    f"{', '.join(ENGINES)})")
    split = request.split or DEFAULT_SPLIT[suite.name]
    scorable = [s for s in suite.splits if s != "dev"]
    if split not in scorable:
        raise BenchmarkRequestError("split", f"{suite.title} has no split {split!r} to score "
                                    f"(it has {', '.join(scorable)})")
    if request.engine == "lm-eval" and split not in suite.lm_eval.splits:
        raise BenchmarkRequestError("split", f"lm-eval's {suite.title} tasks score "
                                    f"{', '.join(suite.lm_eval.splits)} (answers needed), not "
                                    f"{split!r}")
    _check_int("shots", request.shots, minimum=0)
    if request.limit is not None:
        _check_int("limit", request.limit, minimum=1)
    _check_int("batch_size", request.batch_size, minimum=1)
    subjects = None
    if request.subjects is not None:
        if not request.subjects:
            raise BenchmarkRequestError("subjects", "no subject given")
        try:
            subjects = [suite.subject(name).name for name in request.subjects]
        except KeyError as exc:
            raise BenchmarkRequestError("subjects", exc.args[0]) from None
    prompt_format = request.prompt_format or ("lm-eval" if request.engine == "lm-eval"
                                              else "official")
    if prompt_format not in PROMPT_FORMATS:
        raise BenchmarkRequestError("prompt_format", f"unknown prompt format {prompt_format!r} "
                                    f"(known: {', '.join(PROMPT_FORMATS)})")
    if request.engine == "lm-eval" and prompt_format != "lm-eval":
        raise BenchmarkRequestError("prompt_format", "the lm-eval engine scores lm-eval's own "
                                    "prompts")
    data = _load(request.data, suite.name, split, subjects, request.shots)
    return replace(request, split=split, subjects=subjects, prompt_format=prompt_format), data


def _load(path: str, suite: str, split: str, subjects: list[str] | None,
          shots: int) -> BenchmarkData:
    if not Path(path).exists():
        raise BenchmarkRequestError("data", f"{path} does not exist")
    try:
        data = load_benchmark(path, suite, splits=["dev", split], subjects=subjects)
    except (BenchmarkDataError, ValueError) as exc:
        raise BenchmarkRequestError("data", str(exc)) from None
    dev = data.by_subject("dev")
    for subject in data.by_subject(split):
        if len(dev.get(subject, [])) < shots:
            raise BenchmarkRequestError("shots", f"{shots} shots need {shots} dev items for "
                                        f"{subject}; the data has {len(dev.get(subject, []))}")
    if not data.items[split]:
        raise BenchmarkRequestError("data", f"{path} has no {split} items")
    return data


def validate_request(request: BenchRequest) -> BenchRequest:
    """``request`` with its defaults filled in (split, prompt format, canonical subject names);
    raises :class:`BenchmarkRequestError` naming the first bad field. Loads the data."""
    return _validated(request)[0]


def _native(request: BenchRequest, data: BenchmarkData, scorer: Scorer,
            budget: TokenBudget | None, on_progress: Progress | None) -> BenchmarkResults:
    assert request.split is not None and request.prompt_format is not None  # validated
    items = [i for group in data.by_subject(request.split).values() for i in group[: request.limit]]
    return asyncio.run(score_items(
        items, scorer=scorer, dev=data.items["dev"], shots=request.shots,
        count_tokens=budget.count_tokens if budget else None,
        max_tokens=budget.max_tokens if budget else None, fingerprint=data.fingerprint,
        prompt_format=request.prompt_format, chunk=4 * request.batch_size,
        on_progress=on_progress))


def _lm_eval(request: BenchRequest, data: BenchmarkData, model: Any,
             model_args: dict[str, Any] | None = None, device: str | None = None) -> BenchmarkResults:
    from benchmarks.lm_eval_engine import run_lm_eval

    assert request.split is not None  # validated
    with tempfile.TemporaryDirectory(prefix="arena-lm-eval-") as root:
        return run_lm_eval(data, split=request.split, shots=request.shots, root=Path(root),
                           model=model, model_args=model_args, limit=request.limit,
                           batch_size=request.batch_size, device=device)


def _summary(request: BenchRequest, results: BenchmarkResults, *, model: str,
             budget: TokenBudget | None) -> dict[str, Any]:
    return {**results.to_dict(), "split": request.split, "model": model, "data": request.data,
            "limit": request.limit, "n_items": len(results.items), "engine": results.engine,
            "context_length": budget.max_tokens if budget else None,
            "token_counter": budget.source if budget else None}


def _items_progress(on_progress: Progress | None, n_items: int) -> Progress | None:
    """lm-eval counts requests (one per choice); report items."""
    if on_progress is None:
        return None
    return lambda done, total: on_progress(round(n_items * done / max(total, 1)), n_items)


def run_benchmark(request: BenchRequest, *, model: str, base_url: str, api_key: str | None,
                  on_progress: Progress | None = None) -> dict[str, Any]:
    """Score ``model`` through the control plane at ``base_url``; ``on_progress(done, total)``
    counts items. Synchronous."""
    request, data = _validated(request)
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    with httpx.Client(headers=headers, timeout=60.0) as client:
        if request.engine == "native":
            budget = remote_budget(client, base_url, model)
            scorer = WorkerScorer(base_url, model, endpoint="/api/score",
                                  batch_size=request.batch_size, api_key=api_key)
            results = _native(request, data, scorer, budget, on_progress)
            return _summary(request, results, model=model, budget=budget)
        from benchmarks.budget import checkpoint_entry
        from benchmarks.lm_eval_model import ArenaLM

        entry = checkpoint_entry(client, base_url, model)
        tokenizer = load_checkpoint_tokenizer(entry) if entry else None
        if tokenizer is None:
            raise BenchmarkRequestError("engine", f"the lm-eval engine needs the tokenizer of "
                                        f"{model} on this machine (registry source: "
                                        f"{(entry or {}).get('source')})")
        n_items = sum(len(g[: request.limit]) for g in data.by_subject(str(request.split)).values())
        lm = ArenaLM(model, base_url, tokenizer, api_key=api_key, batch_size=request.batch_size,
                     on_progress=_items_progress(on_progress, n_items))
        return _summary(request, _lm_eval(request, data, lm), model=model, budget=None)


def run_benchmark_local(request: BenchRequest, *, model_path: str | Path, device: str = "cpu",
                        on_progress: Progress | None = None) -> dict[str, Any]:
    """Score the checkpoint folder ``model_path`` in-process (transformers; lm-eval's ``hf``
    model for the lm-eval engine, float32 as the native engine)."""
    request, data = _validated(request)
    if not Path(model_path).is_dir():
        raise BenchmarkRequestError("model_path", f"{model_path} is not a folder")
    if request.engine == "native":
        scorer = LocalScorer(model_path, batch_size=request.batch_size, device=device)
        budget = local_budget(scorer.tokenizer, scorer.model.config)
        results = _native(request, data, scorer, budget, on_progress)
        return _summary(request, results, model=str(model_path), budget=budget)
    model_args = {"pretrained": str(model_path), "add_bos_token": True, "dtype": "float32"}
    results = _lm_eval(request, data, "hf", model_args, device=device)
    if on_progress is not None:  # lm-eval's hf model shows its own progress bars
        on_progress(len(results.items), len(results.items))
    return _summary(request, results, model=str(model_path), budget=None)
