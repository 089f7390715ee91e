"""Records → token ids and labels, once; then batches of them.

Instruction data: each conversation is rendered by :mod:`model_workers.conversation` (the same
text the worker builds at serving time) as segments; the whole text is tokenized at once and a
token carries loss only where it overlaps an assistant answer. Every answer must teach the
model to stop: the separator the template writes after an answer is trained on when it holds
a stop string or the EOS token's text (``"</s>"``, ``"### End"``, ``"<|im_end|>"``); otherwise
the tokenizer's EOS token is inserted after the answer and trained on.

Pretraining data: documents are tokenized, each closed by EOS, concatenated and cut into
``max_length`` blocks (the last, shorter block is kept); every token carries loss.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from model_workers import conversation
from model_workers.errors import BadRequest
from model_workers.finetune.config import FinetuneDataError, FinetuneError, Mode
from model_workers.finetune.data import Record

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100  # label of a token that carries no loss (torch's cross_entropy default)
EOS = None  # in a piece list: "insert the EOS token here"


@dataclass(frozen=True)
class Example:
    input_ids: list[int]
    labels: list[int]  # IGNORE_INDEX where no loss; aligned with input_ids (shifted in the loss)


@dataclass(frozen=True)
class Encoded:
    examples: list[Example]
    dropped: int  # conversations whose answers all lay beyond max_length
    truncated: int


def encode_records(records: Sequence[Record], *, tokenizer: Any, template: str, mode: Mode,
                   max_length: int) -> Encoded:
    """Tokenize every record once (see the module docstring)."""
    if tokenizer.eos_token_id is None:
        raise FinetuneError("the tokenizer has no EOS token: the model could not learn to stop")
    if mode == "pretrain":
        return Encoded(pack_documents([r.text for r in records], tokenizer=tokenizer,
                                      max_length=max_length), 0, 0)
    try:
        chat = conversation.get_template(template)
    except BadRequest as exc:
        raise FinetuneError(exc.message) from exc
    stops = [s for s in (*chat.stop, tokenizer.eos_token) if s]
    examples: list[Example] = []
    dropped = truncated = 0
    for record in records:
        try:
            segments = render_record(record, chat, tokenizer)
        except BadRequest as exc:
            raise FinetuneDataError(f"{record.where}: {exc.message}") from exc
        ids, labels = encode_segments(segments, tokenizer=tokenizer, stops=stops,
                                      add_special_tokens=chat.style != "hf")
        if len(ids) > max_length:
            ids, labels = ids[:max_length], labels[:max_length]
            truncated += 1
        if all(label == IGNORE_INDEX for label in labels[1:]):
            dropped += 1
            continue
        examples.append(Example(ids, labels))
    if not examples:
        raise FinetuneDataError(f"no conversation has an answer within max_length={max_length} "
                                "tokens: raise max_length")
    if dropped or truncated:
        logger.warning("%d of %d conversations cut at %d tokens; %d left out (no answer "
                       "token left)", truncated, len(records), max_length, dropped)
    return Encoded(examples, dropped, truncated)


def render_record(record: Record, chat: conversation.Template, tokenizer: Any
                  ) -> list[conversation.Segment]:
    """The record's conversation as segments in ``chat``'s format.

    An Alpaca ``input`` goes in the template's input block where it has one, else after the
    instruction, separated by a blank line.
    """
    messages = [dict(m) for m in record.messages]
    for message in messages:
        if "input" in message and (chat.style == "hf" or not chat.input_format):
            message["content"] = f"{message['content']}\n\n{message.pop('input')}"
    if chat.style == "hf":
        return conversation.render_segments_with_tokenizer(tokenizer, messages)
    return conversation.render_segments(chat, messages)


def _pieces(segments: Sequence[conversation.Segment], stops: Sequence[str]
            ) -> list[tuple[str, bool] | None]:
    """(text, trained) pieces, with :data:`EOS` where an EOS token is to be inserted."""
    pieces: list[tuple[str, bool] | None] = []
    for i, segment in enumerate(segments):
        if segment.kind == "answer":
            pieces.append((segment.text, True))
            after = segments[i + 1] if i + 1 < len(segments) else None
            closed = (after is not None and after.kind == "answer_end"
                      and any(stop in after.text for stop in stops))
            if not closed:
                pieces.append(EOS)
        elif segment.kind == "answer_end":
            pieces.append((segment.text, any(stop in segment.text for stop in stops)))
        else:
            pieces.append((segment.text, False))
    return pieces


def encode_segments(segments: Sequence[conversation.Segment], *, tokenizer: Any,
                    stops: Sequence[str], add_special_tokens: bool) -> tuple[list[int], list[int]]:
    """Token ids and labels of a rendered conversation (loss on answers and their stop)."""
    ids: list[int] = []
    labels: list[int] = []
    chunk: list[tuple[str, bool]] = []

    def flush() -> None:
        more_ids, more_labels = _encode_chunk(chunk, tokenizer, add_special_tokens and not ids)
        ids.extend(more_ids)
        labels.extend(more_labels)
        chunk.clear()

    for piece in _pieces(segments, stops):
        if piece is EOS:
            flush()
            ids.append(tokenizer.eos_token_id)
            labels.append(tokenizer.eos_token_id)
        else:
            chunk.append(piece)
    flush()
    return ids, labels


def _encode_chunk(chunk: list[tuple[str, bool]], tokenizer: Any, special: bool
                  ) -> tuple[list[int], list[int]]:
    text = "".join(t for t, _ in chunk)
    if not text and not special:
        return [], []
    if not getattr(tokenizer, "is_fast", False):  # no offsets: tokenize piece by piece
        ids: list[int] = []
        labels: list[int] = []
        for n, (piece, trained) in enumerate(chunk):
            piece_ids = tokenizer(piece, add_special_tokens=special and n == 0)["input_ids"]
            ids += piece_ids
            labels += piece_ids if trained else [IGNORE_INDEX] * len(piece_ids)
        return ids, labels
    spans, pos = [], 0
    for piece, trained in chunk:
        if trained and piece:
            spans.append((pos, pos + len(piece)))
        pos += len(piece)
    encoding = tokenizer(text, add_special_tokens=special, return_offsets_mapping=True,
                         verbose=False)
    labels = [
        token if end > start and any(start < b and end > a for a, b in spans) else IGNORE_INDEX
        for token, (start, end) in zip(encoding["input_ids"], encoding["offset_mapping"],
                                       strict=True)
    ]
    return list(encoding["input_ids"]), labels


def pack_documents(texts: Sequence[str], *, tokenizer: Any, max_length: int) -> list[Example]:
    """Concatenate the documents (each closed by EOS) and cut them into max_length blocks."""
    stream: list[int] = []
    for text in texts:
        stream += tokenizer(text, verbose=False)["input_ids"]
        if not stream or stream[-1] != tokenizer.eos_token_id:
            stream.append(tokenizer.eos_token_id)
    blocks = [stream[i:i + max_length] for i in range(0, len(stream), max_length)]
    return [Example(block, list(block)) for block in blocks if len(block) >= 2]


# --- batches ---------------------------------------------------------------------------------


def epoch_order(lengths: Sequence[int], batch_size: int, *, seed: int, epoch: int,
                group_by_length: bool) -> list[list[int]]:
    """The micro-batches of one epoch as lists of example indices; a function of its arguments
    alone, so a resumed run finds the same order. With ``group_by_length`` each run of 32
    batches (in shuffled order) is sorted by length first, so a batch pads little."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(len(lengths), generator=generator).tolist()
    if not group_by_length:
        return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    group = batch_size * 32
    batches: list[list[int]] = []
    for start in range(0, len(order), group):
        run = sorted(order[start:start + group], key=lambda i: -lengths[i])
        batches += [run[i:i + batch_size] for i in range(0, len(run), batch_size)]
    shuffle = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[i] for i in shuffle]


@dataclass(frozen=True)
class Batch:
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor
    tokens: int  # non-padding tokens
    targets: int  # positions that carry loss (after the shift)


def collate(examples: Sequence[Example], *, pad_id: int, device: torch.device) -> Batch:
    """Pad on the right to the longest example of the batch."""
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, example in enumerate(examples):
        n = len(example.input_ids)
        ids[row, :n] = torch.tensor(example.input_ids)
        labels[row, :n] = torch.tensor(example.labels)
        mask[row, :n] = 1
    targets = int((labels[:, 1:] != IGNORE_INDEX).sum())
    return Batch(ids.to(device), mask.to(device), labels.to(device), int(mask.sum()), targets)


def steps_for(examples: int, *, batch_size: int, accumulation: int, epochs: float,
              max_steps: int | None) -> tuple[int, int]:
    """(optimizer steps, micro-batches) of a run."""
    per_epoch = math.ceil(examples / batch_size)
    micro = max_steps * accumulation if max_steps else max(1, math.ceil(epochs * per_epoch))
    return math.ceil(micro / accumulation), micro
