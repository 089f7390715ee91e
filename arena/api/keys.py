"""``/api/keys``: admins create, list and revoke API keys."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field
from sqlmodel import Session

from arena import keys
from arena.api.deps import get_session, require
from arena.models import ApiKeyCreated, ApiKeyPublic, Role

router = APIRouter(prefix="/api/keys", tags=["keys"], dependencies=[Depends(require("admin"))])


class KeyCreate(BaseModel):
    name: str = Field(min_length=1, max_length=128)
    role: Role = "registrar"


@router.post("", response_model=ApiKeyCreated, status_code=201)
def create_key(data: KeyCreate, session: Session = Depends(get_session, scope="function")) -> ApiKeyCreated:
    return keys.create_key(session, name=data.name, role=data.role)


@router.get("", response_model=list[ApiKeyPublic])
def list_keys(session: Session = Depends(get_session, scope="function")) -> list[ApiKeyPublic]:
    return keys.list_keys(session)


@router.delete("/{key_id}", response_model=ApiKeyPublic)
def revoke_key(key_id: int, session: Session = Depends(get_session, scope="function")) -> ApiKeyPublic:
    return keys.revoke_key(session, key_id=key_id)
