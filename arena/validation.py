"""Checks a checkpoint must pass before anything is stored: config, architecture, adapter, GGUF.

Each check raises :class:`ValidationFailed` naming exactly what is wrong. Nothing here writes.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from arena.errors import ValidationFailed

logger = logging.getLogger(__name__)

_CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")


@dataclass(slots=True)
class ModelFacts:
    """What validation learnt about a checkpoint (recorded in the registry)."""

    architecture: str
    model_type: str
    context_length: int | None
    has_chat_template: bool


def looks_local(source: str) -> bool:
    """A source is a local directory when it is a path, else a hub id (``org/name``)."""
    return source.startswith(("/", ".", "~")) or Path(source).expanduser().exists()


def inspect_source(source: str, *, revision: str | None, gguf_file: str | None) -> ModelFacts:
    """Read the config (and tokenizer config) of ``source``; refuse what cannot be served."""
    from transformers import AutoConfig

    if looks_local(source):
        path = Path(source).expanduser()
        if not path.is_dir():
            raise ValidationFailed(f"source {source!r} is not a directory", param="source")
        if gguf_file:
            if not (path / gguf_file).is_file():
                raise ValidationFailed(
                    f"gguf_file {gguf_file!r} does not exist in {source}", param="gguf_file"
                )
        elif not (path / "config.json").is_file():
            raise ValidationFailed(
                f"source {source!r} has no config.json (is it a Hugging Face checkpoint "
                "directory? for a GGUF file pass gguf_file)",
                param="source",
            )
    kwargs: dict = {"revision": revision} if revision else {}
    if gguf_file:
        kwargs["gguf_file"] = gguf_file
    try:
        config = AutoConfig.from_pretrained(source, **kwargs)
    except Exception as exc:  # transformers raises OSError, ValueError, KeyError...
        where = f" at revision {revision}" if revision else ""
        raise ValidationFailed(
            f"could not read the config of {source!r}{where}: {exc}", param="source"
        ) from exc
    architecture = _known_architecture(config, source)
    context = next((getattr(config, k) for k in _CONTEXT_KEYS if getattr(config, k, None)), None)
    return ModelFacts(
        architecture=architecture,
        model_type=config.model_type,
        context_length=int(context) if context else None,
        has_chat_template=_has_chat_template(source, gguf_file),
    )


def _known_architecture(config, source: str) -> str:
    import transformers
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES,
    )

    generative = set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values()) | set(
        MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES.values()
    )
    names = list(getattr(config, "architectures", None) or [])
    if not names:  # configs written by hand often lack it: take the model type's default class
        model_type = str(getattr(config, "model_type", ""))
        default = MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(
            model_type
        ) or MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES.get(model_type)
        names = [default] if default else []
    for name in names:
        if name in generative and hasattr(transformers, name):
            return name
    raise ValidationFailed(
        f"{source!r} declares architecture {names or '(none)'} (model_type "
        f"{getattr(config, 'model_type', None)!r}), which transformers "
        f"{transformers.__version__} cannot load as a causal or seq2seq language model",
        param="source",
    )


def _has_chat_template(source: str, gguf_file: str | None) -> bool:
    if not looks_local(source):
        return False
    path = Path(source).expanduser()
    if gguf_file:
        return True  # GGUF chat models carry tokenizer.chat_template in their metadata
    if (path / "chat_template.jinja").is_file() or (path / "chat_template.json").is_file():
        return True
    tok_config = path / "tokenizer_config.json"
    if tok_config.is_file():
        try:
            return bool(json.loads(tok_config.read_text()).get("chat_template"))
        except (OSError, ValueError):
            return False
    return False


def check_template(name: str | None, facts: ModelFacts) -> str:
    """The template to record: the given one if it exists, else the tokenizer's own."""
    from model_workers.conversation import get_template
    from model_workers.errors import BadRequest

    if name is None:
        if facts.has_chat_template:
            return "hf"
        raise ValidationFailed(
            "the tokenizer has no chat_template, so a template is required: pass one of "
            "`arena templates list` (e.g. 'llama' for a plain base model)",
            param="template",
        )
    if name == "hf":
        if not facts.has_chat_template:
            raise ValidationFailed(
                "template 'hf' needs the tokenizer's chat_template, and this tokenizer has none; "
                "pick a named template (`arena templates list`)",
                param="template",
            )
        return name
    try:
        get_template(name)
    except BadRequest as exc:
        raise ValidationFailed(exc.message, param="template") from exc
    return name


def check_template_name(name: str) -> None:
    """A named template exists ('hf' is checked against the tokenizer at registration)."""
    from model_workers.conversation import get_template
    from model_workers.errors import BadRequest

    if name == "hf":
        return
    try:
        get_template(name)
    except BadRequest as exc:
        raise ValidationFailed(exc.message, param="template") from exc


def check_adapter(adapter: str, *, base_source: str, revision: str | None) -> None:
    """The adapter must be a PEFT LoRA directory whose modules and shapes fit the base."""
    path = Path(adapter).expanduser()
    config_file = path / "adapter_config.json"
    if not config_file.is_file():
        raise ValidationFailed(
            f"adapter {adapter!r} has no adapter_config.json (not a PEFT adapter directory)",
            param="adapter",
        )
    try:
        adapter_config = json.loads(config_file.read_text())
    except ValueError as exc:
        raise ValidationFailed(f"adapter_config.json in {adapter!r} is not JSON: {exc}") from exc
    if adapter_config.get("peft_type") != "LORA":
        raise ValidationFailed(
            f"adapter {adapter!r} is a {adapter_config.get('peft_type')!r} adapter; only LORA "
            "adapters are served",
            param="adapter",
        )
    shapes = _adapter_shapes(path)
    modules = _base_linear_shapes(base_source, revision)
    for key, shape in shapes.items():
        module, kind = _lora_module(key)
        if module is None:
            continue
        if module not in modules:
            raise ValidationFailed(
                f"adapter {adapter!r} does not match base {base_source!r}: it adapts module "
                f"{module!r}, which the base model does not have",
                param="adapter",
            )
        in_features, out_features = modules[module]
        expected = in_features if kind == "lora_A" else out_features
        got = shape[1] if kind == "lora_A" else shape[0]
        if got != expected:
            raise ValidationFailed(
                f"adapter {adapter!r} does not match base {base_source!r}: {key} has shape "
                f"{list(shape)} but {module} has in/out features {in_features}/{out_features}",
                param="adapter",
            )


def _adapter_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    weights = path / "adapter_model.safetensors"
    if weights.is_file():
        from safetensors import safe_open

        with safe_open(str(weights), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
    legacy = path / "adapter_model.bin"
    if legacy.is_file():
        import torch

        state = torch.load(legacy, map_location="cpu", weights_only=True)
        return {k: tuple(v.shape) for k, v in state.items()}
    raise ValidationFailed(
        f"adapter {str(path)!r} has no adapter_model.safetensors or adapter_model.bin",
        param="adapter",
    )


def _lora_module(key: str) -> tuple[str | None, str]:
    """``base_model.model.X.lora_A.weight`` → (``X``, ``lora_A``)."""
    for kind in ("lora_A", "lora_B"):
        marker = f".{kind}."
        if marker in key:
            module = key.split(marker)[0]
            module = module.removeprefix("base_model.model.")
            return module, kind
    return None, ""


def _base_linear_shapes(source: str, revision: str | None) -> dict[str, tuple[int, int]]:
    """(in, out) features of every linear-like module, from the config on the meta device."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM

    kwargs: dict = {"revision": revision} if revision else {}
    config = AutoConfig.from_pretrained(source, **kwargs)
    auto = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
    with torch.device("meta"):
        model = auto.from_config(config)
    shapes: dict[str, tuple[int, int]] = {}
    for name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if weight is None or weight.dim() != 2:
            continue
        if isinstance(module, torch.nn.Embedding) or type(module).__name__ == "Conv1D":
            shapes[name] = (weight.shape[0], weight.shape[1])
        else:
            shapes[name] = (weight.shape[1], weight.shape[0])
    return shapes
