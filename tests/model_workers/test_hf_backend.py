"""The ``hf`` backend on tiny random checkpoints of the real architectures.

Greedy decoding is deterministic, so "batched" must mean "the same text as alone": every test
compares a request run by itself with the same request run among others (started together, or
joining a batch that is already decoding).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

from model_workers.backends import (
    BackendOptions,
    GenerationChunk,
    GenerationRequest,
    ModelSpec,
    PromptLogprobsRequest,
    SamplingParams,
    ScoreRequest,
    create_backend,
)
from model_workers.backends.hf_batching import SchedulerStats
from model_workers.backends.hf_sampling import Detokenizer, StopStrings
from model_workers.errors import (
    BackendUnavailable,
    BadRequest,
    ContextLengthExceeded,
    ModelNotFound,
    WorkerError,
)
from model_workers.localmodels import build_lora_adapter, build_tiny_checkpoint, train_tokenizer

CAUSAL = ("llama", "gpt_neox", "bloom", "opt", "gptj", "codegen")
PROMPTS = [
    "Question: What is the capital of France?\nA. Paris\nAnswer:",
    "The alpaca",
    "user\nHello!\nassistant\n",
    "中国的首都是北京。",
    "12 + 8 = 20, 12 * 8 =",
    "The teacher will write a short story. The student",
    "谢谢",
    "I choose B, not",
]
GREEDY = {"temperature": 0.0, "max_tokens": 24}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf-backend")
    tokenizer = train_tokenizer(root / "tokenizer")
    paths = {
        a: build_tiny_checkpoint(a, root / a, tokenizer_dir=tokenizer) for a in (*CAUSAL, "t5")
    }
    untie_t5(paths["t5"])
    paths["lora-1"] = build_lora_adapter(paths["llama"], root / "lora-1", seed=1)
    paths["lora-2"] = build_lora_adapter(paths["llama"], root / "lora-2", seed=2)
    return paths


def untie_t5(path: Path) -> None:
    """Give the tiny T5 its own random output layer. With the input embeddings tied to it, a
    random T5 predicts its decoder input again (PAD after PAD), so every output would be ""."""
    model = AutoModelForSeq2SeqLM.from_pretrained(path)
    model.config.tie_word_embeddings = False
    model.lm_head = torch.nn.Linear(model.config.d_model, model.config.vocab_size, bias=False)
    generator = torch.Generator().manual_seed(0)
    model.lm_head.weight.data = torch.randn(model.lm_head.weight.shape, generator=generator)
    model.save_pretrained(path)


@pytest.fixture(scope="module")
def backend(models):
    """``backend(*specs, **options)``: a started backend, cached and closed with the module."""
    started: dict[tuple, object] = {}

    def get(*specs: ModelSpec, max_batch_size: int = 8):
        key = (tuple((s.name, s.source, s.adapter) for s in specs), max_batch_size)
        if key not in started:
            created = create_backend(
                "hf", list(specs),
                # generous: on a loaded machine 8 requests sent together still share a wave
                BackendOptions(max_batch_size=max_batch_size, batch_wait_ms=50.0),
            )
            asyncio.run(created.start())
            started[key] = created
        return started[key]

    yield get
    for created in started.values():
        asyncio.run(created.close())


def spec(
    models, arch: str = "llama", name: str | None = None, adapter: str | None = None
) -> ModelSpec:
    return ModelSpec(
        name=name or arch,
        source=str(models[arch]),
        adapter=str(models[adapter]) if adapter else None,
    )


async def complete(b, model: str, prompt, **params) -> tuple[str, list[GenerationChunk]]:
    request = GenerationRequest(model=model, prompt=prompt, params=SamplingParams(**params))
    chunks = [c async for c in b.generate(request)]
    return "".join(c.text for c in chunks), chunks


def alone(b, model: str, prompts: list, **params) -> list[tuple[str, int]]:
    async def run():
        return [await complete(b, model, p, **params) for p in prompts]

    return [(text, chunks[-1].completion_tokens) for text, chunks in asyncio.run(run())]


def together(b, model: str, prompts: list, **params) -> list[tuple[str, int]]:
    async def run():
        return await asyncio.gather(*(complete(b, model, p, **params) for p in prompts))

    return [(text, chunks[-1].completion_tokens) for text, chunks in asyncio.run(run())]


@pytest.mark.parametrize("arch", [*CAUSAL, "t5"])
def test_greedy_output_is_the_same_alone_and_in_a_batch(models, backend, arch):
    b = backend(spec(models, arch))
    expected = alone(b, arch, PROMPTS, **GREEDY)
    b.scheduler.stats = stats = SchedulerStats()
    assert together(b, arch, PROMPTS, **GREEDY) == expected
    assert sum(bool(text) for text, _ in expected) > len(PROMPTS) / 2  # not only special tokens
    assert stats.max_batch >= len(PROMPTS) - 1  # (a request may end with its first token)
    # Eight requests of up to 24 tokens each took about 24 steps, not 8 * 24.
    assert stats.decode_steps <= max(n for _, n in expected)
    assert b.queue_length() == 0


@pytest.mark.parametrize("arch", [*CAUSAL, "t5"])
def test_requests_joining_a_running_batch_get_the_same_output(models, backend, arch):
    """Causal LMs merge newcomers into the running batch; T5 runs them in the next wave."""
    b = backend(spec(models, arch))
    long_params = {"temperature": 0.0, "max_tokens": 60}
    # The request that runs first is one whose output is long (no early EOS).
    lengths = [n for _, n in alone(b, arch, PROMPTS, **long_params)]
    first = PROMPTS[lengths.index(max(lengths))]
    rest = [p for p in PROMPTS if p != first]
    expected_long = alone(b, arch, [first], **long_params)[0]
    expected = alone(b, arch, rest, **GREEDY)
    assert expected_long[1] >= 30
    b.scheduler.stats = stats = SchedulerStats()

    async def run():
        request = GenerationRequest(arch, SamplingParams(**long_params), prompt=first)
        stream, seen = b.generate(request), []
        async for chunk in stream:  # the long request is decoding when the others arrive
            seen.append(chunk)
            if chunk.completion_tokens >= 2:
                break
        joined = asyncio.gather(*(complete(b, arch, p, **GREEDY) for p in rest))
        seen += [c async for c in stream]
        return seen, await joined

    long_chunks, others = asyncio.run(run())
    text = "".join(c.text for c in long_chunks)
    assert (text, long_chunks[-1].completion_tokens) == expected_long
    assert [(t, c[-1].completion_tokens) for t, c in others] == expected
    assert stats.prefills >= 2
    if arch == "t5":
        assert stats.joins == 0
    else:
        assert stats.joins >= 1 and stats.max_batch >= 2


def test_matches_transformers_generate(models, backend):
    b = backend(spec(models))
    tokenizer = AutoTokenizer.from_pretrained(models["llama"])
    model = AutoModelForCausalLM.from_pretrained(models["llama"])
    ids = tokenizer(PROMPTS[0], return_tensors="pt")
    out = model.generate(**ids, do_sample=False, max_new_tokens=GREEDY["max_tokens"])
    reference = tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
    assert alone(b, "llama", [PROMPTS[0]], **GREEDY)[0][0] == reference


def test_seeded_sampling_is_reproducible_in_any_batch(models, backend):
    b = backend(spec(models))
    params = {"temperature": 1.0, "top_p": 0.9, "max_tokens": 16}
    first = alone(b, "llama", [PROMPTS[1]], seed=7, **params)[0]
    others = [(PROMPTS[1], 7), (PROMPTS[2], 1), (PROMPTS[1], 8), (PROMPTS[3], None)]

    async def run():
        jobs = (complete(b, "llama", p, seed=s, **params) for p, s in others)
        return await asyncio.gather(*jobs)

    results = [(text, chunks[-1].completion_tokens) for text, chunks in asyncio.run(run())]
    assert results[0] == first
    assert results[2] != first  # another seed, another sample


def test_stop_string_cuts_the_text_before_it(models, backend):
    b = backend(spec(models))
    full, _ = asyncio.run(complete(b, "llama", PROMPTS[1], temperature=0.0, max_tokens=30))
    stop = full[10:13]
    text, chunks = asyncio.run(
        complete(b, "llama", PROMPTS[1], temperature=0.0, max_tokens=30, stop=["zzz-never", stop])
    )
    assert text == full[: full.index(stop)]
    assert chunks[-1].finish_reason == "stop"
    assert all(stop not in c.text for c in chunks)


def test_stop_strings_hold_back_a_possible_start():
    stops = StopStrings(["</end>", "##"])
    assert stops.feed("Hello </") == ("Hello ", False)  # "</" may begin "</end>"
    assert stops.feed("b> and #") == ("</b> and ", False)
    assert stops.feed("# more") == ("", True)
    tail = StopStrings(["STOP"])
    assert tail.feed("abcST") == ("abc", False)
    assert tail.flush() == "ST"  # the output ended for another reason: nothing was a stop


def test_detokenizer_never_splits_a_character(models):
    tokenizer = AutoTokenizer.from_pretrained(models["llama"])
    text = " 羊驼 ☃ alpaca 🦙!"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    detokenizer = Detokenizer(lambda t: tokenizer.decode(t, skip_special_tokens=True))
    pieces = [detokenizer.push(i) for i in ids]
    assert "".join(pieces) == text
    assert not any("\ufffd" in p for p in pieces)


def test_max_tokens_finishes_with_length(models, backend):
    b = backend(spec(models))
    _, chunks = asyncio.run(complete(b, "llama", PROMPTS[4], temperature=0.0, max_tokens=7))
    assert chunks[-1].finish_reason == "length"
    assert chunks[-1].completion_tokens == 7
    assert [c.completion_tokens for c in chunks] == sorted(c.completion_tokens for c in chunks)
    assert all(c.prompt_tokens == chunks[0].prompt_tokens for c in chunks)


def test_stop_token_ids_finish_with_stop_and_leave_their_text_out(models, backend):
    b = backend(spec(models))
    tokenizer = AutoTokenizer.from_pretrained(models["llama"])
    model = AutoModelForCausalLM.from_pretrained(models["llama"])
    prompt = tokenizer(PROMPTS[2], return_tensors="pt")["input_ids"]
    ids = model.generate(prompt, do_sample=False, max_new_tokens=12)[0, prompt.shape[1] :].tolist()
    cut = next(i for i in range(2, len(ids)) if ids[i] not in ids[:i])
    text, chunks = asyncio.run(
        complete(b, "llama", PROMPTS[2], temperature=0.0, max_tokens=12, stop_token_ids=[ids[cut]])
    )
    assert text == tokenizer.decode(ids[:cut], skip_special_tokens=True)
    assert (chunks[-1].finish_reason, chunks[-1].completion_tokens) == ("stop", cut + 1)


def test_context_length_is_checked_before_queueing(models, backend):
    b = backend(spec(models))
    assert b.context_length("llama") == 512
    prompt_tokens = b.count_tokens("llama", PROMPTS[0])
    with pytest.raises(ContextLengthExceeded, match="maximum context length is 512 tokens") as info:
        b.generate(GenerationRequest("llama", SamplingParams(max_tokens=500), prompt=PROMPTS[0]))
    assert f"{prompt_tokens} in the prompt, 500 for the completion" in info.value.message
    assert b.queue_length() == 0


def test_several_lora_adapters_share_one_base(models, backend):
    multi = backend(
        spec(models, name="base"),
        spec(models, name="one", adapter="lora-1"),
        spec(models, name="two", adapter="lora-2"),
    )
    singles = {
        "base": backend(spec(models, name="base")),
        "one": backend(spec(models, name="one", adapter="lora-1")),
        "two": backend(spec(models, name="two", adapter="lora-2")),
    }
    prompts = PROMPTS[:3]
    expected = {name: alone(b, name, prompts, **GREEDY) for name, b in singles.items()}
    assert len({tuple(v) for v in expected.values()}) == 3  # the adapters change the output

    async def mixed():
        jobs = [complete(multi, name, p, **GREEDY) for p in prompts for name in expected]
        return await asyncio.gather(*jobs)

    got = [(text, chunks[-1].completion_tokens) for text, chunks in asyncio.run(mixed())]
    assert got == [expected[name][i] for i in range(len(prompts)) for name in expected]
    assert multi.model_names() == ["base", "one", "two"]


def test_specs_with_different_bases_are_refused(models):
    with pytest.raises(BadRequest, match="'a' and 'b' have different bases"):
        create_backend(
            "hf", [spec(models, name="a"), spec(models, "opt", name="b")], BackendOptions()
        )


def test_score_matches_a_full_forward_pass(models, backend):
    b = backend(spec(models))
    tokenizer = AutoTokenizer.from_pretrained(models["llama"])
    model = AutoModelForCausalLM.from_pretrained(models["llama"])
    prompts = [PROMPTS[0], "Question: Which number is the largest?\nAnswer:", "答案："]
    candidates = [" A", " B", "C", " Paris"]
    results = asyncio.run(b.score([ScoreRequest("llama", p, candidates) for p in prompts]))
    for prompt, result in zip(prompts, results, strict=True):
        ids = tokenizer(prompt)["input_ids"]
        expected_tokens = [tokenizer(prompt + c)["input_ids"][len(ids)] for c in candidates]
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0, -1]
        reference = torch.log_softmax(logits, -1)[expected_tokens]
        assert result.token_ids == expected_tokens
        assert result.prompt_tokens == len(ids)
        assert torch.allclose(torch.tensor(result.logprobs), reference, atol=1e-4)


def test_score_works_for_seq2seq(models, backend):
    b = backend(spec(models, "t5"))
    (result,) = asyncio.run(b.score([ScoreRequest("t5", PROMPTS[0], [" A", " B"])]))
    assert len(result.logprobs) == 2 and all(lp < 0 for lp in result.logprobs)


def test_prompt_logprobs_match_a_full_forward_pass(models, backend):
    b = backend(spec(models))
    tokenizer = AutoTokenizer.from_pretrained(models["llama"])
    model = AutoModelForCausalLM.from_pretrained(models["llama"])
    prompt = "The alpaca likes 羊驼。 Answer: B"
    ids = tokenizer(prompt)["input_ids"]
    assert ids[0] == tokenizer.bos_token_id
    with torch.no_grad():
        logprobs = torch.log_softmax(model(torch.tensor([ids])).logits[0], -1)
    expected = [float(logprobs[i - 1, ids[i]]) for i in range(1, len(ids))]
    requests = [
        PromptLogprobsRequest("llama", prompt, top_logprobs=2),
        PromptLogprobsRequest("llama", ids[1:]),  # token ids: scored as given, no BOS
        PromptLogprobsRequest("llama", "A"),  # a shorter prompt in the same (padded) batch
    ]
    text_result, ids_result, _ = asyncio.run(b.prompt_logprobs(requests))
    # The BOS is context, not a prompt token: the first real token is scored given it.
    assert "".join(text_result.tokens) == prompt
    assert text_result.text_offset[-1] == len(prompt) - len(text_result.tokens[-1])
    assert torch.allclose(
        torch.tensor(text_result.token_logprobs), torch.tensor(expected), atol=1e-4
    )
    assert all(len(top) >= 2 for top in text_result.top_logprobs)
    assert text_result.top_logprobs[1][text_result.tokens[1]] == text_result.token_logprobs[1]
    assert ids_result.token_logprobs[0] is None and ids_result.top_logprobs == [None] * (
        len(ids) - 1
    )
    assert len(ids_result.tokens) == len(ids) - 1


def test_unknown_model_is_not_found(models, backend):
    b = backend(spec(models))
    with pytest.raises(ModelNotFound, match="'nope' is not served here"):
        b.generate(GenerationRequest("nope", SamplingParams(), prompt="hi"))
    with pytest.raises(ModelNotFound):
        asyncio.run(b.score([ScoreRequest("nope", "hi", ["a"])]))
    with pytest.raises(ModelNotFound):
        asyncio.run(b.prompt_logprobs([PromptLogprobsRequest("nope", "hi")]))


def test_a_failing_step_reaches_the_client_and_the_backend_recovers(models, backend, monkeypatch):
    b = backend(spec(models))
    runner = b.scheduler.runner

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(runner, "decode", broken)
    with pytest.raises(WorkerError, match="boom"):
        asyncio.run(complete(b, "llama", PROMPTS[0], **GREEDY))
    monkeypatch.undo()
    assert alone(b, "llama", [PROMPTS[0]], **GREEDY)[0][1] == GREEDY["max_tokens"]
    assert b.queue_length() == 0


def test_a_client_that_stops_listening_leaves_the_queue(models, backend):
    b = backend(spec(models))

    async def run():
        request = GenerationRequest(
            "llama", SamplingParams(temperature=0.0, max_tokens=200), prompt="Hi"
        )
        stream = b.generate(request)
        await anext(stream)
        await stream.aclose()
        for _ in range(200):
            if b.queue_length() == 0:
                return True
            await asyncio.sleep(0.01)
        return False

    assert asyncio.run(run())


def test_close_fails_new_requests(models):
    b = create_backend("hf", [spec(models)], BackendOptions())
    asyncio.run(b.start())
    asyncio.run(b.close())
    with pytest.raises(BackendUnavailable):
        asyncio.run(complete(b, "llama", "Hi", max_tokens=2))
