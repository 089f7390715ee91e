"""``/api/checkpoints``: the registry over HTTP. Reads are open; writes need a registrar key."""

from __future__ import annotations

from typing import cast

from fastapi import APIRouter, BackgroundTasks, Depends, Response
from sqlalchemy.engine import Engine
from sqlmodel import Session

from arena import evaluation, registry
from arena.api.deps import get_session, get_settings, require
from arena.models import CheckpointCreate, CheckpointPublic, CheckpointUpdate
from arena.settings import Settings

router = APIRouter(prefix="/api/checkpoints", tags=["checkpoints"])


@router.get("", response_model=list[CheckpointPublic])
def list_checkpoints(session: Session = Depends(get_session, scope="function")) -> list[CheckpointPublic]:
    return [registry.to_public(session, r) for r in registry.list_checkpoints(session)]


@router.post(
    "",
    response_model=CheckpointPublic,
    status_code=201,
    dependencies=[Depends(require("register"))],
)
def register_checkpoint(
    data: CheckpointCreate,
    background: BackgroundTasks,
    session: Session = Depends(get_session, scope="function"),
    settings: Settings = Depends(get_settings),
) -> CheckpointPublic:
    """Validate and store; then (after the commit) queue the evaluation policy's runs."""
    row = registry.register_checkpoint(
        session, data=data, materialize_dir=settings.data_dir / "materialized"
    )
    if settings.eval_suites or settings.eval_judge_reference:
        engine = cast(Engine, session.get_bind())
        background.add_task(evaluation.queue_evaluations, engine, settings, row.name)
    return registry.to_public(session, row)


@router.get("/{name:path}", response_model=CheckpointPublic)
def show_checkpoint(name: str, session: Session = Depends(get_session, scope="function")) -> CheckpointPublic:
    return registry.to_public(session, registry.get_checkpoint(session, name=name))


@router.patch(
    "/{name:path}", response_model=CheckpointPublic, dependencies=[Depends(require("register"))]
)
def update_checkpoint(
    name: str, data: CheckpointUpdate, session: Session = Depends(get_session, scope="function")
) -> CheckpointPublic:
    return registry.to_public(session, registry.update_checkpoint(session, name=name, data=data))


@router.delete("/{name:path}", status_code=204, dependencies=[Depends(require("register"))])
def remove_checkpoint(name: str, session: Session = Depends(get_session, scope="function")) -> Response:
    registry.delete_checkpoint(session, name=name)
    return Response(status_code=204)
