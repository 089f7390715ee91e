"""The checkpoint registry: validate, materialise deltas, store, list, update, remove.

A refused registration stores nothing: every check runs before the row is written, and a delta
materialised for a registration that then fails is removed again.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from arena.errors import Conflict, NotFound, ValidationFailed
from arena.models import (
    Checkpoint,
    CheckpointCreate,
    CheckpointPublic,
    CheckpointUpdate,
    utcnow,
)
from arena.validation import check_adapter, check_template, inspect_source, looks_local

logger = logging.getLogger(__name__)


def to_public(session: Session, row: Checkpoint) -> CheckpointPublic:
    parent = session.get(Checkpoint, row.parent_id) if row.parent_id else None
    return CheckpointPublic.model_validate(
        {**row.model_dump(), "parent": parent.name if parent else None}
    )


def get_checkpoint(session: Session, *, name: str) -> Checkpoint:
    row = session.exec(select(Checkpoint).where(Checkpoint.name == name)).first()
    if row is None:
        raise NotFound(f"checkpoint {name!r} is not registered", param="name")
    return row


def list_checkpoints(session: Session) -> list[Checkpoint]:
    return list(session.exec(select(Checkpoint).order_by(Checkpoint.id)).all())  # type: ignore[arg-type]


def register_checkpoint(
    session: Session, *, data: CheckpointCreate, materialize_dir: Path
) -> Checkpoint:
    """Validate ``data`` completely, materialise a delta if asked, then store the checkpoint."""
    if session.exec(select(Checkpoint).where(Checkpoint.name == data.name)).first():
        raise Conflict(f"a checkpoint named {data.name!r} is already registered", param="name")
    parent_id = _parent_id(session, data.parent)
    source = _normalise(data.source)
    adapter = _normalise(data.adapter) if data.adapter else None
    facts = inspect_source(source, revision=data.revision, gguf_file=data.gguf_file)
    template = check_template(data.template, facts)
    if adapter:
        if data.gguf_file:
            raise ValidationFailed("a LoRA adapter on a GGUF base is not supported", param="adapter")
        check_adapter(adapter, base_source=source, revision=data.revision)

    materialized: Path | None = None
    delta_base = None
    if data.delta_base:
        delta_base = _delta_base_dir(session, data.delta_base)
        materialized = _materialize(
            base=delta_base, delta=source, out=materialize_dir / data.name.replace("/", "--")
        )
    row = Checkpoint(
        name=data.name,
        source=source,
        revision=data.revision,
        adapter=adapter,
        gguf_file=data.gguf_file,
        delta_base=delta_base,
        template=template,
        parent_id=parent_id,
        meta=data.meta,
        materialized_path=str(materialized) if materialized else None,
        architecture=facts.architecture,
        model_type=facts.model_type,
        context_length=facts.context_length,
    )
    try:
        session.add(row)
        session.flush()
    except IntegrityError as exc:
        if materialized:
            shutil.rmtree(materialized, ignore_errors=True)
        raise Conflict(f"a checkpoint named {data.name!r} is already registered") from exc
    except BaseException:
        if materialized:
            shutil.rmtree(materialized, ignore_errors=True)
        raise
    logger.info("registered checkpoint %s (%s)", row.name, row.architecture)
    return row


def update_checkpoint(session: Session, *, name: str, data: CheckpointUpdate) -> Checkpoint:
    row = get_checkpoint(session, name=name)
    fields = data.model_dump(exclude_unset=True)
    if "template" in fields:
        facts = inspect_source(row.source, revision=row.revision, gguf_file=row.gguf_file)
        row.template = check_template(fields["template"], facts)
    if "parent" in fields:
        parent_id = _parent_id(session, fields["parent"])
        if parent_id is not None and _is_descendant(session, ancestor=row, candidate=parent_id):
            raise ValidationFailed(
                f"{fields['parent']!r} descends from {name!r}; lineage cannot loop",
                param="parent",
            )
        row.parent_id = parent_id
    if "meta" in fields and fields["meta"] is not None:
        row.meta = fields["meta"]
    row.updated_at = utcnow()
    session.add(row)
    session.flush()
    return row


def delete_checkpoint(session: Session, *, name: str) -> None:
    row = get_checkpoint(session, name=name)
    children = session.exec(select(Checkpoint).where(Checkpoint.parent_id == row.id)).all()
    if children:
        names = ", ".join(c.name for c in children)
        raise Conflict(
            f"checkpoint {name!r} is the parent of {names}; remove or re-parent them first"
        )
    materialized = row.materialized_path
    session.delete(row)
    session.flush()
    if materialized:
        shutil.rmtree(materialized, ignore_errors=True)


def _normalise(path_or_id: str) -> str:
    return str(Path(path_or_id).expanduser().resolve()) if looks_local(path_or_id) else path_or_id


def _parent_id(session: Session, parent: str | None) -> int | None:
    if parent is None:
        return None
    row = session.exec(select(Checkpoint).where(Checkpoint.name == parent)).first()
    if row is None:
        raise ValidationFailed(f"parent checkpoint {parent!r} is not registered", param="parent")
    return row.id


def _is_descendant(session: Session, *, ancestor: Checkpoint, candidate: int) -> bool:
    seen: set[int] = set()
    current: int | None = candidate
    while current is not None and current not in seen:
        if current == ancestor.id:
            return True
        seen.add(current)
        node = session.get(Checkpoint, current)
        current = node.parent_id if node else None
    return False


def _delta_base_dir(session: Session, delta_base: str) -> str:
    row = session.exec(select(Checkpoint).where(Checkpoint.name == delta_base)).first()
    if row is not None:
        return row.materialized_path or row.source
    if not looks_local(delta_base) or not Path(delta_base).expanduser().is_dir():
        raise ValidationFailed(
            f"delta_base {delta_base!r} is neither a registered checkpoint nor a directory",
            param="delta_base",
        )
    return _normalise(delta_base)


def _materialize(*, base: str, delta: str, out: Path) -> Path:
    from model_workers.delta import DeltaError, apply_delta

    if out.exists():
        raise Conflict(f"materialised weights already exist at {out}; remove them first")
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        return apply_delta(Path(base), Path(delta), out)
    except DeltaError as exc:
        raise ValidationFailed(f"cannot apply delta {delta!r} to {base!r}: {exc}") from exc
