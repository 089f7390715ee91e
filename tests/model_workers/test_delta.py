"""Delta weights: make_delta → apply_delta gives the target back; mismatches are refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from model_workers.delta import DeltaError, apply_delta, make_delta
from model_workers.localmodels import build_tiny_checkpoint, train_tokenizer


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two LLaMA checkpoints (seeds 0 and 1), an OPT one, and a seed-1 LLaMA with one more token."""
    root = tmp_path_factory.mktemp("delta")
    tokenizer = train_tokenizer(root / "tokenizer")
    built = {
        "base": build_tiny_checkpoint("llama", root / "base", seed=0, tokenizer_dir=tokenizer),
        "target": build_tiny_checkpoint("llama", root / "target", seed=1, tokenizer_dir=tokenizer),
        "opt": build_tiny_checkpoint("opt", root / "opt", seed=0, tokenizer_dir=tokenizer),
        "wide": build_tiny_checkpoint("llama", root / "wide", seed=0, tokenizer_dir=tokenizer,
                                      hidden_size=128),
    }
    # Vicuna's delta added a pad token: 32000 → 32001 rows. Here 384 → 385.
    model = AutoModelForCausalLM.from_pretrained(built["target"])
    model.resize_token_embeddings(model.config.vocab_size + 1)
    with torch.no_grad():  # the new token gets weights of its own
        model.get_input_embeddings().weight[-1].normal_(generator=torch.Generator().manual_seed(9))
    model.save_pretrained(root / "extended")
    shutil.copy(built["target"] / "tokenizer.json", root / "extended")
    built["extended"] = root / "extended"
    return built


def _weights(directory: Path) -> dict[str, torch.Tensor]:
    index = directory / "model.safetensors.index.json"
    if not index.is_file():
        return load_file(directory / "model.safetensors")
    tensors: dict[str, torch.Tensor] = {}
    for file in sorted(set(json.loads(index.read_text())["weight_map"].values())):
        tensors.update(load_file(directory / file))
    return tensors


def _assert_same_weights(got: Path, expected: Path) -> None:
    a, b = _weights(got), _weights(expected)
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].dtype == b[name].dtype, name
        assert torch.equal(a[name], b[name]), name


def test_round_trip_reproduces_the_target_exactly(tmp_path: Path, tiny: dict[str, Path]) -> None:
    delta = make_delta(tiny["base"], tiny["target"], tmp_path / "delta")
    base, target, stored = _weights(tiny["base"]), _weights(tiny["target"]), _weights(delta)
    for name in target:  # it really is a difference, not a copy of the target
        assert torch.allclose(stored[name].float(), target[name] - base[name], atol=1e-6)

    out = apply_delta(tiny["base"], delta, tmp_path / "vicuna")
    _assert_same_weights(out, tiny["target"])
    for name in ("config.json", "generation_config.json", "tokenizer.json",
                 "tokenizer_config.json", "chat_template.jinja"):
        assert (out / name).read_bytes() == (tiny["target"] / name).read_bytes(), name
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left

    model = AutoModelForCausalLM.from_pretrained(out)
    reference = AutoModelForCausalLM.from_pretrained(tiny["target"])
    ids = torch.tensor([[1, 40, 41, 42]])
    with torch.no_grad():
        assert torch.equal(model(ids).logits, reference(ids).logits)


def test_compact_delta_round_trips_approximately(tmp_path: Path, tiny: dict[str, Path]) -> None:
    exact = make_delta(tiny["base"], tiny["target"], tmp_path / "exact")
    compact = make_delta(tiny["base"], tiny["target"], tmp_path / "compact", dtype="bfloat16")
    exact_size = (exact / "model.safetensors").stat().st_size
    assert (compact / "model.safetensors").stat().st_size < exact_size / 2
    out = _weights(apply_delta(tiny["base"], compact, tmp_path / "out"))
    target = _weights(tiny["target"])
    for name in target:
        assert out[name].dtype == target[name].dtype
        assert torch.allclose(out[name], target[name], atol=1e-3)


def test_vocabulary_extension_keeps_the_new_rows(tmp_path: Path, tiny: dict[str, Path]) -> None:
    delta = make_delta(tiny["base"], tiny["extended"], tmp_path / "delta")
    stored, target = _weights(delta), _weights(tiny["extended"])
    name = "model.embed_tokens.weight"
    assert stored[name].shape[0] == 385
    assert torch.equal(stored[name][-1].float(), target[name][-1])  # new row as it is

    out = apply_delta(tiny["base"], delta, tmp_path / "out")
    _assert_same_weights(out, tiny["extended"])
    assert json.loads((out / "config.json").read_text())["vocab_size"] == 385


def test_base_with_more_rows_than_the_delta_is_refused(tmp_path: Path,
                                                       tiny: dict[str, Path]) -> None:
    delta = make_delta(tiny["base"], tiny["target"], tmp_path / "delta")
    with pytest.raises(DeltaError, match=r"'lm_head.weight' has shape \[385, 64\] in the base "
                                         r"but \[384, 64\] in the delta"):
        apply_delta(tiny["extended"], delta, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_other_architecture_is_refused_and_nothing_written(tmp_path: Path,
                                                           tiny: dict[str, Path]) -> None:
    delta = make_delta(tiny["base"], tiny["target"], tmp_path / "delta")
    with pytest.raises(DeltaError, match="base is a 'opt' model but the delta is a 'llama'"):
        apply_delta(tiny["opt"], delta, tmp_path / "out")
    with pytest.raises(DeltaError, match="base is a 'llama' model but the target is a 'opt'"):
        make_delta(tiny["base"], tiny["opt"], tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["delta"]


def test_shape_mismatch_names_the_first_tensor_and_both_shapes(
    tmp_path: Path, tiny: dict[str, Path]
) -> None:
    delta = make_delta(tiny["base"], tiny["target"], tmp_path / "delta")
    with pytest.raises(DeltaError, match=r"tensor 'lm_head.weight' has shape \[384, 128\] in the "
                                         r"base but \[384, 64\] in the delta"):
        apply_delta(tiny["wide"], delta, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_missing_tensor_is_named(tmp_path: Path, tiny: dict[str, Path]) -> None:
    deeper = build_tiny_checkpoint("llama", tmp_path / "deeper", num_layers=3,
                                   tokenizer_dir=tiny["base"])
    with pytest.raises(DeltaError, match=r"'model.layers.2.input_layernorm.weight' is in the "
                                         r"target but not in the base"):
        make_delta(tiny["base"], deeper, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_unreadable_config_and_existing_out_dir_are_refused(tmp_path: Path,
                                                            tiny: dict[str, Path]) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(tiny["base"], broken)
    (broken / "config.json").write_text("{not json")
    with pytest.raises(DeltaError, match=r"base config .* is not readable"):
        apply_delta(broken, tiny["target"], tmp_path / "out")
    assert not (tmp_path / "out").exists()

    (tmp_path / "taken").mkdir()
    with pytest.raises(DeltaError, match="already exists"):
        make_delta(tiny["base"], tiny["target"], tmp_path / "taken")


def test_sharded_delta_and_pytorch_bin_base(tmp_path: Path, tiny: dict[str, Path]) -> None:
    delta = make_delta(tiny["base"], tiny["target"], tmp_path / "delta", max_shard_bytes=200_000)
    index = json.loads((delta / "model.safetensors.index.json").read_text())
    shards = set(index["weight_map"].values())
    assert len(shards) > 1 and all((delta / shard).is_file() for shard in shards)

    bin_base = tmp_path / "bin-base"  # the layout the original LLaMA conversions used
    bin_base.mkdir()
    shutil.copy(tiny["base"] / "config.json", bin_base)
    torch.save(_weights(tiny["base"]), bin_base / "pytorch_model.bin")

    out = apply_delta(bin_base, delta, tmp_path / "out")
    _assert_same_weights(out, tiny["target"])
