"""The judgment cache: one SQLite file; every judgment with its raw text, keyed by the sha256
of (judge model, prompt version, kind, question id + text, the answers in prompt order, order,
and for a later turn or a reference-guided prompt: the turn and the reference)."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS judgment (
    key TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    judge_model TEXT NOT NULL,
    prompt_version TEXT NOT NULL,
    question_id TEXT NOT NULL,
    order_label TEXT NOT NULL,
    turn INTEGER NOT NULL DEFAULT 1,  -- the user turn judged (MT-bench questions have two)
    raw_text TEXT NOT NULL,
    parsed TEXT,               -- JSON; NULL when the reply was unparseable
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    cost_usd REAL NOT NULL,
    created_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP
)
"""


@dataclass(frozen=True)
class StoredJudgment:
    key: str
    kind: str
    judge_model: str
    prompt_version: str
    question_id: str
    order: str
    raw_text: str
    parsed: Any  # [a, b] scores, "A"/"B"/"C", a rating, or None when unparseable
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    turn: int = 1


def judgment_key(*, judge_model: str, prompt_version: str, kind: str, question_id: str,
                 question_text: Sequence[str], answers: Sequence[str | Sequence[str]],
                 order: str, turn: int = 1, reference: Sequence[str] | None = None) -> str:
    """sha256 over everything that decides what the judge saw. ``answers``: in prompt order,
    a text each for turn 1, each side's turns so far for a later turn. The turn and the
    reference enter only when they matter, so first-turn keys without a reference are the
    keys single-turn judging has always used (caches stay valid)."""
    fields: list[object] = [judge_model, prompt_version, kind, question_id, list(question_text),
                            [a if isinstance(a, str) else list(a) for a in answers], order]
    if turn != 1 or reference is not None:
        fields.append({"turn": turn, "reference": None if reference is None else list(reference)})
    payload = json.dumps(fields, ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class JudgmentStore:
    """SQLite file at ``path`` (``":memory:"`` for a throw-away store). Each ``put`` commits,
    so what was judged before a crash is kept."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._db = sqlite3.connect(self.path)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(_SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(judgment)")}
        if "turn" not in columns:  # a store written before multi-turn judging
            self._db.execute("ALTER TABLE judgment ADD COLUMN turn INTEGER NOT NULL DEFAULT 1")
        self._db.commit()

    def __enter__(self) -> JudgmentStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._db.close()

    def put(self, j: StoredJudgment) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO judgment (key, kind, judge_model, prompt_version, "
            "question_id, order_label, turn, raw_text, parsed, prompt_tokens, "
            "completion_tokens, cost_usd) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (j.key, j.kind, j.judge_model, j.prompt_version, j.question_id, j.order, j.turn,
             j.raw_text, None if j.parsed is None else json.dumps(j.parsed), j.prompt_tokens,
             j.completion_tokens, j.cost_usd))
        self._db.commit()

    def get_many(self, keys: Iterable[str]) -> dict[str, StoredJudgment]:
        wanted = list(dict.fromkeys(keys))
        found: dict[str, StoredJudgment] = {}
        for start in range(0, len(wanted), 500):  # SQLite's bound-parameter limit
            chunk = wanted[start:start + 500]
            rows = self._db.execute(
                "SELECT key, kind, judge_model, prompt_version, question_id, order_label, "
                "raw_text, parsed, prompt_tokens, completion_tokens, cost_usd, turn "
                "FROM judgment "
                f"WHERE key IN ({','.join('?' * len(chunk))})", chunk)
            for row in rows:
                found[row[0]] = StoredJudgment(
                    key=row[0], kind=row[1], judge_model=row[2], prompt_version=row[3],
                    question_id=row[4], order=row[5], raw_text=row[6],
                    parsed=None if row[7] is None else json.loads(row[7]),
                    prompt_tokens=row[8], completion_tokens=row[9], cost_usd=row[10],
                    turn=row[11])
        return found

    def count(self, *, unparseable_only: bool = False) -> int:
        sql = "SELECT COUNT(*) FROM judgment"
        if unparseable_only:
            sql += " WHERE parsed IS NULL"
        return int(self._db.execute(sql).fetchone()[0])

    def totals(self) -> dict[str, float]:
        """Token usage and cost over every stored judgment."""
        row = self._db.execute("SELECT COALESCE(SUM(prompt_tokens), 0), "
                               "COALESCE(SUM(completion_tokens), 0), "
                               "COALESCE(SUM(cost_usd), 0) FROM judgment").fetchone()
        return {"prompt_tokens": row[0], "completion_tokens": row[1], "cost_usd": row[2]}
