"""Step-level (continuous) batching for the ``hf`` backend.

One :class:`Scheduler` thread owns the model. Each turn it runs queued one-off jobs (``score``,
``prompt_logprobs``), prefills newly arrived requests (all those of one adapter in one
left-padded forward pass) and merges them into that adapter's running batch, then runs one decode
step for one adapter group (round-robin among groups with work). Finished and cancelled rows
leave the batch after every step.

The model-specific tensor work lives in the runners: :class:`CausalRunner` keeps a
``DynamicCache``, an explicit attention mask and per-row position ids, so a prefilled batch can be
left-padded and concatenated onto a running one. :class:`Seq2SeqRunner` (T5) batches in waves:
requests that arrive while a wave runs join the next one.
"""

from __future__ import annotations

import inspect
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, cast

import torch
import torch.nn.functional as F
from transformers import DynamicCache, EncoderDecoderCache
from transformers.cache_utils import DynamicLayer
from transformers.modeling_outputs import BaseModelOutput

from model_workers.backends.hf_sampling import Sequence, next_tokens
from model_workers.errors import BackendUnavailable, WorkerError

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass
class SchedulerStats:
    """Counters that show batching at work (read by tests and the benchmark)."""

    decode_steps: int = 0
    prefills: int = 0
    generated_tokens: int = 0
    max_batch: int = 0  # most rows in one decode step
    joins: int = 0  # prefilled rows merged into a batch that was already decoding


def left_pad(prompts: list[list[int]], pad_id: int, device: torch.device):
    """``(input_ids, attention_mask)`` with each prompt aligned to the right."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
        mask[row, width - len(prompt) :] = 1
    return ids.to(device), mask.to(device)


MIN_SHARED_PREFIX = 32  # tokens; a shorter common prefix is not worth its own forward pass


def _common_prefix(prompts: list[list[int]]) -> int:
    """Length of the prompts' longest common prefix (that of the lexicographic min and max)."""
    low, high = min(prompts), max(prompts)
    for n, (a, b) in enumerate(zip(low, high, strict=False)):
        if a != b:
            return n
    return len(low)


@dataclass
class CausalState:
    cache: DynamicCache
    mask: torch.Tensor  # [batch, cached + 1 columns] once the next token is appended
    next_pos: torch.Tensor  # [batch] position id of each row's next token


class CausalRunner:
    """Prefill, decode, drop and merge rows of a decoder-only model's batch."""

    def __init__(self, model: Any, *, pad_id: int) -> None:
        self.model = model
        self.pad_id = pad_id
        self.device = model.device
        accepted = inspect.signature(model.forward).parameters
        self._positions = "position_ids" in accepted  # BLOOM derives ALiBi from the mask
        self._keep_last = "logits_to_keep" in accepted

    def forward(self, prompts: list[list[int]], *, cache: bool, last_only: bool):
        """Left-padded forward pass: ``(logits, mask, cache)``, logits ``[batch, L or 1, vocab]``."""
        ids, mask = left_pad(prompts, self.pad_id, self.device)
        kwargs: dict[str, Any] = {}
        if self._positions:
            kwargs["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0)
        if last_only and self._keep_last:
            kwargs["logits_to_keep"] = 1
        past = DynamicCache(config=self.model.config) if cache else None
        out = self.model(
            input_ids=ids, attention_mask=mask, past_key_values=past, use_cache=cache, **kwargs
        )
        logits = out.logits[:, -1:, :] if last_only else out.logits
        return logits, mask, out.past_key_values if cache else None

    def last_logits(self, prompts: list[list[int]]) -> torch.Tensor:
        """Next-token logits ``[batch, vocab]`` after each prompt. Prompts that share a long
        prefix (a benchmark's k-shot examples) compute it once: its KV cache is repeated for the
        batch and only each prompt's own rest is run on top."""
        shared = min(_common_prefix(prompts), min(len(p) for p in prompts) - 1)
        if len(prompts) < 2 or shared < MIN_SHARED_PREFIX:
            return self.forward(prompts, cache=False, last_only=True)[0][:, -1, :]
        head = torch.tensor([prompts[0][:shared]], dtype=torch.long, device=self.device)
        cache = self.model(input_ids=head, past_key_values=DynamicCache(config=self.model.config),
                           use_cache=True).past_key_values
        cache.batch_repeat_interleave(len(prompts))
        ids, own = left_pad([p[shared:] for p in prompts], self.pad_id, self.device)
        mask = torch.cat([own.new_ones((len(prompts), shared)), own], dim=1)
        kwargs: dict[str, Any] = {"logits_to_keep": 1} if self._keep_last else {}
        if self._positions:
            kwargs["position_ids"] = shared + (own.cumsum(-1) - 1).clamp(min=0)
        out = self.model(input_ids=ids, attention_mask=mask, past_key_values=cache,
                         use_cache=True, **kwargs)
        return out.logits[:, -1, :]

    def prefill(self, prompts: list[list[int]]) -> tuple[CausalState, torch.Tensor]:
        logits, mask, cache = self.forward(prompts, cache=True, last_only=True)
        return CausalState(cache, mask, mask.sum(-1)), logits[:, -1, :]

    def decode(self, state: CausalState, tokens: list[int]) -> torch.Tensor:
        ids = torch.tensor(tokens, dtype=torch.long, device=self.device)[:, None]
        state.mask = F.pad(state.mask, (0, 1), value=1)
        kwargs: dict[str, Any] = {}
        if self._positions:
            kwargs["position_ids"] = state.next_pos[:, None]
        out = self.model(
            input_ids=ids,
            attention_mask=state.mask,
            past_key_values=state.cache,
            use_cache=True,
            **kwargs,
        )
        state.next_pos = state.next_pos + 1
        return out.logits[:, -1, :]

    def can_join(self, state: CausalState) -> bool:
        """Whether rows can be merged in: only plain full-attention caches are padded safely
        (sliding-window or recurrent layers fall back to joining at the next wave)."""
        return _plain_layers(state.cache) is not None

    def select(self, state: CausalState, keep: list[int]) -> CausalState:
        index = torch.tensor(keep, dtype=torch.long, device=self.device)
        state.cache.batch_select_indices(index)
        state.mask, state.next_pos = state.mask[index], state.next_pos[index]
        layers = _plain_layers(state.cache)
        first = int(state.mask.any(0).int().argmax())  # columns before are padding in every row
        if layers is not None and first:
            state.mask = state.mask[:, first:]
            for layer in layers:
                layer.keys = _kv(layer.keys)[:, :, first:, :]
                layer.values = _kv(layer.values)[:, :, first:, :]
        return state

    def merge(self, running: CausalState, joining: CausalState) -> CausalState:
        """Left-pad the shorter cache and mask along the sequence axis and stack the batches."""
        width = max(running.mask.shape[1], joining.mask.shape[1])

        def pad(t: torch.Tensor, axis_from_end: int) -> torch.Tensor:
            missing = width - t.shape[-axis_from_end]
            return F.pad(t, (0, 0) * (axis_from_end - 1) + (missing, 0)) if missing else t

        mine_layers, their_layers = _plain_layers(running.cache), _plain_layers(joining.cache)
        if mine_layers is None or their_layers is None:
            raise ValueError("only plain DynamicLayer caches can be merged")
        for mine, theirs in zip(mine_layers, their_layers, strict=True):
            mine.keys = torch.cat([pad(_kv(mine.keys), 2), pad(_kv(theirs.keys), 2)])
            mine.values = torch.cat([pad(_kv(mine.values), 2), pad(_kv(theirs.values), 2)])
        running.mask = torch.cat([pad(running.mask, 1), pad(joining.mask, 1)])
        running.next_pos = torch.cat([running.next_pos, joining.next_pos])
        return running


def _plain_layers(cache: DynamicCache) -> list[DynamicLayer] | None:
    """The cache's layers if all are filled, plain full-attention ``DynamicLayer``s, else None."""
    layers = list(cache.layers)
    if all(type(layer) is DynamicLayer and layer.is_initialized for layer in layers):
        return cast(list[DynamicLayer], layers)
    return None


def _kv(tensor: torch.Tensor | None) -> torch.Tensor:
    if tensor is None:
        raise ValueError("cache layer is empty")
    return tensor


@dataclass
class Seq2SeqState:
    encoded: torch.Tensor  # encoder hidden states [batch, source length, d_model]
    mask: torch.Tensor  # encoder attention mask
    cache: EncoderDecoderCache


class Seq2SeqRunner:
    """Encoder once, then one decoder token per step; all rows of a wave share decoder positions."""

    def __init__(self, model: Any, *, pad_id: int) -> None:
        self.model = model
        self.pad_id = pad_id
        self.device = model.device
        start = model.config.decoder_start_token_id
        self.start_id = start if start is not None else pad_id

    def first_step(self, prompts: list[list[int]], *, cache: bool):
        """Encode and run the decoder's first step: ``(state or None, logits [batch, vocab])``."""
        width = max(len(p) for p in prompts)
        ids = torch.tensor(
            [p + [self.pad_id] * (width - len(p)) for p in prompts], device=self.device
        )
        mask = torch.tensor(
            [[1] * len(p) + [0] * (width - len(p)) for p in prompts], device=self.device
        )
        encoded = self.model.get_encoder()(input_ids=ids, attention_mask=mask).last_hidden_state
        start = torch.full((len(prompts), 1), self.start_id, dtype=torch.long, device=self.device)
        past = EncoderDecoderCache(DynamicCache(), DynamicCache()) if cache else None
        out = self.model(
            encoder_outputs=BaseModelOutput(last_hidden_state=encoded),
            attention_mask=mask,
            decoder_input_ids=start,
            past_key_values=past,
            use_cache=cache,
        )
        state = Seq2SeqState(encoded, mask, out.past_key_values) if cache else None
        return state, out.logits[:, -1, :]

    def prefill(self, prompts: list[list[int]]) -> tuple[Seq2SeqState, torch.Tensor]:
        return self.first_step(prompts, cache=True)

    def decode(self, state: Seq2SeqState, tokens: list[int]) -> torch.Tensor:
        ids = torch.tensor(tokens, dtype=torch.long, device=self.device)[:, None]
        out = self.model(
            encoder_outputs=BaseModelOutput(last_hidden_state=state.encoded),
            attention_mask=state.mask,
            decoder_input_ids=ids,
            past_key_values=state.cache,
            use_cache=True,
        )
        return out.logits[:, -1, :]

    def can_join(self, state: Seq2SeqState) -> bool:
        return False

    def select(self, state: Seq2SeqState, keep: list[int]) -> Seq2SeqState:
        index = torch.tensor(keep, dtype=torch.long, device=self.device)
        state.cache.batch_select_indices(index)
        state.encoded, state.mask = state.encoded[index], state.mask[index]
        return state

    def merge(self, running: Seq2SeqState, joining: Seq2SeqState) -> Seq2SeqState:
        raise NotImplementedError("seq2seq batches run in waves")


class Runner(Protocol):
    """What the scheduler needs from a model: batch state in, logits ``[batch, vocab]`` out."""

    def prefill(self, prompts: list[list[int]]) -> tuple[Any, torch.Tensor]: ...

    def decode(self, state: Any, tokens: list[int]) -> torch.Tensor: ...

    def can_join(self, state: Any) -> bool: ...

    def select(self, state: Any, keep: list[int]) -> Any: ...

    def merge(self, running: Any, joining: Any) -> Any: ...


@dataclass(eq=False)
class _Group:
    seqs: list[Sequence]
    state: Any


class Scheduler:
    """The thread that owns the model: see the module docstring for one turn of its loop."""

    def __init__(
        self,
        runner: Runner,
        activate: Callable[[str | None], None],
        *,
        max_batch_size: int,
        batch_wait_s: float,
    ) -> None:
        self.runner = runner
        self.stats = SchedulerStats()
        self._activate = activate  # switches the active LoRA adapter (None: the base)
        self._max_batch = max(1, max_batch_size)
        self._batch_wait_s = batch_wait_s
        self._cv = threading.Condition()
        self._waiting: deque[Sequence] = deque()
        self._jobs: list[tuple[Callable[[], Any], Future]] = []
        self._groups: dict[str | None, _Group] = {}
        self._active = 0  # admitted and unfinished sequences
        self._turn = 0
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="hf-scheduler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Finish the current step, fail whatever is left, and join the thread."""
        with self._cv:
            self._stopping = True
            self._cv.notify()
        if self._thread.is_alive():
            self._thread.join()

    def queue_length(self) -> int:
        with self._cv:
            return len(self._waiting) + self._active

    def submit(self, seq: Sequence) -> None:
        with self._cv:
            if self._stopping:
                raise BackendUnavailable("the hf backend is closed")
            self._waiting.append(seq)
            self._cv.notify()

    def call(self, fn: Callable[[], T]) -> Future[T]:
        """Run ``fn`` on the scheduler thread between two steps."""
        future: Future[T] = Future()
        with self._cv:
            if self._stopping:
                raise BackendUnavailable("the hf backend is closed")
            self._jobs.append((fn, future))
            self._cv.notify()
        return future

    # -- the thread ----------------------------------------------------------------------

    def _loop(self) -> None:
        with torch.inference_mode():
            while (jobs := self._next_work()) is not None:
                try:
                    for fn, future in jobs:
                        _run_job(fn, future)
                    self._admit()
                    self._step()
                except Exception as exc:  # a bug here must not leave clients waiting forever
                    logger.exception("hf scheduler turn failed")
                    self._fail_all(WorkerError(f"generation failed: {exc}"))
                self._active = self._running()  # exact again, whatever failed
        self._fail_all(BackendUnavailable("the hf backend is closed"))

    def _next_work(self) -> list[tuple[Callable[[], Any], Future]] | None:
        """Block until there is something to do; the jobs to run first, or None to stop."""
        with self._cv:
            while not self._stopping:
                if self._jobs:
                    jobs, self._jobs = self._jobs, []
                    return jobs
                if self._groups:
                    return []
                if not self._waiting:
                    self._cv.wait()
                    continue
                # Idle: give requests arriving together a moment to share one prefill.
                delay = self._waiting[0].arrived + self._batch_wait_s - time.monotonic()
                if delay <= 0:
                    return []
                self._cv.wait(delay)
            return None

    def _admit(self) -> None:
        taken: dict[str | None, list[Sequence]] = {}
        with self._cv:
            room = self._max_batch - self._running()
            left: deque[Sequence] = deque()
            while self._waiting:
                seq = self._waiting.popleft()
                if seq.cancelled:
                    continue
                group = self._groups.get(seq.adapter)
                if room > 0 and (group is None or self.runner.can_join(group.state)):
                    taken.setdefault(seq.adapter, []).append(seq)
                    room -= 1
                else:
                    left.append(seq)
            self._waiting = left
            self._active = self._max_batch - room  # waiting no more, not yet in a group
        for adapter, seqs in taken.items():
            try:
                self._prefill(adapter, seqs)
            except Exception as exc:
                logger.exception("hf prefill failed")
                self._fail(seqs, WorkerError(f"generation failed: {exc}"))

    def _prefill(self, adapter: str | None, seqs: list[Sequence]) -> None:
        """Prefill newly admitted rows and merge those still running into their group."""
        self._activate(adapter)
        state, logits = self.runner.prefill([s.prompt_ids for s in seqs])
        self.stats.prefills += 1
        keep = self._advance(seqs, logits)
        if not keep:
            return
        if len(keep) < len(seqs):
            state, seqs = self.runner.select(state, keep), [seqs[i] for i in keep]
        group = self._groups.get(adapter)
        if group is None:
            self._groups[adapter] = _Group(seqs, state)
        else:
            group.state = self.runner.merge(group.state, state)
            group.seqs += seqs
            self.stats.joins += 1

    def _step(self) -> None:
        if not self._groups:
            return
        adapters = list(self._groups)
        adapter = adapters[self._turn % len(adapters)]
        self._turn += 1
        group = self._groups[adapter]
        try:
            self._activate(adapter)
            logits = self.runner.decode(group.state, [s.output_ids[-1] for s in group.seqs])
        except Exception as exc:
            logger.exception("hf decode step failed")
            del self._groups[adapter]
            self._fail(group.seqs, WorkerError(f"generation failed: {exc}"))
            return
        self.stats.decode_steps += 1
        self.stats.max_batch = max(self.stats.max_batch, len(group.seqs))
        keep = self._advance(group.seqs, logits)
        if not keep:
            del self._groups[adapter]
        elif len(keep) < len(group.seqs):
            group.state = self.runner.select(group.state, keep)
            group.seqs = [group.seqs[i] for i in keep]

    def _advance(self, seqs: list[Sequence], logits: torch.Tensor) -> list[int]:
        """Sample one token per row and deliver it; the indices of rows still running."""
        tokens = next_tokens(logits, [s.params for s in seqs], [s.generator for s in seqs])
        self.stats.generated_tokens += len(tokens)
        keep, out = [], []
        for i, (seq, token) in enumerate(zip(seqs, tokens, strict=True)):
            chunk = None if seq.cancelled else seq.push(token)
            if chunk is not None:
                out.append((seq, chunk))
            if not (seq.cancelled or (chunk is not None and chunk.finish_reason)):
                keep.append(i)
        # Count finished rows out before their clients hear of it, so queue_length is never stale.
        self._active -= len(seqs) - len(keep)
        for seq, chunk in out:
            seq.deliver(chunk)
        return keep

    def _running(self) -> int:
        return sum(len(group.seqs) for group in self._groups.values())

    def _fail(self, seqs: list[Sequence], error: WorkerError) -> None:
        self._active -= len(seqs)
        for seq in seqs:
            seq.deliver(error)

    def _fail_all(self, error: WorkerError) -> None:
        with self._cv:
            waiting, self._waiting = list(self._waiting), deque()
            jobs, self._jobs = self._jobs, []
        running = [seq for group in self._groups.values() for seq in group.seqs]
        self._groups.clear()
        self._active = 0
        for seq in waiting + running:
            seq.deliver(error)
        for _, future in jobs:
            if future.set_running_or_notify_cancel():
                future.set_exception(error)


def _run_job(fn: Callable[[], Any], future: Future) -> None:
    if not future.set_running_or_notify_cancel():
        return
    try:
        future.set_result(fn())
    except WorkerError as exc:
        future.set_exception(exc)
    except Exception as exc:
        logger.exception("hf backend job failed")
        future.set_exception(WorkerError(f"{type(exc).__name__}: {exc}"))
