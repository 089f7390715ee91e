"""The platform's one reader of environment variables (prefix ``ARENA_``)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


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
