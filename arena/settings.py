"""The platform's one reader of environment variables (prefix ``ARENA_``)."""

from __future__ import annotations

import math
from functools import cache
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Vendor and model names that, in an answer, tell a voter which model wrote it.
DEFAULT_IDENTITY_WORDS: tuple[str, ...] = (
    "OpenAI", "ChatGPT", "GPT-3", "GPT-3.5", "GPT-4", "LMSYS", "Vicuna", "Anthropic", "Claude",
    "LLaMA", "Meta AI", "Alpaca", "Stanford", "Koala", "Berkeley", "BELLE", "MOSS", "ChatGLM",
    "Baize", "Dolly", "Databricks", "SmolLM", "Hugging Face",
)


class Settings(BaseSettings):
    """Control-plane settings; every field can be set as ``ARENA_<FIELD>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="ARENA_", extra="forbid")

    data_dir: Path = Field(
        default=Path(".arena"),
        description="Where the SQLite database, materialised delta weights and demo models live.",
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the database; default: a SQLite file in data_dir (WAL mode). "
        "PostgreSQL: postgresql+psycopg://user:pass@host/db",
    )
    admin_key: str | None = Field(
        default=None,
        description="An admin API key accepted on top of the keys stored in the database.",
    )
    heartbeat_interval_s: float = Field(
        default=2.0, gt=0, description="How often workers are asked to heartbeat."
    )
    worker_expiry_s: float = Field(
        default=6.0,
        gt=0,
        description="A worker that has not heartbeaten for this long is out of rotation.",
    )
    upstream_timeout_s: float = Field(
        default=600.0, gt=0, description="Longest a gateway request may wait on a worker."
    )
    routing_cache_s: float = Field(
        default=0.5,
        ge=0,
        description="How long a replica reuses the worker table it read from the database "
        "before routing (0: read it on every request).",
    )

    battle_weights: dict[str, float] = Field(
        default_factory=dict,
        description="Sampling weight per model for anonymous battles (JSON object); a model not "
        "listed weighs 1.0, a weight of 0 keeps it out of anonymous battles.",
    )
    identity_words: list[str] = Field(
        default_factory=lambda: list(DEFAULT_IDENTITY_WORDS),
        description="Words that reveal a model's identity in an answer (whole word, any case); "
        "a battle whose answers contain one (or a battling model's name) is flagged and left "
        "out of the ratings.",
    )
    battles_per_minute: int = Field(
        default=20, ge=1, description="Battles one session id, and one client IP, may start a minute."
    )
    votes_per_minute: int = Field(
        default=20, ge=1, description="Votes one session id, and one client IP, may cast a minute."
    )
    moderation_url: str | None = Field(
        default=None,
        description="OpenAI-compatible base URL whose /moderations endpoint checks battle "
        "messages before they reach a model; unset: no moderation.",
    )
    moderation_api_key: str | None = Field(
        default=None, description="API key for moderation_url."
    )

    leaderboard_rounds: int = Field(
        default=1000, ge=1, le=10_000,
        description="Bootstrap rounds of /api/leaderboard when the request names none.",
    )
    leaderboard_cache_s: float = Field(
        default=5.0, ge=0,
        description="How long a replica reuses a leaderboard fit while the vote table is "
        "unchanged (the UI polls it; 0: fit on every request).",
    )
    ui: bool = Field(
        default=True, description="Serve the web UI (Gradio) at /ui; false: the API only."
    )

    judge_base_url: str = Field(
        default="https://api.openai.com/v1",
        description="OpenAI-compatible base URL of the judge model (ending in /v1); the "
        "platform's own gateway works too (http://host:port/v1).",
    )
    judge_model: str = Field(default="gpt-4", description="The judge's model name.")
    judge_api_key: str | None = Field(
        default=None, description="API key for judge_base_url (e.g. an OpenAI key)."
    )
    judge_max_tokens: int | None = Field(
        default=None, ge=1, description="Longest judgment asked of the judge (unset: no limit; "
        "a small local judge needs one, the scores are on the first line)."
    )
    judge_timeout_s: float = Field(
        default=60.0, gt=0, description="Per-call timeout of the judge, in seconds."
    )

    broker_url: str | None = Field(
        default=None,
        description="Celery broker of the job queue; default: an embedded SQLite broker in "
        "data_dir (no server). Several machines: redis://host:6379/0",
    )
    job_lease_s: float = Field(
        default=30.0, gt=0,
        description="A running job's worker renews its lease this often x3; a job whose lease "
        "expired (its worker died) is queued again.",
    )
    job_max_attempts: int = Field(
        default=3, ge=1, description="Times a job is started before a lost worker fails it."
    )
    eval_suites: dict[str, str] = Field(
        default_factory=dict,
        description="Evaluation policy: benchmark runs queued for every newly registered "
        'checkpoint, suite -> data folder or zip (JSON object, e.g. {"mmlu": "/data/mmlu.zip"}).',
    )
    eval_limit: int | None = Field(
        default=None, ge=1, description="Evaluation policy: at most N items per subject."
    )
    eval_shots: int = Field(default=5, ge=0, description="Evaluation policy: k-shot.")
    eval_judge_reference: str | None = Field(
        default=None,
        description="Evaluation policy: queue a judge ratio run of every new checkpoint against "
        "this checkpoint, or 'parent' for its parent; unset: no judge run.",
    )
    eval_judge_questions: str = Field(
        default="demo", description="Evaluation policy: the judge's question file, or 'demo'."
    )
    eval_judge_max_tokens: int = Field(
        default=512, ge=1, description="Evaluation policy: longest answer asked of each model."
    )
    leaderboard_reference: str | None = Field(
        default=None,
        description="The checkpoint the leaderboard's judge-ratio column is against; unset: the "
        "most judged reference.",
    )

    @field_validator("battle_weights")
    @classmethod
    def _finite_weights(cls, value: dict[str, float]) -> dict[str, float]:
        for model, weight in value.items():
            if not math.isfinite(weight) or weight < 0:
                raise ValueError(f"weight of {model!r} must be a finite number >= 0, got {weight}")
        return value

    @field_validator("eval_suites")
    @classmethod
    def _known_suites(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(value) - {"mmlu", "ceval", "cmmlu"})
        if unknown:
            raise ValueError(f"unknown suite(s) {unknown}: use mmlu, ceval, cmmlu")
        return value

    def resolved_broker_url(self) -> str:
        """The Celery broker URL, defaulting to an embedded SQLite broker in data_dir."""
        if self.broker_url:
            return self.broker_url
        return f"sqla+sqlite:///{(self.data_dir / 'broker.db').resolve()}"

    def resolved_database_url(self) -> str:
        """The database URL, defaulting to ``<data_dir>/arena.db``."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'arena.db').resolve()}"


@cache
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()


class ClientSettings(BaseSettings):
    """Where the ``arena`` CLI finds the control plane (``ARENA_URL``, ``ARENA_API_KEY``)."""

    model_config = SettingsConfigDict(env_prefix="ARENA_", extra="ignore")

    url: str = Field(default="http://127.0.0.1:8000", description="Control-plane base URL.")
    api_key: str | None = Field(default=None, description="API key for write calls.")
    admin_key: str | None = Field(default=None, description="Used when api_key is not set.")

    def key(self) -> str | None:
        return self.api_key or self.admin_key
