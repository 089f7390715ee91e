"""Database tables and their public schemas, one family per entity."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import field_validator
from sqlalchemy import JSON, Column
from sqlmodel import Field, SQLModel

Role = Literal["admin", "registrar", "worker"]


def utcnow() -> datetime:
    return datetime.now(UTC)


# --- checkpoints ---------------------------------------------------------------------------


class CheckpointBase(SQLModel):
    name: str = Field(
        index=True,
        unique=True,
        min_length=1,
        max_length=128,
        regex=r"^[A-Za-z0-9][A-Za-z0-9._:/+-]*$",
        description="Unique name; also the model name in /v1 requests.",
    )
    source: str = Field(description="Local checkpoint directory or hub id.")
    revision: str | None = Field(default=None, description="Hub revision (branch, tag, commit).")
    adapter: str | None = Field(default=None, description="PEFT LoRA adapter directory.")
    gguf_file: str | None = Field(default=None, description="GGUF file inside source to load.")
    delta_base: str | None = Field(
        default=None,
        description="Base weights (directory or registered checkpoint) that source is a delta "
        "of; base + delta is materialised once at registration.",
    )
    template: str | None = Field(
        default=None,
        description="Conversation template name; default 'hf' when the tokenizer has a "
        "chat_template.",
    )


class Checkpoint(CheckpointBase, table=True):
    id: int | None = Field(default=None, primary_key=True)
    parent_id: int | None = Field(default=None, foreign_key="checkpoint.id")
    meta: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    materialized_path: str | None = None
    architecture: str | None = None
    model_type: str | None = None
    context_length: int | None = None
    status: str = "ready"
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class CheckpointCreate(CheckpointBase):
    parent: str | None = Field(default=None, description="Name of the parent checkpoint.")
    meta: dict[str, Any] = Field(default_factory=dict, description="Free metadata.")

    @field_validator("source", "adapter", "gguf_file", "delta_base", "revision")
    @classmethod
    def _not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must not be blank")
        return value


class CheckpointUpdate(SQLModel):
    """Fields that can change without re-validating weights."""

    template: str | None = None
    parent: str | None = None
    meta: dict[str, Any] | None = None


class CheckpointPublic(CheckpointBase):
    id: int
    parent: str | None = None
    meta: dict[str, Any]
    materialized_path: str | None
    architecture: str | None
    model_type: str | None
    context_length: int | None
    status: str
    created_at: datetime
    updated_at: datetime


# --- API keys ------------------------------------------------------------------------------


class ApiKey(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(index=True)
    role: str
    key_hash: str = Field(unique=True, index=True)  # sha256 hex of the key; the key is not kept
    prefix: str  # first characters, to recognise a key in listings
    created_at: datetime = Field(default_factory=utcnow)
    revoked_at: datetime | None = None


class ApiKeyPublic(SQLModel):
    id: int
    name: str
    role: str
    prefix: str
    created_at: datetime
    revoked_at: datetime | None


class ApiKeyCreated(ApiKeyPublic):
    key: str  # shown once


# --- workers -------------------------------------------------------------------------------


class Worker(SQLModel, table=True):
    id: str = Field(primary_key=True)
    address: str = Field(index=True, unique=True)
    backend: str
    models: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    queue_length: int = 0
    registered_at: datetime = Field(default_factory=utcnow)
    last_heartbeat: float = 0.0  # unix time, seconds


class WorkerRegister(SQLModel):
    address: str = Field(regex=r"^https?://[^\s/]+(:\d+)?/?$", description="http://host:port")
    backend: str = Field(min_length=1, max_length=32)
    models: list[str] = Field(min_length=1)
    queue_length: int = Field(default=0, ge=0)


class WorkerHeartbeat(SQLModel):
    queue_length: int = Field(default=0, ge=0)
    models: list[str] | None = None


class WorkerRegistered(SQLModel):
    id: str
    heartbeat_interval_s: float
    expiry_s: float


class WorkerPublic(SQLModel):
    id: str
    address: str
    backend: str
    models: list[str]
    queue_length: int
    registered_at: datetime
    last_heartbeat: float
    healthy: bool


# --- battles and votes ---------------------------------------------------------------------

BattleMode = Literal["anonymous", "named"]
VoteChoice = Literal["a", "b", "tie", "bothbad"]
# FastChat clean_battle vocabulary, the one stored and exported
Winner = Literal["model_a", "model_b", "tie", "tie (bothbad)"]


class Battle(SQLModel, table=True):
    """Two models answering the same conversation; names stay hidden until the vote."""

    id: str = Field(primary_key=True)  # 128 random bits, hex: the battle's only capability
    mode: str
    model_a: str
    model_b: str
    session_id: str = Field(index=True)
    ip: str = Field(index=True)
    tstamp: float = Field(index=True)  # unix time of creation, seconds (rate limits)
    status: str = "open"  # open | voted
    turns: int = 0  # completed turns (both sides answered)
    # OpenAI-style messages per side: user turns are the same, answers differ
    conversation_a: list[dict[str, Any]] = Field(
        default_factory=list, sa_column=Column(JSON, nullable=False)
    )
    conversation_b: list[dict[str, Any]] = Field(
        default_factory=list, sa_column=Column(JSON, nullable=False)
    )
    flagged: bool = False  # an answer revealed a model's identity: left out of the ratings
    flag_word: str | None = None
    language: str | None = None
    created_at: datetime = Field(default_factory=utcnow)


class BattleCreate(SQLModel):
    mode: BattleMode = "anonymous"
    model_a: str | None = Field(default=None, description="Named mode: the first model.")
    model_b: str | None = Field(default=None, description="Named mode: the second model.")
    session_id: str = Field(
        min_length=1, max_length=128, description="Client-chosen id of the browser session."
    )


class BattleMessage(SQLModel):
    content: str = Field(min_length=1, max_length=16_000)
    max_tokens: int = Field(default=256, ge=1, le=4096)
    temperature: float = Field(default=0.7, ge=0.0, le=2.0)


class BattleRegenerate(SQLModel):
    max_tokens: int = Field(default=256, ge=1, le=4096)
    temperature: float = Field(default=0.7, ge=0.0, le=2.0)


class VoteCast(SQLModel):
    winner: VoteChoice


class BattlePublic(SQLModel):
    """What a client sees. Model names only in named mode or once the battle is voted."""

    id: str
    mode: str
    status: str
    models: list[str]  # ["Model A", "Model B"] while an anonymous battle is open
    model_a: str | None = None
    model_b: str | None = None
    turns: int
    conversation_a: list[dict[str, Any]]
    conversation_b: list[dict[str, Any]]
    winner: str | None = None
    flagged: bool | None = None  # revealed with the names (the flag word may be a name)
    flag_word: str | None = None


class Vote(SQLModel, table=True):
    """One human verdict, cast in a battle here or imported from a clean_battle log."""

    id: int | None = Field(default=None, primary_key=True)
    # unique: a battle takes one vote, even with several replicas racing (NULLs: imported)
    battle_id: str | None = Field(default=None, foreign_key="battle.id", unique=True)
    model_a: str = Field(index=True)
    model_b: str = Field(index=True)
    winner: str  # Winner vocabulary
    tstamp: float = Field(index=True)  # unix time, seconds
    anony: bool = True
    language: str = "unknown"
    turn: int = 1
    judge: str = "arena_user"
    flagged: bool = False
    flag_word: str | None = None
    source: str = "arena"  # arena | import
    session_id: str | None = Field(default=None, index=True)
    ip: str | None = Field(default=None, index=True)
    question_id: str | None = None
    extra: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


# --- jobs (fine-tuning, benchmark and judge runs) ------------------------------------------

JobKind = Literal["finetune", "bench", "judge"]
JobState = Literal["queued", "running", "succeeded", "failed", "cancelled"]
FINAL_STATES = ("succeeded", "failed", "cancelled")


class Job(SQLModel, table=True):
    """One unit of work for the job workers. The truth about a job lives here, not in the
    broker: a running job holds a lease that its worker renews; an expired lease puts it back
    in the queue (up to ``max_attempts``)."""

    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(index=True)  # JobKind
    state: str = Field(default="queued", index=True)  # JobState
    checkpoint: str | None = Field(default=None, index=True)  # evaluated model / fine-tune base
    params: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    progress: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    result: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    result_path: str | None = None  # full result JSON (benchmark items, judgments) on disk
    error: str | None = None
    output_checkpoint: str | None = None  # fine-tune: the registered candidate
    trigger: str = "api"  # api | policy | cli
    attempts: int = 0
    max_attempts: int = 3
    lease_owner: str | None = None
    lease_expires: float = 0.0  # unix time, seconds
    cancel_requested: bool = False
    created_at: datetime = Field(default_factory=utcnow)
    started_at: datetime | None = None
    finished_at: datetime | None = None


class JobEvent(SQLModel, table=True):
    """A log line of a job (state changes, warnings, the failure)."""

    id: int | None = Field(default=None, primary_key=True)
    job_id: int = Field(foreign_key="job.id", index=True)
    tstamp: float
    level: str = "info"
    message: str


class JobMetric(SQLModel, table=True):
    """A training step of a fine-tuning job: the loss curve."""

    id: int | None = Field(default=None, primary_key=True)
    job_id: int = Field(foreign_key="job.id", index=True)
    step: int
    loss: float
    learning_rate: float | None = None
    tokens_per_s: float | None = None
    tstamp: float


class JobPublic(SQLModel):
    id: int
    kind: str
    state: str
    checkpoint: str | None
    params: dict[str, Any]
    progress: dict[str, Any]
    result: dict[str, Any] | None
    result_path: str | None
    error: str | None
    output_checkpoint: str | None
    trigger: str
    attempts: int
    max_attempts: int
    lease_owner: str | None = None  # host:pid:id of the job worker running it
    cancel_requested: bool
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
