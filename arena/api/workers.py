"""``/api/workers``: model workers register, heartbeat and leave; anyone may list them."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from sqlmodel import Session

from arena import controller
from arena.api.deps import get_session, get_settings, require
from arena.models import WorkerHeartbeat, WorkerPublic, WorkerRegister, WorkerRegistered
from arena.settings import Settings

router = APIRouter(prefix="/api/workers", tags=["workers"])


@router.get("", response_model=list[WorkerPublic])
def list_workers(
    session: Session = Depends(get_session, scope="function"), settings: Settings = Depends(get_settings)
) -> list[WorkerPublic]:
    return controller.list_workers(session, expiry_s=settings.worker_expiry_s)


@router.post("", response_model=WorkerRegistered, dependencies=[Depends(require("worker"))])
def register_worker(
    data: WorkerRegister,
    request: Request,
    session: Session = Depends(get_session, scope="function"),
    settings: Settings = Depends(get_settings),
) -> WorkerRegistered:
    row = controller.register_worker(session, data=data, expiry_s=settings.worker_expiry_s)
    request.app.state.directory.invalidate()
    return WorkerRegistered(
        id=row.id,
        heartbeat_interval_s=settings.heartbeat_interval_s,
        expiry_s=settings.worker_expiry_s,
    )


@router.post("/{worker_id}/heartbeat")
def heartbeat(
    worker_id: str, data: WorkerHeartbeat, session: Session = Depends(get_session, scope="function")
) -> dict:
    # The worker id (a random 128-bit value handed out at registration) is the credential here,
    # so that heartbeats stay cheap; registration itself needs a key.
    controller.heartbeat(session, worker_id=worker_id, data=data)
    return {"ok": True}


@router.delete("/{worker_id}", status_code=204)
def deregister(worker_id: str, request: Request, session: Session = Depends(get_session, scope="function")) -> Response:
    controller.deregister_worker(session, worker_id=worker_id)
    request.app.state.directory.invalidate()
    return Response(status_code=204)
