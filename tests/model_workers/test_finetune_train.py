"""The fine-tuning recipe end to end on tiny random checkpoints: LoRA, merged LoRA and full
fine-tuning, ShareGPT and pretraining data, resume after a crash or a stop, refusals."""

from __future__ import annotations

import json
import warnings
from importlib import resources
from pathlib import Path

import pytest
import torch

from model_workers.finetune import (
    FinetuneConfig,
    FinetuneDataError,
    FinetuneError,
    TrainingCancelled,
    train,
)
from model_workers.finetune.checkpoints import CHECKPOINTS, RESULT_FILE

DEMO = Path(str(resources.files("model_workers") / "finetune/data/demo_instructions.jsonl"))
PROBE = "<s>USER: What is the capital of France? ASSISTANT: The capital of France is Paris.</s>"
pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    from model_workers.localmodels import build_tiny_checkpoint

    return build_tiny_checkpoint("llama", tmp_path_factory.mktemp("base") / "llama", seed=0)


def quick(**changes) -> FinetuneConfig:
    settings = {"max_steps": 12, "batch_size": 8, "gradient_accumulation_steps": 1,
                "learning_rate": 1e-2, "save_steps": 4, "seed": 0, **changes}
    return FinetuneConfig(**settings)


def run(config: FinetuneConfig, base: Path, out: Path, data: Path = DEMO, **kwargs):
    return train(config, base_path=base, template="vicuna_v1.1", data_path=data,
                 output_dir=out, **kwargs)


def logits(model, tokenizer_dir: Path) -> torch.Tensor:
    from transformers import AutoTokenizer

    ids = AutoTokenizer.from_pretrained(str(tokenizer_dir))(PROBE, add_special_tokens=False)
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids["input_ids"]])).logits


@pytest.fixture(scope="module")
def lora_run(base, tmp_path_factory):
    """One LoRA run with progress recorded, shared by the tests that read its output."""
    out = tmp_path_factory.mktemp("lora")
    seen = []
    result = run(quick(), base, out, on_progress=seen.append)
    return out, result, seen


def test_lora_loss_goes_down_and_progress_is_reported(lora_run) -> None:
    _, result, seen = lora_run
    assert result.steps == 12 and len(result.losses) == 12 and result.method == "lora"
    assert result.losses[0] == pytest.approx(5.95, abs=0.1)  # ln(384): a random model
    assert sum(result.losses[-3:]) / 3 < result.losses[0] - 0.1
    assert result.final_loss == result.losses[-1]
    assert [p.step for p in seen] == list(range(13))  # step 0: before training, no loss
    assert seen[0].loss is None and [p.loss for p in seen[1:]] == result.losses
    last = seen[-1]
    assert last.total_steps == 12 and last.eta_s == 0 and last.mfu is None  # CPU: no MFU
    assert last.tokens_seen == result.tokens and last.tokens_per_s > 0
    assert last.epoch == pytest.approx(12 * 8 / 80)
    rates = [p.learning_rate for p in seen[1:]]
    assert rates[0] == pytest.approx(1e-2) and rates == sorted(rates, reverse=True)  # cosine
    assert 0 < result.trainable_params < result.total_params / 10


def test_lora_adapter_is_written_and_loads_with_peft(base, lora_run) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out, result, _ = lora_run
    final = out / "final"
    assert result.output_path == final and not (out / CHECKPOINTS).exists()
    config = json.loads((final / "adapter_config.json").read_text())
    assert sorted(config["target_modules"]) == ["k_proj", "o_proj", "q_proj", "v_proj"]
    assert (config["r"], config["lora_alpha"]) == (8, 16)
    recorded = json.loads((final / RESULT_FILE).read_text())
    assert recorded["losses"] == result.losses and recorded["run"]["template"] == "vicuna_v1.1"
    plain = logits(AutoModelForCausalLM.from_pretrained(str(base)), base)
    tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(base)), str(final))
    assert not torch.allclose(logits(tuned.eval(), base), plain, atol=1e-4)


def test_merged_lora_equals_base_plus_adapter(base, lora_run, tmp_path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out, result, _ = lora_run
    merged = run(quick(merge=True), base, tmp_path / "merged")
    assert merged.merged and merged.losses == result.losses  # same seed: same arithmetic
    final = merged.output_path
    assert (final / "config.json").is_file() and (final / "tokenizer.json").is_file()
    assert not (final / "adapter_config.json").exists()
    adapter = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(base)),
                                        str(out / "final")).eval()
    full = AutoModelForCausalLM.from_pretrained(str(final)).eval()
    assert torch.allclose(logits(full, final), logits(adapter, base), atol=1e-4)


def test_full_fine_tuning_on_a_tiny_model(base, tmp_path) -> None:
    from transformers import AutoModelForCausalLM

    result = run(quick(method="full", learning_rate=3e-3), base, tmp_path / "full")
    assert result.method == "full" and result.merged
    assert result.trainable_params == result.total_params
    assert sum(result.losses[-3:]) / 3 < result.losses[0] - 1.0  # every weight moves
    model = AutoModelForCausalLM.from_pretrained(str(result.output_path))
    assert model.dtype == torch.float32 and (result.output_path / "tokenizer.json").is_file()
    assert not torch.equal(model.lm_head.weight,
                           AutoModelForCausalLM.from_pretrained(str(base)).lm_head.weight)


def test_sharegpt_with_the_tokenizers_chat_template(base, tmp_path) -> None:
    data = tmp_path / "chat.json"
    data.write_text(json.dumps([
        {"conversations": [{"from": "system", "value": "Answer briefly."},
                           {"from": "human", "value": f"What is {a} + {b}?"},
                           {"from": "gpt", "value": f"{a + b}."},
                           {"from": "human", "value": "And doubled?"},
                           {"from": "gpt", "value": f"{2 * (a + b)}."}]}
        for a in range(4) for b in range(4)]), encoding="utf-8")
    result = train(quick(max_steps=6, batch_size=4), base_path=base, template="hf",
                   data_path=data, output_dir=tmp_path / "out")
    assert result.examples == 16 and result.losses[-1] < result.losses[0]


def test_pretraining_packs_text_files_into_blocks(base, tmp_path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(3):
        (corpus / f"doc{i}.txt").write_text("The alpaca likes fresh grass. " * 40 + str(i))
    config = quick(mode="pretrain", max_length=64, max_steps=None, epochs=2, batch_size=4)
    result = run(config, base, tmp_path / "out", data=corpus)
    assert result.examples >= 3 * 40 * 6 // 64  # ~6+ tokens a sentence, 64-token blocks
    assert result.steps == 2 * -(-result.examples // 4)
    assert result.losses[-1] < result.losses[0] - 0.3  # repetitive text is easy to learn


def test_resume_after_a_crash_continues_the_same_run(base, lora_run, tmp_path) -> None:
    _, uninterrupted, _ = lora_run
    out = tmp_path / "crash"

    def crash_at_step_7(progress) -> None:
        if progress.step == 7:
            raise RuntimeError("the job worker died")

    with pytest.raises(RuntimeError, match="died"):
        run(quick(), base, out, on_progress=crash_at_step_7)
    assert [p.name for p in (out / CHECKPOINTS).iterdir()] == ["step-000004"]
    resumed = run(quick(), base, out)
    assert resumed.resumed_from_step == 4 and resumed.steps == 12
    # optimizer, scheduler, RNG and data position restored: the very same numbers
    assert resumed.losses == pytest.approx(uninterrupted.losses, abs=1e-5)
    assert resumed.tokens == uninterrupted.tokens


def test_should_stop_checkpoints_then_cancels_and_a_new_call_resumes(base, lora_run,
                                                                     tmp_path) -> None:
    _, uninterrupted, _ = lora_run
    out = tmp_path / "stop"
    steps: list[int] = []
    with pytest.raises(TrainingCancelled) as cancelled:
        run(quick(lora_dropout=0.1), base, out, on_progress=lambda p: steps.append(p.step),
            should_stop=lambda: len(steps) > 5)  # after step 5
    assert cancelled.value.step == 5 and cancelled.value.checkpoint.name == "step-000005"
    changed = quick(lora_dropout=0.1, learning_rate=5e-3)
    with pytest.raises(FinetuneError, match=r"other settings \(learning_rate: 0.01 → 0.005\)"):
        run(changed, base, out)
    resumed = run(quick(lora_dropout=0.1, save_steps=100), base, out)  # save_steps may change
    assert resumed.resumed_from_step == 5 and len(resumed.losses) == 12
    fresh = run(quick(lora_dropout=0.1), base, tmp_path / "fresh")
    assert resumed.losses == pytest.approx(fresh.losses, abs=1e-5)  # dropout RNG restored
    assert fresh.losses != pytest.approx(uninterrupted.losses, abs=1e-5)


def test_a_finished_run_is_returned_not_trained_again(base, lora_run, tmp_path) -> None:
    out, result, _ = lora_run
    seen = []
    again = run(quick(), base, out, on_progress=seen.append)
    assert again == result and seen == []
    with pytest.raises(FinetuneError, match="other settings"):
        run(quick(lora_r=4), base, out)


def test_changed_data_is_not_resumed(base, tmp_path) -> None:
    data = tmp_path / "data.jsonl"
    data.write_text(DEMO.read_text(encoding="utf-8"), encoding="utf-8")
    out = tmp_path / "out"
    with pytest.raises(TrainingCancelled):
        run(quick(), base, out, data=data, should_stop=lambda: True)
    data.write_text(DEMO.read_text(encoding="utf-8")[:2000].rsplit("\n", 1)[0] + "\n")
    with pytest.raises(FinetuneDataError, match="the data changed since"):
        run(quick(), base, out, data=data)
    data.write_text('{"instruction": "only"}\n')
    with pytest.raises(FinetuneDataError, match="line 1: 'output' must be a string"):
        run(quick(), base, out, data=data)


def test_refusals_say_what_to_do(base, tmp_path) -> None:
    with pytest.raises(FinetuneError, match=r"qlora.*no CUDA device.*bitsandbytes.*use method "
                                            r"'lora'"):
        run(quick(method="qlora"), base, tmp_path / "q")
    with pytest.raises(FinetuneError, match="precision 'bf16' needs a GPU"):
        run(quick(precision="bf16"), base, tmp_path / "p")
    with pytest.raises(FinetuneError, match=r"not found in the base model.*name target_modules"):
        run(quick(target_modules=["query_key_value"]), base, tmp_path / "t")
    with pytest.raises(FinetuneError, match="unknown conversation template"):
        train(quick(), base_path=base, template="vicuna", data_path=DEMO,
              output_dir=tmp_path / "u")


def test_default_lora_targets_follow_the_architecture(tmp_path) -> None:
    from model_workers.localmodels import build_tiny_checkpoint

    opt = build_tiny_checkpoint("opt", tmp_path / "opt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = run(quick(max_steps=2), opt, tmp_path / "out")
    config = json.loads((result.output_path / "adapter_config.json").read_text())
    assert sorted(config["target_modules"]) == ["k_proj", "out_proj", "q_proj", "v_proj"]
