"""FastChat's gateway overhead, measured the way `bench_gateway.py` measures ours.

Starts FastChat's `controller`, `model_worker` (CPU, a tiny Llama served as "tiny-llama") and
`openai_api_server` from FastChat's own virtualenv (set up as in scripts/README.md), then
times the same chat request, interleaving the two paths so that drift hits both alike:
  * direct: the worker endpoints the API server itself calls, `/worker_generate` (non-streamed)
    and `/worker_generate_stream` (`\\0`-delimited JSON chunks), with the generation parameters
    rendered by the API server's own `get_gen_params` (same prompt, stops, max_new_tokens);
  * gateway: `/v1/chat/completions` on the API server.
Latency is p50/p95 of the whole request (non-streamed) or of the first non-empty text
(streamed), at concurrency 1 and 16.

    .venv/bin/python scripts/fastchat_reference.py [MODEL_DIR] \\
        [--fastchat-python /work/fastchat-venv/bin/python] [--requests 400] [--max-tokens 4]

MODEL_DIR is a tiny Llama saved by transformers 5 (built when omitted); a copy converted to
formats that FastChat's transformers 4.38 / tokenizers 0.15 can read is what FastChat loads.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
from bench_gateway import SETTINGS, Figures, free_port, one, pct, setting_label

DEFAULT_PYTHON = "/work/fastchat-venv/bin/python"
MODEL_NAME = "tiny-llama"
# FastChat picks a template from the model path; a plain "tiny-llama" gets "one_shot" (a
# ~1,700-token few-shot prompt, past the tiny model's 512 positions). "llama-2" with no system
# message renders the benchmark's message to 36 tokens, about as many as our template does.
CONV_TEMPLATE = "llama-2"

# Runs inside FastChat's virtualenv: the parameters its API server sends the worker for a
# chat request (create_chat_completion: get_gen_params, then check_length's clamp).
RENDER = """
import asyncio, json, sys
from fastchat.protocol.openai_api_protocol import ChatCompletionRequest
from fastchat.serve.openai_api_server import get_gen_params
body, worker, out = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
request = ChatCompletionRequest(**body)
params = asyncio.run(get_gen_params(
    request.model, worker, request.messages, temperature=request.temperature,
    top_p=request.top_p, top_k=request.top_k, presence_penalty=request.presence_penalty,
    frequency_penalty=request.frequency_penalty, max_tokens=request.max_tokens, echo=False,
    stop=request.stop))
with open(out, "w") as f:
    json.dump(params, f)
"""

Send = Callable[[httpx.AsyncClient], Awaitable[float]]


def fastchat_copy(model: Path, out: Path) -> Path:
    """Copy a transformers-5 tiny Llama into ``out`` in formats transformers 4.38 reads.

    tokenizers 0.15 wants BPE merges as "a b" strings (not pairs) and knows no
    `ignore_merges`; transformers 4.38 knows no `TokenizersBackend` class and reads
    `rope_theta` at the top level of the config. Weights are copied unchanged.
    """
    shutil.copytree(model, out)
    tok = json.loads((out / "tokenizer.json").read_text())
    merges = tok["model"].get("merges", [])
    if any(" " in part for pair in merges if isinstance(pair, list) for part in pair):
        raise ValueError("merges with spaces cannot be written in the old format")
    tok["model"]["merges"] = [" ".join(m) if isinstance(m, list) else m for m in merges]
    tok["model"].pop("ignore_merges", None)
    (out / "tokenizer.json").write_text(json.dumps(tok))
    tok_config = json.loads((out / "tokenizer_config.json").read_text())
    tok_config["tokenizer_class"] = "PreTrainedTokenizerFast"
    tok_config.pop("backend", None)
    (out / "tokenizer_config.json").write_text(json.dumps(tok_config))
    config = json.loads((out / "config.json").read_text())
    rope = config.get("rope_parameters") or {}
    config.setdefault("rope_theta", rope.get("rope_theta", 10000.0))
    (out / "config.json").write_text(json.dumps(config))
    return out


def start_fastchat(python: str, model: Path, root: Path) -> tuple[list[subprocess.Popen], str, str]:
    """Start controller, worker and API server; return (processes, worker URL, API URL)."""
    env = {**os.environ, "LOGDIR": str(root / "logs"), "OMP_NUM_THREADS": "1"}
    ports = {name: free_port() for name in ("controller", "worker", "api")}
    url = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    commands = {
        "controller": ["fastchat.serve.controller"],
        "worker": ["fastchat.serve.model_worker", "--worker-address", url["worker"],
                   "--controller-address", url["controller"], "--model-path", str(model),
                   "--model-names", MODEL_NAME, "--conv-template", CONV_TEMPLATE,
                   "--device", "cpu"],
        "api": ["fastchat.serve.openai_api_server", "--controller-address", url["controller"]],
    }
    (root / "logs").mkdir(parents=True, exist_ok=True)
    procs: list[subprocess.Popen] = []
    try:
        for name, command in commands.items():
            with open(root / "logs" / f"{name}.out", "wb") as log:
                procs.append(subprocess.Popen(
                    [python, "-m", *command, "--host", "127.0.0.1", "--port", str(ports[name])],
                    env=env, stdout=log, stderr=subprocess.STDOUT))
            if name == "controller":  # the worker registers once, at start
                wait_until(lambda: httpx.get(url["controller"] + "/test_connection"), procs)
        wait_until(lambda: MODEL_NAME in str(httpx.get(url["api"] + "/v1/models").json()),
                   procs, timeout_s=300)
    except BaseException:
        stop(procs)
        raise
    return procs, url["worker"], url["api"]


def wait_until(ready: Callable[[], object], procs: list[subprocess.Popen],
               timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in procs):
            raise RuntimeError("a FastChat process exited; see its log")
        try:
            if ready():
                return
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.2)
    raise TimeoutError("FastChat did not come up")


def stop(procs: list[subprocess.Popen]) -> None:
    for p in reversed(procs):
        p.terminate()
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            p.kill()


def render_params(python: str, worker: str, body: dict, root: Path) -> dict:
    """The `/worker_generate*` payload FastChat's API server builds for ``body``."""
    out = root / "params.json"
    subprocess.run([python, "-c", RENDER, json.dumps(body), worker, str(out)], check=True,
                   env={**os.environ, "LOGDIR": str(root / "logs")}, cwd=root)
    params = json.loads(out.read_text())
    context = httpx.post(worker + "/model_details", json={"model": MODEL_NAME}).json()
    count = httpx.post(worker + "/count_token",
                       json={"model": MODEL_NAME, "prompt": params["prompt"]}).json()
    params["max_new_tokens"] = min(body["max_tokens"], context["context_length"] - count["count"])
    if params["max_new_tokens"] < body["max_tokens"]:
        raise ValueError(f"prompt of {count['count']} tokens leaves no room for max_tokens")
    return params


async def worker_one(client: httpx.AsyncClient, url: str, params: dict, stream: bool) -> float:
    """One request to a FastChat worker: total latency, or time to the first non-empty text."""
    start = time.perf_counter()
    if not stream:
        response = await client.post(url + "/worker_generate", json=params)
        response.raise_for_status()
        if response.json()["error_code"] != 0:
            raise RuntimeError(response.text)
        return time.perf_counter() - start
    first, buffer = None, b""
    async with client.stream("POST", url + "/worker_generate_stream", json=params) as response:
        response.raise_for_status()
        async for raw in response.aiter_raw():
            buffer += raw
            *chunks, buffer = buffer.split(b"\0")
            for chunk in filter(None, chunks):
                data = json.loads(chunk)
                if data["error_code"] != 0:
                    raise RuntimeError(data["text"])
                if first is None and data["text"]:
                    first = time.perf_counter() - start
    # read to the end (as bench_gateway.one does), so no abandoned work runs into the next batch
    if first is None:
        raise RuntimeError("stream ended without text")
    return first


async def measure_paths(paths: dict[str, Send], *, concurrency: int,
                        requests: int) -> dict[str, list[float]]:
    """bench_gateway.measure's schedule: 5 warm-ups per path, then alternating batches."""
    times: dict[str, list[float]] = {name: [] for name in paths}
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        for send in paths.values():
            for _ in range(5):
                await send(client)
        for _ in range(requests // concurrency):
            for name, send in paths.items():
                times[name].extend(await asyncio.gather(
                    *(send(client) for _ in range(concurrency))))
    return times


def run_fastchat(python: str, model: Path, *, requests: int, max_tokens: int,
                 body: dict) -> Figures:
    """Measure FastChat direct vs gateway for every setting in `SETTINGS`."""
    root = Path(tempfile.mkdtemp(prefix="bench-fastchat-"))
    procs, worker, api = start_fastchat(python, fastchat_copy(model, root / MODEL_NAME), root)
    try:
        body = {**body, "model": MODEL_NAME, "max_tokens": max_tokens}
        params = render_params(python, worker, body, root)
        figures: Figures = {}
        for stream, concurrency in SETTINGS:
            paths: dict[str, Send] = {
                "direct": lambda c, s=stream: worker_one(c, worker, params, s),
                "gateway": lambda c, s=stream: one(c, api + "/v1/chat/completions", body, s),
            }
            figures[stream, concurrency] = asyncio.run(
                measure_paths(paths, concurrency=concurrency, requests=requests))
        return figures
    finally:
        stop(procs)


def main() -> None:
    from bench_gateway import BODY

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", type=Path, help="tiny Llama dir (built if omitted)")
    parser.add_argument("--fastchat-python", default=DEFAULT_PYTHON)
    parser.add_argument("--requests", type=int, default=400, help="per path and setting")
    parser.add_argument("--max-tokens", type=int, default=4)
    args = parser.parse_args()
    model = args.model
    if model is None:
        from model_workers.localmodels import build_tiny_checkpoint

        model = build_tiny_checkpoint("llama", Path(tempfile.mkdtemp()) / "tiny-llama")
    figures = run_fastchat(args.fastchat_python, model, requests=args.requests,
                           max_tokens=args.max_tokens, body=BODY)
    print(f"FastChat, {args.requests} requests per path and setting, "
          f"max_tokens {args.max_tokens}, {sys.platform}; ms")
    print(f"{'setting':<28}{'direct p50':>12}{'gateway p50':>13}{'added p50':>11}"
          f"{'direct p95':>12}{'gateway p95':>13}{'added p95':>11}")
    for setting, t in figures.items():
        d50, g50 = pct(t["direct"], 50), pct(t["gateway"], 50)
        d95, g95 = pct(t["direct"], 95), pct(t["gateway"], 95)
        print(f"{setting_label(*setting):<28}{d50:>12.2f}{g50:>13.2f}{g50 - d50:>11.2f}"
              f"{d95:>12.2f}{g95:>13.2f}{g95 - d95:>11.2f}")


if __name__ == "__main__":
    main()
