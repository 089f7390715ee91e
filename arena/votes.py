"""Vote logs in FastChat's ``clean_battle`` format: import (validated whole first) and export.

A record is a JSON object with ``model_a``, ``model_b``, ``winner`` (``model_a`` | ``model_b`` |
``tie`` | ``tie (bothbad)``), ``tstamp``, ``anony``, ``language``, ``turn``, ``judge``, and
optional fields (``question_id``, ``conversation_a``/``conversation_b``, ...) that are kept and
exported back unchanged. Exported records of flagged battles carry ``flagged: true`` and
``flag_word``; an imported record with ``flagged: true`` is stored flagged.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from sqlmodel import Session, col, select

from arena.errors import ValidationFailed
from arena.models import Battle, Vote, Winner

CORE_FIELDS = ("model_a", "model_b", "winner", "tstamp", "anony", "language", "turn", "judge")


class CleanBattleRecord(BaseModel):
    """One clean_battle record; unknown fields are allowed and kept."""

    model_config = ConfigDict(extra="allow", strict=True)

    model_a: str = Field(min_length=1)
    model_b: str = Field(min_length=1)
    winner: Winner
    tstamp: float = Field(ge=0)
    anony: bool
    language: str
    turn: int = Field(ge=1)
    judge: str = Field(min_length=1)
    question_id: str | None = None
    flagged: bool = False
    flag_word: str | None = None

    @model_validator(mode="after")
    def _two_models(self) -> CleanBattleRecord:
        if self.model_a == self.model_b:
            raise ValueError("model_a and model_b must differ")
        return self


def validate_records(records: Any) -> list[CleanBattleRecord]:
    """Every record checked; the first bad one raises, naming its index and field."""
    if not isinstance(records, list):
        raise ValidationFailed("a clean_battle log is a JSON list of records")
    checked = []
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            raise ValidationFailed(f"record {index}: must be a JSON object", param=f"[{index}]")
        try:
            checked.append(CleanBattleRecord.model_validate(_lenient_numbers(record)))
        except ValidationError as exc:
            error = exc.errors()[0]
            where = ".".join(str(p) for p in error["loc"]) or "record"
            message = str(error["msg"]).removeprefix("Value error, ")
            raise ValidationFailed(
                f"record {index}: field {where!r}: {message}", param=f"[{index}].{where}"
            ) from None
    return checked


def _lenient_numbers(record: dict[str, Any]) -> dict[str, Any]:
    # strict mode refuses "1" for a number, as it should, but an integer tstamp is a float
    tstamp = record.get("tstamp")
    if isinstance(tstamp, int) and not isinstance(tstamp, bool):
        return {**record, "tstamp": float(tstamp)}
    return record


def import_votes(session: Session, *, records: Any) -> int:
    """Validate all ``records``, then store them as votes with ``source="import"``."""
    checked = validate_records(records)
    for record in checked:
        extra = dict(record.model_extra or {})
        if record.question_id is not None:
            extra["question_id"] = record.question_id
        session.add(Vote(
            battle_id=None, model_a=record.model_a, model_b=record.model_b, winner=record.winner,
            tstamp=record.tstamp, anony=record.anony, language=record.language, turn=record.turn,
            judge=record.judge, flagged=record.flagged, flag_word=record.flag_word,
            source="import", question_id=record.question_id, extra=extra,
        ))
    session.flush()
    return len(checked)


def export_votes(session: Session) -> list[dict[str, Any]]:
    """All votes, oldest first, as clean_battle records with model names."""
    rows = session.exec(
        select(Vote, Battle)
        .join(Battle, col(Vote.battle_id) == col(Battle.id), isouter=True)
        .order_by(col(Vote.tstamp), col(Vote.id))
    ).all()
    out = []
    for vote, battle in rows:
        record: dict[str, Any] = dict(vote.extra)
        if battle is not None:
            record.update(question_id=battle.id, conversation_a=battle.conversation_a,
                          conversation_b=battle.conversation_b)
        record.update({name: getattr(vote, name) for name in CORE_FIELDS})
        if vote.flagged:
            record.update(flagged=True, flag_word=vote.flag_word)
        out.append(record)
    return out
