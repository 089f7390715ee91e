"""Run a model worker: build the specs and the backend, serve the app, stay registered.

:class:`WorkerConfig` is the single source of the worker's options and their help texts (the
``arena worker`` command is generated from it). :func:`run_worker` blocks until SIGINT/SIGTERM:
on a signal the worker first leaves the controller's rotation, then drains and stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import httpx
import uvicorn
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from model_workers.backends import BACKENDS, BackendOptions, ModelSpec, create_backend
from model_workers.registration import ControllerClient, ControllerError
from model_workers.server import create_app

logger = logging.getLogger(__name__)

LogLevel = Literal["debug", "info", "warning", "error"]


class WorkerConfig(BaseModel):
    """Options of one model worker."""

    model_config = ConfigDict(extra="forbid")

    controller: str | None = Field(
        None, description="Base URL of the control plane, e.g. http://127.0.0.1:8000. The worker "
        "looks its checkpoints up there, registers and heartbeats. Leave unset to run "
        "standalone with --model-path.")
    checkpoints: list[str] = Field(
        default_factory=list, description="Names of registered checkpoints to serve (needs "
        "--controller). LoRA checkpoints of one base share one worker.")
    model_path: str | None = Field(
        None, description="Standalone: a checkpoint directory or hub id to serve without the "
        "registry (with --backend openai: the upstream's model name).")
    model_name: str | None = Field(
        None, description="Standalone: the name to serve --model-path under (default: the last "
        "part of the path).")
    template: str | None = Field(
        None, description="Standalone: conversation template of --model-path (default 'hf': "
        "the tokenizer's own chat_template).")
    adapter_path: str | None = Field(
        None, description="Standalone: a PEFT LoRA adapter directory to apply to --model-path.")
    gguf_file: str | None = Field(
        None, description="Standalone: a GGUF file inside --model-path to load (dequantised).")
    backend: str = Field(
        "hf", description=f"Backend: {', '.join(BACKENDS)} (hf: transformers + PEFT; vllm: "
        "vLLM on CUDA with multi-LoRA; openai: any OpenAI-compatible upstream).")
    host: str = Field("127.0.0.1", description="Interface to listen on.")
    port: int = Field(0, ge=0, le=65535, description="Port to listen on; 0 picks a free one.")
    advertise_address: str | None = Field(
        None, description="URL the controller should use to reach this worker (default: "
        "http://HOST:PORT). Set it when listening on 0.0.0.0 or behind a proxy.")
    api_key: str | None = Field(None, description="API key for registering at the controller.")
    device: str = Field("auto", description="hf: auto (CUDA when there is one), cpu, cuda, cuda:1.")
    dtype: str = Field("auto", description="hf/vllm: auto, float32, float16 or bfloat16.")
    max_batch_size: int = Field(16, ge=1, description="hf: most sequences decoded together.")
    batch_wait_ms: float = Field(
        2.0, ge=0, description="hf: how long a new request may wait to join the next step.")
    gpu_memory_utilization: float = Field(
        0.85, gt=0, le=1, description="vllm: fraction of GPU memory for weights and KV cache.")
    upstream_url: str | None = Field(
        None, description="openai: base URL of the upstream, e.g. http://HOST:8000/v1.")
    upstream_api_key: str | None = Field(None, description="openai: API key for the upstream.")
    upstream_model: str | None = Field(
        None, description="openai: model name at the upstream (default: the checkpoint's source).")
    adopt_adapters: bool = Field(
        False, description="hf: also serve LoRA checkpoints of this worker's base as they are "
        "registered (fine-tuned candidates join the arena without a restart).")
    log_level: LogLevel = Field("info", description="Logging level.")

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower(cls, level: object) -> object:
        return level.lower() if isinstance(level, str) else level

    @model_validator(mode="after")
    def _something_to_serve(self) -> WorkerConfig:
        if self.checkpoints and not self.controller:
            raise ValueError("--checkpoints are looked up at the controller: give --controller "
                             "too, or serve a directory standalone with --model-path")
        if not self.checkpoints and not self.model_path:
            raise ValueError("nothing to serve: give --checkpoints (with --controller) or "
                             "--model-path")
        return self

    def backend_options(self) -> BackendOptions:
        return BackendOptions(
            device=self.device, dtype=self.dtype, max_batch_size=self.max_batch_size,
            batch_wait_ms=self.batch_wait_ms, upstream_url=self.upstream_url,
            upstream_api_key=self.upstream_api_key, upstream_model=self.upstream_model,
            gpu_memory_utilization=self.gpu_memory_utilization,
        )

    def standalone_spec(self) -> ModelSpec | None:
        if not self.model_path:
            return None
        return ModelSpec(
            name=self.model_name or Path(self.model_path.rstrip("/")).name,
            source=self.model_path, adapter=self.adapter_path, gguf_file=self.gguf_file,
            template=self.template or "hf",
        )


def run_worker(config: WorkerConfig) -> None:
    """Serve until SIGINT/SIGTERM (blocking)."""
    logging.basicConfig(level=config.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(serve(config))


async def serve(config: WorkerConfig, *, stop: asyncio.Event | None = None) -> None:
    """The worker's life in the running event loop; ends when ``stop`` is set (or a signal)."""
    stop = stop or asyncio.Event()
    controller = (ControllerClient(config.controller, api_key=config.api_key)
                  if config.controller else None)
    async with contextlib.AsyncExitStack() as stack:
        if controller is not None:
            stack.push_async_callback(controller.aclose)
            specs = [await controller.fetch_checkpoint(name) for name in config.checkpoints]
        else:
            specs = []
        if (spec := config.standalone_spec()) is not None:
            specs.append(spec)
        backend = create_backend(config.backend, specs, config.backend_options())
        app = create_app(backend, specs, backend_name=config.backend)
        sock = _bind(config.host, config.port)  # bound first: the address is registered
        address = config.advertise_address or _address(config.host, sock.getsockname()[1])
        server = _Server(uvicorn.Config(app, log_level=config.log_level,
                                        access_log=config.log_level == "debug"))
        serving = asyncio.create_task(server.serve(sockets=[sock]))
        stack.enter_context(_signals_set(stop, server))
        while not server.started:
            if serving.done():
                serving.result()  # startup failed: raise what uvicorn raised
                raise RuntimeError("the worker's server stopped during startup")
            await asyncio.sleep(0.05)
        names = [s.name for s in specs]
        logger.info("worker serving %s with the %s backend at %s", ", ".join(names),
                    config.backend, address)
        heartbeats = None
        try:
            if controller is not None:
                registration = await controller.register(
                    address=address, backend=config.backend, models=names,
                    queue_length=backend.queue_length())
                logger.info("registered at %s as worker %s", controller.url,
                            registration.worker_id)
                heartbeats = asyncio.create_task(controller.stay_registered(
                    registration, address=address, backend=config.backend, models=names,
                    queue_length=backend.queue_length))
                if config.adopt_adapters:  # names grows in place: the heartbeat reports it
                    adopting = asyncio.create_task(adopt_adapters(
                        controller, app.state.worker, names,
                        interval_s=registration.heartbeat_interval_s))
                    stack.callback(adopting.cancel)
            stopping = asyncio.create_task(stop.wait())
            await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
        finally:
            if heartbeats is not None:  # deregister before draining: no new requests come in
                heartbeats.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await heartbeats
            server.should_exit = True
            await serving


async def adopt_adapters(controller: ControllerClient, worker: Any, names: list[str], *,
                         interval_s: float) -> None:
    """Poll the registry; serve each new LoRA checkpoint whose base is this worker's base."""
    base = next((s for s in worker.specs.values() if s.adapter is None), None)
    if base is None:
        base = next(iter(worker.specs.values()))
    refused: set[str] = set()
    while True:
        await asyncio.sleep(interval_s)
        try:
            entries = await controller.list_checkpoints()
        except (httpx.HTTPError, ControllerError) as exc:
            logger.warning("adopting adapters: %s", exc)
            continue
        for entry in entries:
            name = str(entry.get("name"))
            if (not entry.get("adapter") or name in worker.specs or name in refused
                    or entry.get("materialized_path") or entry.get("gguf_file")
                    or entry.get("source") != base.source
                    or entry.get("revision") != base.revision):
                continue
            try:
                spec = await controller.fetch_checkpoint(name)
                await worker.adopt(spec)
            except Exception as exc:  # one bad adapter must not stop the worker or the loop
                logger.warning("cannot serve %s here: %s", name, exc)
                refused.add(name)
                continue
            names.append(name)
            logger.info("now serving %s (adapter %s)", name, spec.adapter)


class _Server(uvicorn.Server):
    """Uvicorn whose signals :func:`serve` handles (uvicorn's own re-raise them after exit)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@contextlib.contextmanager
def _signals_set(stop: asyncio.Event, server: uvicorn.Server) -> Iterator[None]:
    """SIGINT/SIGTERM set ``stop``; a second one makes uvicorn stop without draining."""
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        if stop.is_set():
            server.force_exit = True
        stop.set()

    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, on_signal)
            installed.append(sig)
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
            pass
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted connections inherit it. Without it a small response waits for the client's
    # delayed ACK (~40 ms a request); asyncio sets it only on sockets it binds itself.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def _address(host: str, port: int) -> str:
    if host in ("0.0.0.0", "::", ""):
        host = socket.gethostname()
        logger.warning("listening on all interfaces; advertising http://%s:%d (set "
                       "--advertise-address if the controller reaches this worker otherwise)",
                       host, port)
    elif ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"
