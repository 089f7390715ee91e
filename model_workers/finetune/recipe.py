"""The fine-tuning recipe: setup, train, save. One function, read top to bottom.

Our own loop in plain torch (no ``transformers.Trainer``), so that progress, resume and MFU are
ours: AdamW, linear warm-up then cosine (or linear/constant), gradient accumulation with the
loss averaged over every trained token of the step, gradient clipping, autocast in bf16/fp16 on
a GPU. Micro-batches are padded to their longest sequence and, by default, grouped by length.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from model_workers.finetune import checkpoints, modeling
from model_workers.finetune.config import (
    FinetuneConfig,
    TrainingCancelled,
    TrainProgress,
    TrainResult,
)
from model_workers.finetune.data import load_data
from model_workers.finetune.encode import (
    IGNORE_INDEX,
    Batch,
    Example,
    collate,
    encode_records,
    epoch_order,
    steps_for,
)

logger = logging.getLogger(__name__)


def train(
    config: FinetuneConfig,
    *,
    base_path: str | Path,
    template: str,
    data_path: str | Path,
    output_dir: str | Path,
    on_progress: Callable[[TrainProgress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TrainResult:
    """Fine-tune the checkpoint in ``base_path`` on ``data_path``; the artifact goes to
    ``output_dir/final`` (a PEFT adapter, or full weights and tokenizer with ``merge`` or method
    ``full``).

    ``template`` names the conversation template answers are rendered with (instruct mode).
    Training resumes from the newest checkpoint in ``output_dir/checkpoints`` (same settings
    and data, else :class:`FinetuneError`); when ``output_dir/final`` already holds this run's
    result, that result is returned without training. ``on_progress`` is called after every
    optimizer step; when ``should_stop()`` turns true (it is asked after every step but the
    last) a checkpoint is written and :class:`TrainingCancelled` raised. Bad data raises
    :class:`FinetuneDataError`; settings that can not run here, :class:`FinetuneError`.
    """
    base_path, output_dir = Path(base_path), Path(output_dir)
    summary, records = load_data(data_path, mode=config.mode, data_format=config.data_format)
    run = checkpoints.run_identity(config, base_path=base_path, template=template,
                                   fingerprint=summary.fingerprint)
    done = checkpoints.finished(output_dir, run)
    if done is not None:
        return done
    output_dir.mkdir(parents=True, exist_ok=True)
    checkpoints.clean_partial(output_dir)

    # --- setup ---------------------------------------------------------------------------------
    device = modeling.resolve_device(config)
    precision = modeling.resolve_precision(config, device)
    if config.method == "qlora":
        modeling.check_qlora()
    torch.manual_seed(config.seed)  # LoRA's initialisation, then dropout
    tokenizer = modeling.load_tokenizer(base_path)
    model = modeling.load_model(config, base_path, device=device, precision=precision)
    limit = modeling.context_length(model, tokenizer)
    max_length = min(config.max_length, limit) if limit else config.max_length
    data = encode_records(records, tokenizer=tokenizer, template=template, mode=config.mode,
                          max_length=max_length)
    trainable, total = modeling.parameter_counts(model)
    threads = modeling.set_threads(config, device, params=total)
    total_steps, total_micro = steps_for(
        len(data.examples), batch_size=config.batch_size,
        accumulation=config.gradient_accumulation_steps, epochs=config.epochs,
        max_steps=config.max_steps)
    plan = _Plan(data.examples, config, total_micro)
    optimizer = _optimizer(model, config, device)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(config, total_steps))
    scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
    progress = checkpoints.Progress(run=run)
    last = checkpoints.latest(output_dir)
    if last is not None:
        progress = checkpoints.restore(last, run, model=model, optimizer=optimizer,
                                       scheduler=scheduler, scaler=scaler, device=device)
        logger.info("resuming from %s", last)
    resumed_from = progress.step
    logger.info("%s fine-tune of %s: %d examples, %d steps, %d of %d parameters trained, %s "
                "on %s%s", config.method, base_path, len(data.examples), total_steps, trainable,
                total, precision, device, f" ({threads} threads)" if threads else "")

    # --- train ---------------------------------------------------------------------------------
    meter = _Meter(start_step=progress.step, total_steps=total_steps,
                   flops_per_token=modeling.flops_per_token(model, config.method, total),
                   peak_flops=modeling.peak_flops(device, config))
    pad_id = tokenizer.pad_token_id
    model.train()
    if on_progress is not None:
        on_progress(meter.report(progress.step, None, float(scheduler.get_last_lr()[0]),
                                 plan.epoch(progress.step), progress.tokens_seen, 0))
    for step in range(progress.step + 1, total_steps + 1):
        batches = [collate(group, pad_id=pad_id, device=device) for group in plan.groups(step)]
        learning_rate = float(scheduler.get_last_lr()[0])
        loss = _optimizer_step(model, batches, optimizer, scaler, precision=precision,
                               device=device, max_grad_norm=config.max_grad_norm)
        scheduler.step()
        tokens = sum(batch.tokens for batch in batches)
        progress.step, progress.tokens_seen = step, progress.tokens_seen + tokens
        progress.losses.append(loss)
        if on_progress is not None:
            on_progress(meter.report(step, loss, learning_rate, plan.epoch(step),
                                     progress.tokens_seen, tokens))
        if step < total_steps:
            stop = should_stop is not None and should_stop()
            if stop or step % config.save_steps == 0:
                saved = checkpoints.save(output_dir, progress, model=model, optimizer=optimizer,
                                         scheduler=scheduler, scaler=scaler)
            if stop:
                raise TrainingCancelled(step, saved)

    # --- save ----------------------------------------------------------------------------------
    result = TrainResult(
        output_path=output_dir / checkpoints.FINAL,
        final_loss=progress.losses[-1] if progress.losses else None,
        losses=progress.losses, steps=progress.step, tokens=progress.tokens_seen,
        data_fingerprint=summary.fingerprint, resumed_from_step=resumed_from,
        method=config.method, trainable_params=trainable, total_params=total,
        merged=config.merge or config.method == "full", examples=len(data.examples),
        dropped_examples=data.dropped, elapsed_s=round(meter.elapsed(), 3))
    model.eval()
    checkpoints.write_final(output_dir, result, run, lambda out: modeling.save_artifact(
        model, tokenizer, out, config=config, base_path=base_path))
    return result


def lr_factor(config: FinetuneConfig, total_steps: int) -> Callable[[int], float]:
    """The learning rate of step ``s + 1`` over the peak: linear warm-up over the first
    ``ceil(warmup_ratio · steps)`` steps (ending at the peak), then the decay."""
    warmup = math.ceil(config.warmup_ratio * total_steps)
    decay = max(1, total_steps - warmup)

    def factor(s: int) -> float:
        if s < warmup:
            return (s + 1) / warmup
        done = min(1.0, (s - warmup) / decay)
        if config.lr_scheduler == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * done))
        return 1.0 - done if config.lr_scheduler == "linear" else 1.0

    return factor


def _optimizer(model: Any, config: FinetuneConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW; no weight decay on biases and norms (1-D tensors)."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": config.weight_decay},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=config.lr,
                             betas=(0.9, 0.999), eps=1e-8, fused=device.type == "cuda")


_AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


def _optimizer_step(model: Any, batches: list[Batch], optimizer: torch.optim.Optimizer,
                    scaler: Any, *, precision: str, device: torch.device,
                    max_grad_norm: float | None) -> float:
    """Forward and backward over the step's micro-batches, then one update; the step's loss
    per trained token."""
    targets = sum(batch.targets for batch in batches)
    total = torch.zeros((), device=device)
    for batch in batches:
        with torch.autocast(device.type, dtype=_AUTOCAST.get(precision, torch.bfloat16),
                            enabled=precision in _AUTOCAST):
            logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)).float(),
                               batch.labels[:, 1:].reshape(-1), ignore_index=IGNORE_INDEX,
                               reduction="sum") / targets
        (scaler.scale(loss) if scaler is not None else loss).backward()
        total += loss.detach()
    if scaler is not None:
        scaler.unscale_(optimizer)
    if max_grad_norm:
        torch.nn.utils.clip_grad_norm_(
            [p for group in optimizer.param_groups for p in group["params"]], max_grad_norm)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(total)


class _Plan:
    """Which examples each optimizer step trains on: micro-batch k of the run is batch
    ``k mod per_epoch`` of epoch ``k // per_epoch`` (see :func:`epoch_order`)."""

    def __init__(self, examples: list[Example], config: FinetuneConfig, total_micro: int):
        self.examples = examples
        self.lengths = [len(e.input_ids) for e in examples]
        self.config = config
        self.total_micro = total_micro
        self.per_epoch = math.ceil(len(examples) / config.batch_size)
        self._orders: dict[int, list[list[int]]] = {}

    def groups(self, step: int) -> list[list[Example]]:
        accumulation = self.config.gradient_accumulation_steps
        out = []
        for k in range((step - 1) * accumulation, min(step * accumulation, self.total_micro)):
            epoch, index = divmod(k, self.per_epoch)
            out.append([self.examples[i] for i in self._order(epoch)[index]])
        return out

    def epoch(self, step: int) -> float:
        micro = min(step * self.config.gradient_accumulation_steps, self.total_micro)
        return round(micro / self.per_epoch, 4)

    def _order(self, epoch: int) -> list[list[int]]:
        if epoch not in self._orders:
            self._orders = {epoch: epoch_order(
                self.lengths, self.config.batch_size, seed=self.config.seed, epoch=epoch,
                group_by_length=self.config.group_by_length)}
        return self._orders[epoch]


class _Meter:
    """Throughput, ETA and MFU since this run (re)started."""

    def __init__(self, *, start_step: int, total_steps: int, flops_per_token: float,
                 peak_flops: float | None) -> None:
        self.start_step, self.total_steps = start_step, total_steps
        self.flops_per_token, self.peak_flops = flops_per_token, peak_flops
        self.started = time.perf_counter()
        self.tokens = 0

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def report(self, step: int, loss: float | None, learning_rate: float, epoch: float,
               tokens_seen: int, tokens: int) -> TrainProgress:
        self.tokens += tokens
        elapsed, done = self.elapsed(), step - self.start_step
        rate = self.tokens / elapsed if done and elapsed > 0 else None
        eta = elapsed / done * (self.total_steps - step) if done else None
        mfu = (rate * self.flops_per_token / self.peak_flops
               if rate is not None and self.peak_flops else None)
        return TrainProgress(step=step, total_steps=self.total_steps, epoch=epoch, loss=loss,
                             learning_rate=learning_rate, tokens_per_s=rate, eta_s=eta, mfu=mfu,
                             tokens_seen=tokens_seen)
