"""The registry on a real SQLite file and on a real PostgreSQL server."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file
from sqlmodel import Session, select

from arena.db import make_engine, session_scope
from arena.errors import Conflict, NotFound, ValidationFailed
from arena.models import Checkpoint, CheckpointCreate, CheckpointUpdate
from arena.registry import (
    delete_checkpoint,
    get_checkpoint,
    list_checkpoints,
    register_checkpoint,
    to_public,
    update_checkpoint,
)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def engine(request, tmp_path):
    if request.param == "sqlite":
        return make_engine(f"sqlite:///{tmp_path / 'registry.db'}")
    from sqlmodel import SQLModel

    engine = make_engine(request.getfixturevalue("postgres_url"))
    SQLModel.metadata.drop_all(engine)
    SQLModel.metadata.create_all(engine)
    return engine


def _register(engine, tmp_path, **fields):
    with session_scope(engine) as s:
        row = register_checkpoint(
            s, data=CheckpointCreate(**fields), materialize_dir=tmp_path / "materialized"
        )
        return to_public(s, row)


def _names(engine):
    with Session(engine) as s:
        return [c.name for c in list_checkpoints(s)]


def test_register_list_update_remove_with_lineage(engine, tmp_path, tiny_models):
    base = _register(engine, tmp_path, name="base", source=str(tiny_models["llama"]))
    assert (base.architecture, base.model_type, base.template) == ("LlamaForCausalLM", "llama", "hf")
    assert base.context_length == 512
    lora = _register(engine, tmp_path, name="base-lora", source=str(tiny_models["llama"]),
                     adapter=str(tiny_models["llama-lora"]), template="alpaca", parent="base",
                     meta={"lr": 2e-4, "data": "alpaca_52k"})
    assert lora.parent == "base" and lora.meta == {"lr": 2e-4, "data": "alpaca_52k"}
    assert _names(engine) == ["base", "base-lora"]
    with session_scope(engine) as s:
        updated = update_checkpoint(s, name="base-lora",
                                    data=CheckpointUpdate(template="vicuna_v1.1", meta={"x": 1}))
        assert (updated.template, updated.meta) == ("vicuna_v1.1", {"x": 1})
    with pytest.raises(Conflict, match="parent of base-lora"), session_scope(engine) as s:
        delete_checkpoint(s, name="base")
    with pytest.raises(ValidationFailed, match="loop"), session_scope(engine) as s:
        update_checkpoint(s, name="base", data=CheckpointUpdate(parent="base-lora"))
    with session_scope(engine) as s:
        delete_checkpoint(s, name="base-lora")
        delete_checkpoint(s, name="base")
    assert _names(engine) == []
    with pytest.raises(NotFound), Session(engine) as s:
        get_checkpoint(s, name="base")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"source": "/nonexistent/dir"}, "is not a directory"),
        ({"template": "vicuna_v9"}, "vicuna"),
        ({"adapter": "OPT_LORA"}, "does not match base"),
        ({"adapter": "/nonexistent"}, "no adapter_config.json"),
        ({"parent": "nobody"}, "parent checkpoint 'nobody' is not registered"),
        ({"source": "TOKENIZER"}, "has no config.json"),
        ({"delta_base": "OPT"}, "cannot apply delta"),
        ({"gguf_file": "missing.gguf"}, "does not exist"),
    ],
)
def test_bad_registrations_store_nothing(engine, tmp_path, tiny_models, fields, message):
    _register(engine, tmp_path, name="keep", source=str(tiny_models["llama"]))
    before = _snapshot(engine)
    body = {"name": "new", "source": str(tiny_models["llama"]), **fields}
    replacements = {"OPT_LORA": tiny_models["opt-lora"], "TOKENIZER": tiny_models["tokenizer"],
                    "OPT": tiny_models["opt"]}
    body = {k: str(replacements.get(v, v)) for k, v in body.items()}
    with pytest.raises(ValidationFailed, match=message):
        _register(engine, tmp_path, **body)
    assert _snapshot(engine) == before
    assert not (tmp_path / "materialized" / "new").exists()


def test_duplicate_name_is_a_conflict(engine, tmp_path, tiny_models):
    _register(engine, tmp_path, name="dup", source=str(tiny_models["llama"]))
    with pytest.raises(Conflict, match="already registered"):
        _register(engine, tmp_path, name="dup", source=str(tiny_models["opt"]))
    assert _names(engine) == ["dup"]


def test_delta_weights_are_materialised_once_and_recorded(engine, tmp_path, tiny_models):
    from model_workers.delta import make_delta

    delta = make_delta(tiny_models["llama"], tiny_models["llama-b"], tmp_path / "delta")
    row = _register(engine, tmp_path, name="vicuna-like", source=str(delta),
                    delta_base=str(tiny_models["llama"]))
    assert row.materialized_path and row.delta_base == str(tiny_models["llama"])
    got = load_file(f"{row.materialized_path}/model.safetensors")
    want = load_file(f"{tiny_models['llama-b']}/model.safetensors")
    assert got.keys() == want.keys()
    assert all(torch.allclose(got[k], want[k], atol=1e-6) for k in want)
    with session_scope(engine) as s:
        delete_checkpoint(s, name="vicuna-like")
    assert not (tmp_path / "materialized" / "vicuna-like").exists()


def test_template_defaults_to_the_tokenizers_chat_template(engine, tmp_path, tiny_models):
    plain = tmp_path / "plain"
    shutil.copytree(tiny_models["llama"], plain)
    config_file = plain / "tokenizer_config.json"
    config = json.loads(config_file.read_text())
    config.pop("chat_template", None)
    config_file.write_text(json.dumps(config))
    (plain / "chat_template.jinja").unlink(missing_ok=True)
    with pytest.raises(ValidationFailed, match="no chat_template"):
        _register(engine, tmp_path, name="plain", source=str(plain))
    assert _register(engine, tmp_path, name="plain", source=str(plain), template="llama").template == "llama"


def _snapshot(engine):
    with Session(engine) as s:
        return [r.model_dump() for r in s.exec(select(Checkpoint).order_by(Checkpoint.id))]
