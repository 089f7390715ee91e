"""The model side of the recipe: device and precision, loading with LoRA/QLoRA/full, saving the
artifact, and the numbers behind MFU."""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from model_workers.finetune.config import FinetuneConfig, FinetuneError

logger = logging.getLogger(__name__)

_QKVO = ["q_proj", "k_proj", "v_proj", "o_proj"]
# LoRA's default targets: every attention projection of the architecture. An architecture not
# listed gets PEFT's own default (usually q and v).
ATTENTION_PROJECTIONS: dict[str, list[str]] = {
    **{arch: _QKVO for arch in ("llama", "mistral", "mixtral", "qwen2", "qwen3", "gemma",
                                "gemma2", "gemma3_text", "stablelm", "internlm2", "olmo")},
    **{arch: ["q_proj", "k_proj", "v_proj", "out_proj"] for arch in ("opt", "gptj", "gpt_neo")},
    **{arch: ["query_key_value", "dense"] for arch in ("gpt_neox", "bloom", "falcon",
                                                       "chatglm")},
    "codegen": ["qkv_proj", "out_proj"],
    "phi3": ["qkv_proj", "o_proj"],
    "baichuan": ["W_pack", "o_proj"],
    "gpt2": ["c_attn"],  # its attention output "c_proj" shares its name with an MLP layer
    "gpt_bigcode": ["c_attn"],
}
# Dense bf16/fp16 tensor-core peaks, TFLOP/s, by a name torch.cuda.get_device_name contains
# (the longest match wins: "H100 PCIe" before "H100").
PEAK_TFLOPS: dict[str, float] = {
    "H200": 989.0, "H100": 989.0, "H100 PCIe": 756.0, "H100 NVL": 835.0, "GH200": 989.0,
    "A100": 312.0, "A800": 312.0, "H800": 989.0, "L40S": 362.0, "L40": 181.0, "L4": 121.0,
    "A10G": 70.0, "A10": 125.0, "A6000": 155.0, "V100": 125.0, "T4": 65.0,
    "RTX 4090": 165.0, "RTX 3090": 71.0, "B200": 2250.0,
}


def resolve_device(config: FinetuneConfig) -> torch.device:
    if config.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if config.device.startswith("cuda") and not torch.cuda.is_available():
        raise FinetuneError(f"device {config.device!r}: no CUDA device on this machine")
    return torch.device(config.device)


def resolve_precision(config: FinetuneConfig, device: torch.device) -> str:
    if device.type != "cuda":
        if config.precision in ("bf16", "fp16"):
            raise FinetuneError(f"precision {config.precision!r} needs a GPU; on CPU use 'fp32' "
                                "or 'auto'")
        return "fp32"
    if config.precision == "auto":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if config.precision == "bf16" and not torch.cuda.is_bf16_supported():
        raise FinetuneError("this GPU has no bf16: use precision 'fp16'")
    return config.precision


# Below this many parameters a CPU op takes microseconds and OpenMP's hand-offs cost more
# than they save: a 0.2M-parameter Llama trained ~10x faster on 1 thread than on 2 busy cores.
SMALL_MODEL_PARAMS = 10_000_000


def set_threads(config: FinetuneConfig, device: torch.device, *, params: int) -> int:
    """On CPU: ``num_threads``, else one torch thread per core this process may run on (a
    container's affinity can be smaller than the machine torch counts), or 1 for a model under
    :data:`SMALL_MODEL_PARAMS`. Returns the count (0 on a GPU: not set)."""
    if device.type != "cpu":
        return 0
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    threads = config.num_threads or (
        1 if params < SMALL_MODEL_PARAMS else max(1, min(torch.get_num_threads(), cores)))
    torch.set_num_threads(threads)
    return threads


def check_qlora() -> None:
    """QLoRA needs CUDA and bitsandbytes; say which is missing."""
    missing = []
    if not torch.cuda.is_available():
        missing.append("no CUDA device")
    if importlib.util.find_spec("bitsandbytes") is None:
        missing.append("the bitsandbytes package is not installed (pip install bitsandbytes)")
    if missing:
        raise FinetuneError(f"method 'qlora' loads the base in 4 bits with bitsandbytes on a "
                            f"CUDA GPU, and here there is {' and '.join(missing)}; use method "
                            "'lora' (or 'full')")


_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def load_tokenizer(base_path: Path) -> Any:
    tokenizer = AutoTokenizer.from_pretrained(str(base_path))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token  # padding is masked: any id will do
    return tokenizer


def load_model(config: FinetuneConfig, base_path: Path, *, device: torch.device,
               precision: str) -> Any:
    """The model to train: the base with LoRA adapters (lora, qlora) or all of it (full)."""
    base_config = AutoConfig.from_pretrained(str(base_path))
    if getattr(base_config, "is_encoder_decoder", False):
        raise FinetuneError(f"{base_config.model_type!r} is an encoder-decoder model; the "
                            "recipe fine-tunes decoder-only (causal) language models")
    kwargs: dict[str, Any] = {}
    if config.method == "qlora":
        check_qlora()
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=_DTYPES[precision])
        kwargs["device_map"] = {"": device.index or 0}
    # full: fp32 master weights (autocast computes in bf16/fp16); lora: a frozen base in the
    # compute dtype, adapters in fp32 (PEFT's autocast_adapter_dtype).
    dtype = torch.float32 if config.method == "full" else _DTYPES[precision]
    model: Any = AutoModelForCausalLM.from_pretrained(str(base_path), dtype=dtype, **kwargs)
    if config.method != "qlora":
        model.to(device)
    model.config.use_cache = False
    if config.method == "full":
        if config.gradient_checkpointing:
            model.gradient_checkpointing_enable()
        return model
    return _with_lora(model, config, base_config.model_type)


def _with_lora(model: Any, config: FinetuneConfig, model_type: str) -> Any:
    from peft import LoraConfig, TaskType, get_peft_model, prepare_model_for_kbit_training

    if config.method == "qlora":
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=config.gradient_checkpointing)
    elif config.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.enable_input_require_grads()  # the frozen embeddings give no grad to recompute
    targets = config.target_modules or ATTENTION_PROJECTIONS.get(model_type)
    lora = LoraConfig(task_type=TaskType.CAUSAL_LM, r=config.lora_r,
                      lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=targets)
    try:
        return get_peft_model(model, lora)
    except ValueError as exc:  # no such module, or no default for this architecture
        raise FinetuneError(f"LoRA on {model_type!r}: {exc}; name target_modules") from exc


def parameter_counts(model: Any) -> tuple[int, int]:
    """(trainable, total) parameters; PEFT counts 4-bit weights at their real size."""
    if hasattr(model, "get_nb_trainable_parameters"):
        trainable, total = model.get_nb_trainable_parameters()
        return int(trainable), int(total)
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def context_length(model: Any, tokenizer: Any) -> int | None:
    config = model.config
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    limit = getattr(tokenizer, "model_max_length", None)
    return limit if isinstance(limit, int) and 0 < limit < 1_000_000 else None


def flops_per_token(model: Any, method: str, total_params: int) -> float:
    """Training FLOPs per token: 6·N for full fine-tuning (forward 2N, backward 4N), 4·N with
    LoRA (frozen weights need no weight gradients). N leaves out the input embeddings (a
    lookup) and attention's own FLOPs are not counted, as in the usual 6·N·D estimate."""
    embeddings = model.get_input_embeddings()
    n = total_params - (embeddings.weight.numel() if embeddings is not None else 0)
    return (6.0 if method == "full" else 4.0) * n


def peak_flops(device: torch.device, config: FinetuneConfig) -> float | None:
    """FLOP/s of the accelerator at its dense bf16 peak; None on CPU or an unknown GPU."""
    if config.peak_tflops:
        return config.peak_tflops * 1e12
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    known = [key for key in PEAK_TFLOPS if key in name]
    return PEAK_TFLOPS[max(known, key=len)] * 1e12 if known else None


def save_artifact(model: Any, tokenizer: Any, out: Path, *, config: FinetuneConfig,
                  base_path: Path) -> None:
    """Write the adapter (PEFT ``save_pretrained``) or full weights + tokenizer into ``out``."""
    base_dtype = _saved_dtype(base_path)
    if config.method != "full" and not config.merge:
        model.save_pretrained(str(out))
        return
    if config.method == "qlora":  # merge into the base at full precision, not into 4 bits
        from peft import PeftModel

        adapter = out / ".adapter"
        model.save_pretrained(str(adapter))
        base = AutoModelForCausalLM.from_pretrained(str(base_path), dtype=base_dtype)
        model = PeftModel.from_pretrained(base, str(adapter)).merge_and_unload()
        shutil.rmtree(adapter)
    elif config.method != "full":
        model = model.merge_and_unload()
    model.config.use_cache = True
    model.to(base_dtype).save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))


def _saved_dtype(base_path: Path) -> torch.dtype:
    """The dtype the base was saved in (full and merged weights are written the same way)."""
    config = AutoConfig.from_pretrained(str(base_path))
    dtype = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype, None)
    return dtype if isinstance(dtype, torch.dtype) and dtype.is_floating_point else torch.float32
