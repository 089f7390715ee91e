"""The fine-tuning recipe's typed surface: its config, progress and result records, errors.

Nothing here imports torch: the control plane validates a job's config and data with these
before any job worker loads a model.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Method = Literal["lora", "qlora", "full"]
Mode = Literal["instruct", "pretrain"]
DataFormat = Literal["auto", "alpaca", "sharegpt", "text"]

DEFAULT_LEARNING_RATE: dict[str, float] = {"lora": 2e-4, "qlora": 2e-4, "full": 2e-5}
# Settings that may change between a crash and the resume without changing the arithmetic.
RESUMABLE_CHANGES = frozenset({"save_steps", "device", "num_threads", "peak_tflops"})


class FinetuneError(ValueError):
    """A fine-tune can not run as asked (bad setting, missing library or GPU, foreign run)."""


class FinetuneDataError(FinetuneError):
    """The training data is malformed; the message names the file and the first bad record."""


class TrainingCancelled(Exception):
    """``should_stop()`` said stop: a checkpoint was written at ``step``; train again resumes."""

    def __init__(self, step: int, checkpoint: Path | None) -> None:
        super().__init__(f"training cancelled at step {step}"
                         + (f"; checkpoint {checkpoint}" if checkpoint else ""))
        self.step = step
        self.checkpoint = checkpoint


class FinetuneConfig(BaseModel):
    """Hyper-parameters of one fine-tune. Every field is checked; unknown keys are refused."""

    model_config = ConfigDict(extra="forbid")

    method: Method = Field(
        default="lora",
        description=(
            "lora (PEFT), qlora (4-bit base; CUDA and bitsandbytes) or full (every weight)."))
    mode: Mode = Field(
        default="instruct",
        description=(
            "instruct: loss on the assistant's answers only; pretrain: plain text packed into "
            "max_length blocks, loss everywhere."))
    data_format: DataFormat = Field(
        default="auto",
        description=(
            "alpaca (instruction/input/output), sharegpt (conversations of from/value), text "
            "(.txt file or folder), or auto: told from the file."))
    epochs: float = Field(
        default=3.0, gt=0, le=1000,
        description=(
            "Passes over the data (fractions allowed); ignored when max_steps is set."))
    max_steps: int | None = Field(
        default=None, ge=1,
        description=(
            "Optimizer steps to run; overrides epochs (the data is repeated as needed)."))
    learning_rate: float | None = Field(
        default=None, gt=0, lt=1,
        description=(
            "Peak learning rate; default 2e-4 for lora/qlora, 2e-5 for full."))
    batch_size: int = Field(
        default=4, ge=1, le=4096,
        description=(
            "Sequences per micro-batch."))
    gradient_accumulation_steps: int = Field(
        default=4, ge=1, le=4096,
        description=(
            "Micro-batches per optimizer step."))
    warmup_ratio: float = Field(
        default=0.03, ge=0, lt=1,
        description=(
            "Fraction of the steps with a linear warm-up from 0."))
    lr_scheduler: Literal["cosine", "linear", "constant"] = Field(
        default="cosine",
        description=(
            "Decay after warm-up: cosine or linear to 0, or constant."))
    weight_decay: float = Field(
        default=0.0, ge=0, le=1,
        description=(
            "AdamW weight decay (not on biases and norms)."))
    max_grad_norm: float | None = Field(
        default=1.0, gt=0,
        description=(
            "Clip the gradient norm; None: no clipping."))
    max_length: int = Field(
        default=512, ge=8, le=1_048_576,
        description=(
            "Tokens per sequence (longer conversations are cut; capped at the model's context)."))
    seed: int = Field(
        default=0, ge=0,
        description=(
            "Seed of the data order, dropout and LoRA's initialisation."))
    lora_r: int = Field(
        default=8, ge=1, le=4096,
        description=(
            "LoRA rank."))
    lora_alpha: int = Field(
        default=16, ge=1,
        description=(
            "LoRA alpha (the update is scaled by alpha / r)."))
    lora_dropout: float = Field(
        default=0.05, ge=0, lt=1,
        description=(
            "Dropout on the LoRA input."))
    target_modules: list[str] | None = Field(
        default=None,
        description=(
            "Module names LoRA adapts; default: the architecture's attention projections."))
    save_steps: int = Field(
        default=100, ge=1,
        description=(
            "Write a checkpoint every N optimizer steps (resume starts from the last one)."))
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        default="auto",
        description=(
            "auto: bf16 (else fp16) on a GPU, fp32 on CPU; bf16/fp16 need a GPU."))
    merge: bool = Field(
        default=False,
        description=(
            "Write merged full weights instead of the adapter."))
    gradient_checkpointing: bool = Field(
        default=False,
        description=(
            "Recompute activations in the backward pass: less memory, ~30% more compute."))
    group_by_length: bool = Field(
        default=True,
        description=(
            "Batch sequences of similar length together (less padding); the batch order stays "
            "random."))
    device: str = Field(
        default="auto",
        description=(
            "auto (cuda if available, else cpu), cpu, cuda or cuda:N."))
    num_threads: int | None = Field(
        default=None, ge=1, le=1024,
        description=(
            "CPU threads for torch; default: the cores this process may use (1 for models under "
            "10M parameters)."))
    peak_tflops: float | None = Field(
        default=None, gt=0,
        description=(
            "The accelerator's dense peak TFLOP/s for MFU, where the built-in table does not know "
            "it."))

    @field_validator("target_modules")
    @classmethod
    def _targets(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            if not value:
                raise ValueError("target_modules is empty: name at least one module, or leave "
                                 "it out for the architecture's attention projections")
            bad = [name for name in value if not name.strip()]
            if bad:
                raise ValueError("target_modules holds an empty name")
        return value

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", value):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N, not {value!r}")
        return value

    @model_validator(mode="after")
    def _defaults(self) -> FinetuneConfig:
        if self.learning_rate is None:
            self.learning_rate = DEFAULT_LEARNING_RATE[self.method]
        if self.mode == "pretrain" and self.data_format in ("alpaca", "sharegpt"):
            raise ValueError(f"mode 'pretrain' reads plain text: data_format must be 'text' or "
                             f"'auto', not {self.data_format!r}")
        if self.mode == "instruct" and self.data_format == "text":
            raise ValueError("mode 'instruct' reads alpaca or sharegpt records: for plain text "
                             "use mode 'pretrain'")
        return self

    @property
    def lr(self) -> float:
        """The peak learning rate (the method's default filled in)."""
        return self.learning_rate or DEFAULT_LEARNING_RATE[self.method]


@dataclass(frozen=True)
class TrainProgress:
    """Reported after every optimizer step (and once at the start with ``loss`` None)."""

    step: int
    total_steps: int
    epoch: float  # passes over the data so far
    loss: float | None  # mean loss per trained token of this step
    learning_rate: float
    tokens_per_s: float | None  # non-padding tokens per second since this run (re)started
    eta_s: float | None
    mfu: float | None  # model FLOPs utilisation; None on CPU or an unknown accelerator
    tokens_seen: int  # non-padding tokens, over the whole run (resumes included)


@dataclass(frozen=True)
class TrainResult:
    """What a finished fine-tune wrote and how it went."""

    output_path: Path  # output_dir/final: a PEFT adapter, or full weights + tokenizer
    final_loss: float | None
    losses: list[float]  # one per optimizer step, from step 1 (resumed runs included)
    steps: int
    tokens: int  # non-padding tokens trained on
    data_fingerprint: str
    resumed_from_step: int  # 0 for a fresh run
    method: str
    trainable_params: int
    total_params: int
    merged: bool = False
    examples: int = 0  # sequences per epoch (conversations, or packed blocks)
    dropped_examples: int = 0  # conversations with no answer token left within max_length
    elapsed_s: float = 0.0  # training time of the run that finished (not of earlier runs)
