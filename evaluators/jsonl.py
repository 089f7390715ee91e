"""Reading JSON Lines with errors that name the path and the line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from evaluators.errors import InputFileError


def read_records(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, record)`` for each non-blank line; each record must be an object."""
    with Path(path).open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputFileError(str(path), number, f"invalid JSON: {exc.msg}") from None
            if not isinstance(record, dict):
                raise InputFileError(str(path), number, "expected a JSON object")
            yield number, record


def require(record: dict[str, Any], path: str | Path, line: int, *names: str) -> Any:
    """The first of ``names`` present in ``record``; an error naming them all if none is."""
    for name in names:
        if record.get(name) is not None:
            return record[name]
    wanted = " or ".join(repr(n) for n in names)
    raise InputFileError(str(path), line, f"missing field {wanted}")
