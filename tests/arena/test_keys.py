import pytest
from sqlmodel import Session, select

from arena.db import make_engine, session_scope
from arena.errors import Forbidden, Unauthorized
from arena.keys import authenticate, create_key, hash_key, list_keys, revoke_key
from arena.models import ApiKey


@pytest.fixture()
def engine(tmp_path):
    return make_engine(f"sqlite:///{tmp_path / 'keys.db'}")


def test_keys_are_stored_hashed_and_shown_once(engine):
    with session_scope(engine) as s:
        created = create_key(s, name="ci", role="registrar")
    with Session(engine) as s:
        row = s.exec(select(ApiKey)).one()
    assert row.key_hash == hash_key(created.key)
    assert created.key not in row.model_dump_json()
    assert created.key.startswith(row.prefix)
    with Session(engine) as s:
        assert [k.name for k in list_keys(s)] == ["ci"]


def test_roles_and_permissions(engine):
    with session_scope(engine) as s:
        registrar = create_key(s, name="r", role="registrar").key
        worker = create_key(s, name="w", role="worker").key
    with Session(engine) as s:
        auth = f"Bearer {registrar}"
        assert authenticate(s, authorization=auth, admin_key=None, permission="register") == "registrar"
        with pytest.raises(Forbidden, match="registrar key may not"):
            authenticate(s, authorization=auth, admin_key=None, permission="admin")
        with pytest.raises(Forbidden):
            authenticate(s, authorization=f"Bearer {worker}", admin_key=None, permission="register")
        assert authenticate(s, authorization="Bearer sekret", admin_key="sekret", permission="admin") == "admin"


def test_missing_wrong_and_revoked_keys_are_refused(engine):
    with session_scope(engine) as s:
        created = create_key(s, name="r", role="admin")
    with Session(engine) as s:
        with pytest.raises(Unauthorized, match="needs an API key"):
            authenticate(s, authorization=None, admin_key=None, permission="register")
        with pytest.raises(Unauthorized, match="malformed"):
            authenticate(s, authorization="Basic abc", admin_key=None, permission="register")
        with pytest.raises(Unauthorized, match="invalid or revoked"):
            authenticate(s, authorization="Bearer nope", admin_key="other", permission="register")
    with session_scope(engine) as s:
        revoke_key(s, key_id=created.id)
    with Session(engine) as s, pytest.raises(Unauthorized, match="revoked"):
        authenticate(s, authorization=f"Bearer {created.key}", admin_key=None, permission="register")
