"""Request-scoped dependencies: the database session and API-key checks."""

from __future__ import annotations

from collections.abc import Iterator

from fastapi import Depends, Header, Request
from sqlmodel import Session

from arena.db import session_scope
from arena.keys import authenticate
from arena.settings import Settings


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_session(request: Request) -> Iterator[Session]:
    """One transaction per request: committed before the response is sent, else rolled back."""
    with session_scope(request.app.state.engine) as session:
        yield session


def require(permission: str):
    """A dependency that checks ``Authorization: Bearer KEY`` for ``permission``."""

    def check(
        request: Request,
        session: Session = Depends(get_session, scope="function"),
        authorization: str | None = Header(default=None),
    ) -> str:
        return authenticate(
            session,
            authorization=authorization,
            admin_key=request.app.state.settings.admin_key,
            permission=permission,
        )

    return check
