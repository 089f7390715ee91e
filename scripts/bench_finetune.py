"""Training throughput of our fine-tuning recipe beside a plain Hugging Face ``Trainer`` + PEFT
loop: same model, same tokenized data, same hyper-parameters, same threads, in the same run.

    python scripts/bench_finetune.py                        # CPU: tiny Llamas, LoRA
    python scripts/bench_finetune.py --sizes 64x2 --repeats 5 --threads 1 2

Every row trains LoRA (r 8, alpha 16, dropout 0.05, q/k/v/o projections) on the shipped demo
instructions (``model_workers/finetune/data/demo_instructions.jsonl``, 80 Alpaca records,
Vicuna v1.1 template, loss on answers only), batch 8, AdamW at 2e-4 with 3% warm-up and cosine
decay, gradient clipping at 1.0, for ``--epochs`` epochs, seed 0. The Trainer gets our token ids
and labels (so both train on exactly the same tokens), ``DataCollatorForSeq2Seq`` for dynamic
padding, and runs once as shipped and once with ``train_sampling_strategy="group_by_length"``. Tokens/s counts
non-padding tokens over the training loop's wall time (model loading and saving left out).
Runs alternate between the recipes ``--repeats`` times; the table shows the median.

With CUDA, it also trains a randomly initialised ~1.1B Llama (TinyLlama's shape) with LoRA and
full fine-tuning in bf16 and reports MFU (``--gpu-steps`` steps each), beside the Trainer.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from functools import partial
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table
from transformers import TrainerCallback

from model_workers.finetune import FinetuneConfig, train
from model_workers.finetune.data import load_data
from model_workers.finetune.encode import encode_records
from model_workers.finetune.modeling import PEAK_TFLOPS, flops_per_token, peak_flops
from model_workers.localmodels import build_tiny_checkpoint, train_tokenizer

DEMO = Path(str(resources.files("model_workers") / "finetune/data/demo_instructions.jsonl"))
TEMPLATE = "vicuna_v1.1"
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]
console = Console(width=150)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["64x2", "256x4"],
                        help="tiny Llamas as HIDDENxLAYERS (default: the test model and a "
                             "bigger one)")
    parser.add_argument("--threads", nargs="+", type=int, default=[1],
                        help="torch CPU threads, one set of rows each (on a machine whose "
                             "cores other processes use, more threads measure the contention)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3, help="runs per recipe (median)")
    parser.add_argument("--gpu-steps", type=int, default=30, help="optimizer steps per GPU row")
    parser.add_argument("--no-trainer", action="store_true", help="our recipe only")
    return parser.parse_args()


def config(args: argparse.Namespace, **changes) -> FinetuneConfig:
    settings = {"method": "lora", "epochs": args.epochs, "batch_size": args.batch_size,
                "gradient_accumulation_steps": 1, "learning_rate": 2e-4, "warmup_ratio": 0.03,
                "lr_scheduler": "cosine", "weight_decay": 0.0, "max_grad_norm": 1.0,
                "max_length": 512, "seed": 0, "lora_r": 8, "lora_alpha": 16,
                "lora_dropout": 0.05, "target_modules": TARGETS, "save_steps": 100_000,
                "group_by_length": True, **changes}
    return FinetuneConfig(**settings)


def run_ours(cfg: FinetuneConfig, base: Path, data: Path, work: Path) -> dict:
    out = Path(tempfile.mkdtemp(dir=work))
    result = train(cfg, base_path=base, template=TEMPLATE, data_path=data, output_dir=out)
    mean = sum(result.losses) / len(result.losses)
    return {"tokens": result.tokens, "seconds": result.elapsed_s, "loss": mean,
            "params": result.total_params, "trainable": result.trainable_params,
            "flops_per_token": None}


def run_trainer(cfg: FinetuneConfig, base: Path, data: Path, work: Path, *,
                group_by_length: bool, threads: int | None, max_steps: int | None = None,
                bf16: bool = False) -> dict:
    """The Trainer + PEFT loop of the PEFT/transformers examples, on our token ids."""
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        DataCollatorForSeq2Seq,
        PrinterCallback,
        Trainer,
        TrainingArguments,
    )

    tokenizer = AutoTokenizer.from_pretrained(str(base))
    _, records = load_data(data, mode="instruct")
    examples = encode_records(records, tokenizer=tokenizer, template=TEMPLATE, mode="instruct",
                              max_length=cfg.max_length).examples
    dataset = [{"input_ids": e.input_ids, "labels": e.labels} for e in examples]
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(cfg.seed)
    # as ours: LoRA on a bf16 base; full fine-tuning on fp32 weights under bf16 autocast
    dtype = torch.bfloat16 if bf16 and cfg.method != "full" else torch.float32
    model: Any = AutoModelForCausalLM.from_pretrained(str(base), dtype=dtype)
    if cfg.method != "full":
        model = get_peft_model(model, LoraConfig(
            task_type=TaskType.CAUSAL_LM, r=cfg.lora_r, lora_alpha=cfg.lora_alpha,
            lora_dropout=cfg.lora_dropout, target_modules=cfg.target_modules))
    arguments = TrainingArguments(
        output_dir=tempfile.mkdtemp(dir=work), per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        learning_rate=cfg.lr, lr_scheduler_type=cfg.lr_scheduler,
        warmup_steps=cfg.warmup_ratio, weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm or 0.0, num_train_epochs=cfg.epochs,
        max_steps=max_steps or -1, seed=cfg.seed, save_strategy="no", report_to=[],
        logging_steps=10_000, disable_tqdm=True,
        train_sampling_strategy="group_by_length" if group_by_length else "random",
        use_cpu=not torch.cuda.is_available(), bf16=bf16, dataloader_num_workers=0)
    clock = _LoopClock()
    trainer = Trainer(model=model, args=arguments, train_dataset=dataset, callbacks=[clock],
                      data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True,
                                                           label_pad_token_id=-100))
    trainer.remove_callback(PrinterCallback)  # it prints the metrics dict at the end
    output = trainer.train()
    seconds = clock.ended - clock.started
    if max_steps:  # count the tokens the sampler handed out: the same as ours only per epoch
        tokens = max_steps * cfg.batch_size * sum(len(e.input_ids) for e in examples) / len(
            examples)
    else:
        tokens = cfg.epochs * sum(len(e.input_ids) for e in examples)
    return {"tokens": int(tokens), "seconds": seconds, "loss": output.training_loss,
            "params": sum(p.numel() for p in model.parameters()), "trainable": None,
            "flops_per_token": None}


class _LoopClock(TrainerCallback):
    """Times the Trainer's training loop alone (after its setup, before saving), as our
    recipe's ``elapsed_s`` is timed."""

    started = ended = 0.0

    def on_train_begin(self, *args, **kwargs) -> None:
        _sync()
        self.started = time.perf_counter()

    def on_train_end(self, *args, **kwargs) -> None:
        _sync()
        self.ended = time.perf_counter()


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def cpu_rows(args: argparse.Namespace, work: Path) -> list[tuple]:
    tokenizer_dir = train_tokenizer(work / "tokenizer")
    rows = []
    for size in args.sizes:
        hidden, layers = (int(x) for x in size.split("x"))
        base = build_tiny_checkpoint("llama", work / f"llama-{size}", hidden_size=hidden,
                                     num_layers=layers, tokenizer_dir=tokenizer_dir)
        for threads in args.threads:
            cfg = config(args, num_threads=threads)
            recipes: dict[str, Callable[[], dict]] = {
                "ours (LoRA)": partial(run_ours, cfg, base, DEMO, work)}
            if not args.no_trainer:
                for grouped in (False, True):
                    name = "HF Trainer + PEFT" + (" (group_by_length)" if grouped else "")
                    recipes[name] = partial(run_trainer, cfg, base, DEMO, work,
                                            group_by_length=grouped, threads=threads)
            runs: dict[str, list[dict]] = {name: [] for name in recipes}
            for _ in range(args.repeats):  # alternate, so drift in machine load hits all alike
                for name, recipe in recipes.items():
                    runs[name].append(recipe())
            ours_rate = None
            for name, results in runs.items():
                rate = statistics.median(r["tokens"] / r["seconds"] for r in results)
                ours_rate = ours_rate or rate
                rows.append((f"llama {size}", f"{results[0]['params'] / 1e6:.2f}M", name,
                             str(threads), f"{results[0]['tokens']:,}",
                             f"{statistics.median(r['seconds'] for r in results):.2f}",
                             f"{rate:,.0f}", f"{ours_rate / rate:.2f}x",
                             f"{results[0]['loss']:.4f}", "-"))
    return rows


def gpu_rows(args: argparse.Namespace, work: Path) -> list[tuple]:
    """~1.1B random Llama (TinyLlama's shape) in bf16: LoRA and full, ours and the Trainer's."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    tokenizer_dir = train_tokenizer(work / "tokenizer-gpu")
    base = work / "llama-1b"
    shape = LlamaConfig(vocab_size=32000, hidden_size=2048, intermediate_size=5632,
                        num_hidden_layers=22, num_attention_heads=32, num_key_value_heads=4,
                        max_position_embeddings=2048, bos_token_id=1, eos_token_id=2,
                        pad_token_id=3, tie_word_embeddings=False)
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(shape, dtype=torch.bfloat16)
    model.save_pretrained(base)
    del model
    from model_workers.localmodels import _copy_tokenizer

    _copy_tokenizer(tokenizer_dir, base)
    peak = peak_flops(torch.device("cuda"), FinetuneConfig())
    rows = []
    for method in ("lora", "full"):
        cfg = config(args, method=method, max_steps=args.gpu_steps, precision="bf16",
                     learning_rate=2e-4 if method == "lora" else 2e-5,
                     target_modules=TARGETS if method == "lora" else None)
        ours = run_ours(cfg, base, DEMO, work)
        fpt = flops_per_token_for(base, method, ours["params"])
        results = {f"ours ({method})": ours}
        if not args.no_trainer:
            results[f"HF Trainer ({method})"] = run_trainer(
                cfg, base, DEMO, work, group_by_length=False, threads=None,
                max_steps=args.gpu_steps, bf16=True)
        for name, r in results.items():
            rate = r["tokens"] / r["seconds"]
            mfu = f"{rate * fpt / peak:.1%}" if peak else "?"
            rows.append(("llama 1.1B", f"{ours['params'] / 1e9:.2f}B", name, "gpu",
                         f"{r['tokens']:,}", f"{r['seconds']:.2f}", f"{rate:,.0f}",
                         f"{ours['tokens'] / ours['seconds'] / rate:.2f}x",
                         f"{r['loss']:.4f}", mfu))
        torch.cuda.empty_cache()
    return rows


def flops_per_token_for(base: Path, method: str, total: int) -> float:
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):  # the shapes only
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(str(base)))
    return flops_per_token(model, method, total)


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    with tempfile.TemporaryDirectory(prefix="bench-finetune-") as tmp:
        work = Path(tmp)
        rows = cpu_rows(args, work)
        if torch.cuda.is_available():
            rows += gpu_rows(args, work)
        else:
            console.print("[dim]no CUDA device: the 1.1B GPU rows are skipped[/dim]")
    table = Table(title=f"Fine-tuning throughput ({args.epochs} epochs of the demo set, "
                        f"batch {args.batch_size}, median of {args.repeats})")
    for column in ("model", "params", "recipe", "threads", "tokens", "train s", "tokens/s",
                   "ours vs it", "mean loss", "MFU"):
        table.add_column(column, justify="left" if column in ("model", "recipe") else "right")
    for row in rows:
        table.add_row(*row)
    console.print(table)
    known = ", ".join(sorted(PEAK_TFLOPS))
    console.print(f"[dim]MFU: training FLOPs (6N full, 4N LoRA per token) over the dense bf16 "
                  f"peak of: {known}[/dim]")


if __name__ == "__main__":
    main()
