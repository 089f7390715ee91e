"""Training data: Alpaca and ShareGPT records for instruction tuning, plain text for pretraining.

Readers are strict and say where: the first bad record is named by its file and line (JSONL)
or index (a JSON list), with what is wrong. Nothing here imports torch or a tokenizer.

* Alpaca: ``{"instruction", "input" (optional), "output"}`` records, as a JSON list or JSONL.
* ShareGPT: ``{"conversations": [{"from": "human" | "gpt" | "system" | ..., "value"}]}``; the
  OpenAI shape ``{"messages": [{"role", "content"}]}`` is read the same way.
* Text: a ``.txt`` file (one document), a folder of them (every ``*.txt`` below it, sorted), or
  JSON/JSONL records with a ``"text"`` string.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from model_workers.finetune.config import DataFormat, FinetuneDataError, Mode

TEXT_SUFFIXES = (".txt",)
JSON_SUFFIXES = (".json", ".jsonl")
_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
          "chatgpt": "assistant", "model": "assistant", "system": "system"}


@dataclass(frozen=True)
class DataSummary:
    """What :func:`validate_data` found."""

    format: Literal["alpaca", "sharegpt", "text"]
    records: int  # records, conversations, or text documents
    fingerprint: str  # sha256 of the file bytes (a folder: of its files' names and bytes)
    files: int
    approx_tokens: int  # UTF-8 bytes / 4 of the text trained on: a rough size, not a count


@dataclass(frozen=True)
class Record:
    """One training example: chat ``messages`` (instruct) or a ``text`` document (pretrain)."""

    where: str  # "path: line N" or "path: record N", for error messages
    messages: tuple[dict[str, Any], ...] = ()
    text: str = ""


def validate_data(path: str | Path, *, mode: Mode, data_format: DataFormat = "auto"
                  ) -> DataSummary:
    """Read the whole data set and check every record; :class:`FinetuneDataError` if bad."""
    return load_data(path, mode=mode, data_format=data_format)[0]


def load_data(path: str | Path, *, mode: Mode, data_format: DataFormat = "auto"
              ) -> tuple[DataSummary, list[Record]]:
    """The records of ``path`` and their summary (see the module docstring for the formats)."""
    path = Path(path)
    if not path.exists():
        raise FinetuneDataError(f"{path}: no such file or folder")
    files = _files(path)
    raw = {file: _read_bytes(file) for file in files}
    fingerprint = _fingerprint(path, raw)
    if path.is_dir() or path.suffix.lower() in TEXT_SUFFIXES:
        found: Literal["alpaca", "sharegpt", "text"] = "text"
        records = [Record(where=str(f), text=_decode(f, b)) for f, b in raw.items()]
    else:
        items = list(_json_items(path, raw[path]))
        if not items:
            raise FinetuneDataError(f"{path}: no records")
        found = _detect(items[0][1], f"{path}: {items[0][0]}", asked=data_format)
        parse = {"alpaca": _alpaca, "sharegpt": _sharegpt, "text": _text_record}[found]
        records = [parse(item, f"{path}: {where}") for where, item in items]
    _check_mode(path, mode, found, data_format)
    records = [r for r in records if r.messages or r.text.strip()]
    if not records:
        raise FinetuneDataError(f"{path}: no records with text")
    size = sum(len(r.text.encode()) + sum(len(str(m["content"]).encode()) for m in r.messages)
               for r in records)
    summary = DataSummary(format=found, records=len(records), fingerprint=fingerprint,
                          files=len(files), approx_tokens=size // 4)
    return summary, records


def _files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file()
                       and p.suffix.lower() in TEXT_SUFFIXES and not p.name.startswith("."))
        if not files:
            raise FinetuneDataError(f"{path}: a data folder must hold .txt files; found none")
        return files
    if path.suffix.lower() not in TEXT_SUFFIXES + JSON_SUFFIXES:
        raise FinetuneDataError(f"{path}: unknown data file type {path.suffix!r}; expected "
                                ".json, .jsonl, .txt or a folder of .txt files")
    return [path]


def _read_bytes(file: Path) -> bytes:
    try:
        return file.read_bytes()
    except OSError as exc:
        raise FinetuneDataError(f"{file}: cannot read: {exc.strerror or exc}") from exc


def _fingerprint(root: Path, raw: dict[Path, bytes]) -> str:
    if not root.is_dir():
        return hashlib.sha256(raw[root]).hexdigest()
    digest = hashlib.sha256()
    for file, data in raw.items():
        digest.update(file.relative_to(root).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(data).digest())
    return digest.hexdigest()


def _decode(file: Path, data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise FinetuneDataError(f"{file}: line {line}: not UTF-8 text") from exc


def _json_items(path: Path, data: bytes) -> Iterator[tuple[str, Any]]:
    text = _decode(path, data)
    if path.suffix.lower() == ".jsonl":
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    yield f"line {number}", json.loads(line)
                except json.JSONDecodeError as exc:
                    raise FinetuneDataError(f"{path}: line {number}: invalid JSON: {exc.msg} "
                                            f"(column {exc.colno})") from exc
        return
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        hint = " (one record per line is JSONL: name the file .jsonl)" if exc.msg == "Extra data" \
            else ""
        raise FinetuneDataError(f"{path}: line {exc.lineno}: invalid JSON: {exc.msg}{hint}"
                                ) from exc
    if not isinstance(document, list):
        raise FinetuneDataError(f"{path}: a .json data file must hold a list of records, "
                                f"not a {type(document).__name__}")
    for index, item in enumerate(document):
        yield f"record {index}", item


def _detect(item: Any, where: str, *, asked: DataFormat
            ) -> Literal["alpaca", "sharegpt", "text"]:
    """The format of the first record (which must agree with ``asked`` unless it is auto)."""
    found: Literal["alpaca", "sharegpt", "text"] | None = None
    if isinstance(item, dict):
        if "conversations" in item or "messages" in item:
            found = "sharegpt"
        elif "instruction" in item:
            found = "alpaca"
        elif "text" in item:
            found = "text"
    if asked != "auto":
        if found is not None and found != asked:
            raise FinetuneDataError(f"{where}: data_format is {asked!r} but the data is {found}")
        return asked
    if found is None:
        keys = sorted(item) if isinstance(item, dict) else type(item).__name__
        raise FinetuneDataError(f"{where}: cannot tell the data format from the first record "
                                f"({keys}): expected alpaca (instruction/input/output), "
                                "sharegpt (conversations) or text records; or set data_format")
    return found


def _check_mode(path: Path, mode: Mode, found: str, asked: DataFormat) -> None:
    if asked not in ("auto", found):
        raise FinetuneDataError(f"{path}: data_format is {asked!r} but the data is {found}")
    if mode == "pretrain" and found != "text":
        raise FinetuneDataError(f"{path}: mode 'pretrain' reads plain text (a .txt file, a "
                                f"folder of them, or records with a 'text' string), not {found} "
                                "records; use mode 'instruct'")
    if mode == "instruct" and found == "text":
        raise FinetuneDataError(f"{path}: plain text has no answers to train on: use mode "
                                "'pretrain', or alpaca/sharegpt records")


def _object(item: Any, where: str) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise FinetuneDataError(f"{where}: a record must be a JSON object, "
                                f"not {type(item).__name__}")
    return item


def _string(record: dict[str, Any], key: str, where: str, *, required: bool = True) -> str:
    value = record.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        got = "missing" if key not in record else f"a {type(value).__name__}"
        raise FinetuneDataError(f"{where}: {key!r} must be a string ({got})")
    if required and not value.strip():
        raise FinetuneDataError(f"{where}: {key!r} is empty")
    return value


def _alpaca(item: Any, where: str) -> Record:
    record = _object(item, where)
    instruction = _string(record, "instruction", where)
    extra = _string(record, "input", where, required=False)
    output = _string(record, "output", where)
    user: dict[str, Any] = {"role": "user", "content": instruction}
    if extra.strip():
        user["input"] = extra
    return Record(where=where, messages=(user, {"role": "assistant", "content": output}))


def _sharegpt(item: Any, where: str) -> Record:
    record = _object(item, where)
    key = "conversations" if "conversations" in record else "messages"
    turns = record.get(key)
    if not isinstance(turns, list) or not turns:
        raise FinetuneDataError(f"{where}: 'conversations' must be a non-empty list of "
                                "{from, value} turns")
    messages: list[dict[str, Any]] = []
    for i, turn in enumerate(turns):
        here = f"{where}: {key}[{i}]"
        turn = _object(turn, here)
        speaker, text = (turn.get("from"), turn.get("value")) if "from" in turn else (
            turn.get("role"), turn.get("content"))
        role = _ROLES.get(str(speaker).lower()) if isinstance(speaker, str) else None
        if role is None:
            raise FinetuneDataError(f"{here}: unknown speaker {speaker!r} (expected human, "
                                    "user, gpt, assistant or system)")
        if not isinstance(text, str):
            raise FinetuneDataError(f"{here}: the text ('value') must be a string")
        if role == "system":
            if messages:
                raise FinetuneDataError(f"{here}: a system turn may only come first")
        else:
            answered = sum(m["role"] != "system" for m in messages)
            expected = "user" if answered % 2 == 0 else "assistant"
            if role != expected:
                raise FinetuneDataError(f"{here}: expected a {expected} turn, got {speaker!r}: "
                                        "turns must alternate, starting with the user")
            if not text.strip():
                raise FinetuneDataError(f"{here}: empty {role} turn")
        messages.append({"role": role, "content": text})
    if messages[-1]["role"] != "assistant":
        raise FinetuneDataError(f"{where}: the conversation must end with an assistant answer")
    return Record(where=where, messages=tuple(messages))


def _text_record(item: Any, where: str) -> Record:
    record = _object(item, where)
    return Record(where=where, text=_string(record, "text", where))
