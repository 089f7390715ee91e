"""The native benchmark engine against lm-eval 0.4.13: items/s and agreement, in one run.

Builds a tiny Llama (``model_workers.localmodels``; its context raised to ``--context`` tokens so
that no 5-shot prompt is cut or shortened: lm-eval's ``hf`` model would cut it from the left,
the native engine would drop shots), starts ``arena serve`` and one ``arena worker`` on it, and
scores the same subjects of MMLU (test) and C-Eval (val), same shots, same prompts (lm-eval's
format), with:

  * native, in-process          ``run_benchmark_local`` (transformers, one forward pass/question)
  * native, /api/score          ``run_benchmark`` through the control plane to the worker
  * lm-eval hf (reference)      lm-eval's own ``hf`` model, in-process
  * lm-eval + arena model       lm-eval with our ``arena`` model class through the control plane
  * lm-eval local-completions   (``--local-completions``) lm-eval's API model against ``/v1``

Each mode runs once untimed on two items (imports, caches), then ``--repeat`` timed rounds over
all subjects, the modes interleaved so that load from other processes hits all alike; the best
round of each mode counts (model loading and task setup included). Agreement compares each mode's prediction for every item with
lm-eval hf's; a difference on an exact log-probability tie is counted apart.

    .venv/bin/python scripts/bench_benchmarks.py [--data-dir /work/shared/data/benchmarks] \\
        [--mmlu abstract_algebra,anatomy,...] [--ceval basic_medicine,...] [--shots 5] \\
        [--batch-size 16] [--limit N] [--context 2048] [--repeat 3] [--local-completions] \\
        [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.engine import BenchmarkResults, ItemResult, compare_predictions  # noqa: E402
from benchmarks.loaders import load_benchmark  # noqa: E402
from benchmarks.runs import BenchRequest, run_benchmark, run_benchmark_local  # noqa: E402

ADMIN = "bench-admin"
MODEL = "tiny-llama"
DATA_DIR = Path("/work/shared/data/benchmarks")
SUBJECTS = {  # short-prompt subjects: every 5-shot prompt fits 2,048 tokens of the tiny tokenizer
    "mmlu": "abstract_algebra,anatomy,management,world_religions",
    "ceval": "basic_medicine,plant_protection,discrete_mathematics,art_studies,college_chemistry",
}
REFERENCE = "lm-eval hf (reference)"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(check: Callable[[], bool], what: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(what)


def build_model(root: Path, context: int) -> Path:
    from model_workers.localmodels import build_tiny_checkpoint

    path = build_tiny_checkpoint("llama", root / "tiny-llama")
    for name, key in (("config.json", "max_position_embeddings"),
                      ("tokenizer_config.json", "model_max_length")):
        config = json.loads((path / name).read_text(encoding="utf-8"))
        config[key] = context
        (path / name).write_text(json.dumps(config, indent=2), encoding="utf-8")
    return path


class Servers:
    """``arena serve`` + one ``arena worker`` serving the model as ``tiny-llama``."""

    def __init__(self, root: Path, model: Path) -> None:
        self.env = {**os.environ, "ARENA_DATA_DIR": str(root / "data"),
                    "ARENA_ADMIN_KEY": ADMIN, "ARENA_API_KEY": ADMIN}
        self.url = f"http://127.0.0.1:{free_port()}"
        self.model, self.logs = model, root
        self.procs: list[subprocess.Popen[bytes]] = []

    def _spawn(self, name: str, *args: str) -> None:
        log = (self.logs / f"{name}.log").open("wb")
        self.procs.append(subprocess.Popen([sys.executable, "-m", "arena.cli.main", *args],
                                           env=self.env, stdout=log, stderr=subprocess.STDOUT))

    def __enter__(self) -> Servers:
        self._spawn("serve", "serve", "--port", self.url.rsplit(":", 1)[1], "--log-level",
                    "warning")
        wait_until(lambda: httpx.get(self.url + "/health").status_code == 200, "arena serve")
        httpx.post(self.url + "/api/checkpoints", headers={"Authorization": f"Bearer {ADMIN}"},
                   json={"name": MODEL, "source": str(self.model)}, timeout=60).raise_for_status()
        self._spawn("worker", "worker", "--controller", self.url, "--checkpoint", MODEL,
                    "--port", str(free_port()), "--log-level", "warning")
        wait_until(lambda: MODEL in str(httpx.get(self.url + "/v1/models").json()),
                   "the worker's registration")
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in reversed(self.procs):
            proc.terminate()
            proc.wait(30)


def local_completions(servers: Servers) -> Callable[[BenchRequest], dict[str, Any]]:
    """lm-eval's own API model against our gateway (num_concurrent 1, as the other modes)."""
    from benchmarks.lm_eval_engine import run_lm_eval
    from benchmarks.runs import validate_request

    def run(request: BenchRequest) -> dict[str, Any]:
        request = validate_request(request)
        data = load_benchmark(request.data, request.suite, splits=["dev", str(request.split)],
                              subjects=request.subjects)
        args = {"model": MODEL, "base_url": servers.url + "/v1/completions",
                "tokenizer": str(servers.model), "tokenizer_backend": "huggingface",
                "num_concurrent": 1, "max_retries": 1, "add_bos_token": True}
        with tempfile.TemporaryDirectory() as root:
            results = run_lm_eval(data, split=str(request.split), shots=request.shots,
                                  root=Path(root), model="local-completions", model_args=args,
                                  limit=request.limit, batch_size=request.batch_size)
        return {**results.to_dict(), "n_items": len(results.items)}

    return run


def modes(servers: Servers, *, with_local_completions: bool
          ) -> dict[str, Callable[[BenchRequest], dict[str, Any]]]:
    remote = dict(model=MODEL, base_url=servers.url, api_key=ADMIN)
    out: dict[str, Callable[[BenchRequest], dict[str, Any]]] = {
        "native, in-process": lambda r: run_benchmark_local(r, model_path=servers.model),
        "native, /api/score": lambda r: run_benchmark(r, **remote),  # type: ignore[arg-type]
        REFERENCE: lambda r: run_benchmark_local(r, model_path=servers.model),
        "lm-eval + arena model": lambda r: run_benchmark(r, **remote),  # type: ignore[arg-type]
    }
    if with_local_completions:
        out["lm-eval local-completions"] = local_completions(servers)
    return out


def request_for(mode: str, suite: str, args: argparse.Namespace, subjects: str,
                limit: int | None) -> BenchRequest:
    engine = "native" if mode.startswith("native") else "lm-eval"
    return BenchRequest(suite=suite, data=str(args.data_dir / f"{suite}.zip"), shots=args.shots,
                        limit=limit, subjects=subjects.split(","), engine=engine,
                        batch_size=args.batch_size, prompt_format="lm-eval")


def as_results(summary: dict[str, Any]) -> BenchmarkResults:
    items = [ItemResult(**{k: v for k, v in row.items() if k != "correct"})
             for row in summary["items"]]
    return BenchmarkResults(suite=summary["suite"], shots=summary["shots"],
                            fingerprint=summary["fingerprint"], items=items)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="bench-benchmarks-"))
    model = build_model(root, args.context)
    suites = {s: getattr(args, s) for s in ("mmlu", "ceval") if getattr(args, s)}
    figures: dict[str, Any] = {}
    with Servers(root, model) as servers:
        runners = modes(servers, with_local_completions=args.local_completions)
        for mode, run in runners.items():  # warm-up: imports, tokenizer and dataset caches
            suite, subjects = next(iter(suites.items()))
            run(request_for(mode, suite, args, subjects.split(",")[0], 2))
        for round_ in range(args.repeat):  # interleaved, so that load from elsewhere hits all
            for mode, run in runners.items():
                start = time.perf_counter()
                summaries = {s: run(request_for(mode, s, args, subjects, args.limit))
                             for s, subjects in suites.items()}
                seconds = time.perf_counter() - start
                items = sum(x["n_items"] for x in summaries.values())
                best = figures.get(mode, {}).get("seconds", float("inf"))
                figures[mode] = {"seconds": min(seconds, best), "summaries": summaries,
                                 "items": items, "rounds": [*figures.get(mode, {}).get(
                                     "rounds", []), seconds]}
                print(f"  round {round_ + 1}, {mode}: {items} items in {seconds:.1f} s",
                      file=sys.stderr)
    reference = figures[REFERENCE]
    for row in figures.values():
        row["items_per_s"] = row["items"] / row["seconds"]
        row["speedup"] = row["items_per_s"] / reference["items"] * reference["seconds"]
        agreements = [compare_predictions(as_results(row["summaries"][s]),
                                          as_results(reference["summaries"][s])) for s in suites]
        row["agreement"] = {"items": sum(a.items for a in agreements),
                            "same": sum(a.same for a in agreements),
                            "ties": [t for a in agreements for t in a.ties],
                            "differing": [d for a in agreements for d in a.differing]}
        row["fewer_shots"] = sum(x.get("items_with_fewer_shots") or 0
                                 for x in row["summaries"].values())
        row["accuracy"] = {s: x["accuracy"] for s, x in row["summaries"].items()}
    return figures


def print_table(figures: dict[str, Any], args: argparse.Namespace) -> None:
    print(f"{args.shots}-shot, lm-eval prompt format, batch {args.batch_size}, tiny Llama "
          f"(context {args.context}), {os.cpu_count()} CPU cores, best of {args.repeat}; "
          f"MMLU test: {args.mmlu}; C-Eval val: {args.ceval}")
    print(f"{'mode':<28}{'items':>7}{'seconds':>9}{'items/s':>9}{'vs hf':>8}"
          f"{'same as hf':>13}{'ties':>6}{'fewer shots':>13}")
    for mode, row in figures.items():
        agreement = row["agreement"]
        print(f"{mode:<28}{row['items']:>7}{row['seconds']:>9.1f}{row['items_per_s']:>9.1f}"
              f"{row['speedup']:>7.2f}×{agreement['same']:>7}/{agreement['items']:<5}"
              f"{len(agreement['ties']):>6}{row['fewer_shots']:>13}")
        if agreement["differing"]:
            print(f"    differing: {', '.join(agreement['differing'][:20])}")
        if agreement["ties"]:
            print(f"    exact ties: {', '.join(agreement['ties'][:20])}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR,
                        help="folder with mmlu.zip and ceval.zip (official layouts)")
    parser.add_argument("--mmlu", default=SUBJECTS["mmlu"], help="MMLU subjects ('' for none)")
    parser.add_argument("--ceval", default=SUBJECTS["ceval"], help="C-Eval subjects ('' for none)")
    parser.add_argument("--shots", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--limit", type=int, default=None, help="items per subject")
    parser.add_argument("--context", type=int, default=2048, help="the tiny model's context")
    parser.add_argument("--repeat", type=int, default=3,
                        help="timed rounds (modes interleaved); the best time of each counts")
    parser.add_argument("--local-completions", action="store_true",
                        help="also time lm-eval's local-completions against /v1 (slow)")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args()
    for suite in ("mmlu", "ceval"):
        if getattr(args, suite) and not (args.data_dir / f"{suite}.zip").is_file():
            parser.error(f"no {suite}.zip in {args.data_dir}")
    figures = measure(args)
    print_table(figures, args)
    if args.json is not None:
        slim = {m: {k: v for k, v in row.items() if k != "summaries"} for m, row in figures.items()}
        args.json.write_text(json.dumps(slim, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
