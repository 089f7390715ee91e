"""Loss masking: only the assistant's answers (and what makes the model stop) carry loss.

Checked on each template family with the project's tiny tokenizer: the rendered text is the
serving text, the trained tokens decode to exactly the answers plus their stop marker, and
pretraining text is packed with EOS between documents.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from model_workers import conversation
from model_workers.conversation import Segment, get_template, render, render_segments
from model_workers.errors import BadRequest
from model_workers.finetune import FinetuneDataError, FinetuneError
from model_workers.finetune.data import Record
from model_workers.finetune.encode import (
    IGNORE_INDEX,
    collate,
    encode_records,
    epoch_order,
    pack_documents,
)

CHAT = [
    {"role": "user", "content": "Hello!"},
    {"role": "assistant", "content": "Hi there."},
    {"role": "user", "content": "What is 2+2?"},
    {"role": "assistant", "content": "It is 4.\nDone."},
]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    import transformers

    from model_workers.localmodels import train_tokenizer

    return transformers.AutoTokenizer.from_pretrained(
        train_tokenizer(tmp_path_factory.mktemp("tok")))


def trained_runs(tokenizer, ids: list[int], labels: list[int]) -> list[str]:
    """The text of each run of consecutive tokens that carry loss."""
    runs: list[list[int]] = []
    previous = False
    for token, label in zip(ids, labels, strict=True):
        trained = label != IGNORE_INDEX
        if trained:
            assert label == token
            if not previous:
                runs.append([])
            runs[-1].append(token)
        previous = trained
    return [tokenizer.decode(run, skip_special_tokens=False) for run in runs]


def encode(tokenizer, template: str, messages=CHAT, max_length: int = 2048):
    record = Record(where="test", messages=tuple(messages))
    encoded = encode_records([record], tokenizer=tokenizer, template=template, mode="instruct",
                             max_length=max_length)
    return encoded.examples[0] if encoded.examples else None


# --- render_segments: the serving text, cut at the answers ------------------------------------


@pytest.mark.parametrize("name", [n for n in conversation.template_names() if n != "hf"])
def test_segments_join_to_the_rendered_conversation(name: str) -> None:
    template = get_template(name)
    segments = render_segments(template, CHAT)
    assert "".join(s.text for s in segments) == render(template, CHAT,
                                                       add_generation_prompt=False)
    answers = [s.text for s in segments if s.kind == "answer"]
    space = " " if template.style == "add_colon" else ""  # "ASSISTANT:" + " answer"
    expected = [space + m["content"] for m in CHAT if m["role"] == "assistant"]
    if template.escape_newlines:
        expected = [a.replace("\n", "\\n") for a in expected]
    assert answers == expected  # few-shot example answers (baize) are context


def test_segments_of_a_template_with_a_separator_after_answers() -> None:
    segments = render_segments(get_template("vicuna_v1.1"), CHAT[:2])
    # the worker's prompt ends "ASSISTANT:", so the space is the model's to write
    assert segments[1:] == [Segment(" Hi there.", "answer"), Segment("</s>", "answer_end")]
    assert segments[0].kind == "context" and segments[0].text.endswith("USER: Hello! ASSISTANT:")


def test_segments_need_a_final_answer_and_no_reserved_characters() -> None:
    with pytest.raises(BadRequest, match="must end with an assistant message"):
        render_segments(get_template("llama"), CHAT[:3])
    with pytest.raises(BadRequest, match="reserved characters"):
        render_segments(get_template("llama"), [{"role": "user", "content": "\ue000"}, CHAT[1]])


def test_segments_with_the_tokenizers_chat_template(tokenizer) -> None:
    system = [{"role": "system", "content": "Be brief."}, *CHAT]
    segments = conversation.render_segments_with_tokenizer(tokenizer, system)
    assert "".join(s.text for s in segments) == conversation.render_with_tokenizer(
        tokenizer, system, add_generation_prompt=False)
    assert [(s.text, s.kind) for s in segments if s.kind != "context"] == [
        ("Hi there.", "answer"), ("</s>\n", "answer_end"),
        ("It is 4.\nDone.", "answer"), ("</s>\n", "answer_end")]


# --- token masks per template family ----------------------------------------------------------

# The answer text, then what makes the model stop: the template's separator where it holds a
# stop string or the EOS text ("</s>"), else an inserted EOS token.
MASKS = {
    # LLaMA base: turns joined by "\n"; an EOS is inserted after each answer, "\n" is context.
    "llama": ["Hi there.</s>", "It is 4.\nDone.</s>"],
    # "ASSISTANT: answer</s>": the space before the answer is the answer's first token's.
    "vicuna_v1.1": ["Hi there.</s>", "It is 4.\nDone.</s>"],
    "vicuna_v0": ["Hi there.</s>", "It is 4.\nDone.</s>"],
    "alpaca": ["Hi there.</s>", "It is 4.\nDone.</s>"],
    "dolly_v2": ["Hi there.\n\n### End\n\n", "It is 4.\nDone.\n\n### End\n\n"],
    "chatglm": ["Hi there.</s>", "It is 4.\nDone.</s>"],
    "moss": ["Hi there.<eom>\n", "It is 4.\nDone.<eom>\n"],
    "hf": ["Hi there.</s>\n", "It is 4.\nDone.</s>\n"],
}


@pytest.mark.parametrize("name", sorted(MASKS))
def test_only_answers_and_their_stop_carry_loss(tokenizer, name: str) -> None:
    example = encode(tokenizer, name)
    runs = trained_runs(tokenizer, example.input_ids, example.labels)
    assert [r.lstrip(" ") for r in runs] == MASKS[name]
    if name != "hf":  # named templates: the serving text, with BOS, plus any inserted EOS
        text = tokenizer.decode(example.input_ids, skip_special_tokens=False)
        served = "<s>" + render(get_template(name), CHAT, add_generation_prompt=False)
        assert text.replace("</s>", "") == served.replace("</s>", "")
    assert example.input_ids[0] == tokenizer.bos_token_id
    assert example.labels[0] == IGNORE_INDEX


def test_the_trained_text_is_what_follows_the_serving_prompt(tokenizer) -> None:
    for name in ("vicuna_v1.1", "alpaca", "belle", "chatglm", "hf"):
        example = encode(tokenizer, name, CHAT[:2])
        first = next(i for i, label in enumerate(example.labels) if label != IGNORE_INDEX)
        prompt = tokenizer.decode(example.input_ids[:first], skip_special_tokens=False)
        if name == "hf":
            served = conversation.render_with_tokenizer(tokenizer, CHAT[:1])
        else:
            served = "<s>" + render(get_template(name), CHAT[:1])
        assert prompt == served, name


def test_alpaca_input_goes_in_the_input_block_or_after_the_instruction(tokenizer) -> None:
    messages = [{"role": "user", "content": "Add.", "input": "2 and 3"},
                {"role": "assistant", "content": "5"}]
    with_block = encode(tokenizer, "alpaca_input", messages)
    text = tokenizer.decode(with_block.input_ids, skip_special_tokens=False)
    assert "### Instruction:\nAdd.\n\n### Input:\n2 and 3\n\n### Response:5</s>" in text
    without = encode(tokenizer, "vicuna_v1.1", messages)
    assert "USER: Add.\n\n2 and 3 ASSISTANT: 5</s>" in tokenizer.decode(
        without.input_ids, skip_special_tokens=False)
    assert trained_runs(tokenizer, without.input_ids, without.labels) == [" 5</s>"]


def test_without_offsets_pieces_are_tokenized_apart(tokenizer, monkeypatch) -> None:
    fast = encode(tokenizer, "alpaca")
    monkeypatch.setattr(type(tokenizer), "is_fast", property(lambda self: False))
    slow = encode(tokenizer, "alpaca")
    assert trained_runs(tokenizer, slow.input_ids, slow.labels) == trained_runs(
        tokenizer, fast.input_ids, fast.labels)


def test_truncation_keeps_the_start_and_drops_answerless_conversations(tokenizer) -> None:
    full = encode(tokenizer, "vicuna_v1.1")
    cut = encode(tokenizer, "vicuna_v1.1", max_length=len(full.input_ids) - 3)
    assert cut.input_ids == full.input_ids[: len(full.input_ids) - 3]
    with pytest.raises(FinetuneDataError, match="no conversation has an answer within"):
        encode(tokenizer, "vicuna_v1.1", max_length=10)


def test_bad_conversations_and_templates_name_the_record(tokenizer) -> None:
    record = Record(where="data.jsonl: line 4", messages=(
        {"role": "system", "content": "s"}, {"role": "system", "content": "again"},
        {"role": "assistant", "content": "a"}))
    with pytest.raises(FinetuneDataError, match=r"data\.jsonl: line 4: messages"):
        encode_records([record], tokenizer=tokenizer, template="llama", mode="instruct",
                       max_length=64)
    with pytest.raises(FinetuneError, match="unknown conversation template 'vicuna'"):
        encode_records([record], tokenizer=tokenizer, template="vicuna", mode="instruct",
                       max_length=64)


# --- pretraining: packing ---------------------------------------------------------------------


def test_documents_are_packed_with_eos_between_them(tokenizer) -> None:
    docs = ["The alpaca likes fresh grass.", "羊驼是一种可爱的动物。", "A B C D"]
    blocks = pack_documents(docs, tokenizer=tokenizer, max_length=8)
    stream = [t for b in blocks for t in b.input_ids]
    expected = []
    for doc in docs:
        expected += tokenizer(doc)["input_ids"] + [tokenizer.eos_token_id]
    assert stream == expected[: len(stream)]
    assert len(expected) - len(stream) <= 1  # a last block of one token has nothing to predict
    assert all(len(b.input_ids) == 8 for b in blocks[:-1]) and 2 <= len(blocks[-1].input_ids) <= 8
    assert all(b.labels == b.input_ids for b in blocks)  # loss on every token
    records = [Record(where=f"d{i}", text=d) for i, d in enumerate(docs)]
    packed = encode_records(records, tokenizer=tokenizer, template="llama", mode="pretrain",
                            max_length=8)
    assert packed.examples == blocks


# --- batches ----------------------------------------------------------------------------------


def test_epoch_order_is_a_shuffled_partition_grouped_by_length() -> None:
    lengths = [((i * 37) % 100) + 1 for i in range(200)]
    order = epoch_order(lengths, 4, seed=0, epoch=0, group_by_length=True)
    assert sorted(i for batch in order for i in batch) == list(range(200))
    assert order == epoch_order(lengths, 4, seed=0, epoch=0, group_by_length=True)
    assert order != epoch_order(lengths, 4, seed=0, epoch=1, group_by_length=True)
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in order)
    plain = epoch_order(lengths, 4, seed=0, epoch=0, group_by_length=False)
    assert spread * 5 < sum(max(lengths[i] for i in b) - min(lengths[i] for i in b)
                            for b in plain)


def test_collate_pads_right_and_counts_tokens(tokenizer) -> None:
    import torch

    a, b = encode(tokenizer, "llama", CHAT[:2]), encode(tokenizer, "llama")
    batch = collate([a, b], pad_id=tokenizer.pad_token_id, device=torch.device("cpu"))
    width = len(b.input_ids)
    assert batch.input_ids.shape == (2, width) and batch.tokens == len(a.input_ids) + width
    assert batch.input_ids[0, len(a.input_ids):].eq(tokenizer.pad_token_id).all()
    assert batch.labels[0, len(a.input_ids):].eq(IGNORE_INDEX).all()
    assert batch.targets == sum(label != IGNORE_INDEX for e in (a, b) for label in e.labels[1:])
    assert batch.attention_mask.sum() == batch.tokens


def test_hf_template_without_chat_template_is_refused(tokenizer, monkeypatch) -> None:
    monkeypatch.setattr(tokenizer, "chat_template", None, raising=False)
    with pytest.raises(FinetuneDataError, match="no chat_template"):
        encode(tokenizer, "hf")


def test_demo_set_encodes_with_every_causal_template(tokenizer) -> None:
    from importlib import resources

    from model_workers.finetune.data import load_data

    path = Path(str(resources.files("model_workers") / "finetune/data/demo_instructions.jsonl"))
    _, records = load_data(path, mode="instruct")
    for name in ("alpaca", "alpaca_input", "vicuna_v1.1", "chinese_alpaca", "hf"):
        encoded = encode_records(records, tokenizer=tokenizer, template=name, mode="instruct",
                                 max_length=512)
        assert len(encoded.examples) == len(records) and encoded.dropped == 0
