"""``/v1``: the OpenAI-compatible gateway, routed by model name to the workers."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from fastapi.responses import Response

router = APIRouter(tags=["openai"])


@router.get("/v1/models")
def list_models(request: Request) -> dict:
    served = request.app.state.directory.served_models()
    created = int(time.time())
    return {
        "object": "list",
        "data": [
            {"id": name, "object": "model", "created": created, "owned_by": "alpaca-arena",
             "workers": count}
            for name, count in sorted(served.items())
        ],
    }


@router.post("/v1/chat/completions")
async def chat_completions(request: Request) -> Response:
    return await request.app.state.gateway.forward(request, worker_path="/v1/chat/completions")


@router.post("/v1/completions")
async def completions(request: Request) -> Response:
    return await request.app.state.gateway.forward(request, worker_path="/v1/completions")


@router.post("/api/score")
async def score(request: Request) -> Response:
    """Next-token candidate log-probabilities (``/worker/score`` on the model's worker)."""
    return await request.app.state.gateway.forward(request, worker_path="/worker/score")
