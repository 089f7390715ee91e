"""API keys: created once and shown once, stored as SHA-256 hashes, checked per write call."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from sqlmodel import Session, select

from arena.errors import ClientError, Forbidden, NotFound, Unauthorized
from arena.models import ApiKey, ApiKeyCreated, ApiKeyPublic, Role, utcnow

ROLES: tuple[str, ...] = ("admin", "registrar", "worker")
# What each role may do. Admin implies everything.
PERMISSIONS: dict[str, frozenset[str]] = {
    "admin": frozenset({"admin", "register", "worker"}),
    "registrar": frozenset({"register", "worker"}),
    "worker": frozenset({"worker"}),
}
KEY_PREFIX = "arena-"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(session: Session, *, name: str, role: Role) -> ApiKeyCreated:
    """Store a new key (hashed) and return it; the plain key is not retrievable later."""
    if role not in ROLES:
        raise ClientError(f"unknown role {role!r}; choose one of: {', '.join(ROLES)}")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(name=name, role=role, key_hash=hash_key(key), prefix=key[: len(KEY_PREFIX) + 6])
    session.add(row)
    session.flush()
    return ApiKeyCreated(**ApiKeyPublic.model_validate(row, from_attributes=True).model_dump(), key=key)


def list_keys(session: Session) -> list[ApiKeyPublic]:
    rows = session.exec(select(ApiKey).order_by(ApiKey.id)).all()  # type: ignore[arg-type]
    return [ApiKeyPublic.model_validate(r, from_attributes=True) for r in rows]


def revoke_key(session: Session, *, key_id: int) -> ApiKeyPublic:
    row = session.get(ApiKey, key_id)
    if row is None:
        raise NotFound(f"no API key with id {key_id}")
    row.revoked_at = row.revoked_at or utcnow()
    session.add(row)
    return ApiKeyPublic.model_validate(row, from_attributes=True)


def authenticate(
    session: Session, *, authorization: str | None, admin_key: str | None, permission: str
) -> str:
    """Check an ``Authorization: Bearer KEY`` header; return the role or raise 401/403."""
    if not authorization:
        raise Unauthorized("this call needs an API key: send 'Authorization: Bearer <key>'")
    scheme, _, key = authorization.partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key:
        raise Unauthorized("malformed Authorization header: expected 'Bearer <key>'")
    if admin_key and hmac.compare_digest(key.encode(), admin_key.encode()):
        role = "admin"
    else:
        row = session.exec(select(ApiKey).where(ApiKey.key_hash == hash_key(key))).first()
        if row is None or row.revoked_at is not None:
            raise Unauthorized("invalid or revoked API key")
        role = row.role
    if permission not in PERMISSIONS.get(role, frozenset()):
        raise Forbidden(f"a {role} key may not do this (needs {permission!r} permission)")
    return role
