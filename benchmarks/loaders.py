"""Read MMLU, C-Eval and CMMLU in their official layouts, from a folder or straight from a zip.

Layouts (relative to the dataset root; a zip may wrap them in a top-level folder):

* MMLU: ``data/{dev,val,test}/<subject>_<split>.csv``, no header: question, A, B, C, D, answer.
* C-Eval: ``{dev,val,test}/<subject>_<split>.csv``, header ``id,question,A,B,C,D,answer``
  (``explanation`` added in dev; test has no ``answer``).
* CMMLU: ``{dev,test}/<subject>.csv``, header ``,Question,A,B,C,D,Answer``.

Every file is UTF-8. A malformed file or row raises :class:`BenchmarkDataError` naming the path
and line; nothing is skipped.
"""

from __future__ import annotations

import csv
import hashlib
import io
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from benchmarks.suites import Suite, get_suite

LETTERS = ("A", "B", "C", "D")
_HEADERS: dict[str, dict[str, tuple[str, ...] | None]] = {  # expected header per suite and split; None: the file has no header row
    "mmlu": {"dev": None, "val": None, "test": None},
    "ceval": {
        "dev": ("id", "question", "A", "B", "C", "D", "answer", "explanation"),
        "val": ("id", "question", "A", "B", "C", "D", "answer"),
        "test": ("id", "question", "A", "B", "C", "D"),
    },
    "cmmlu": {
        "dev": ("", "Question", "A", "B", "C", "D", "Answer"),
        "test": ("", "Question", "A", "B", "C", "D", "Answer"),
    },
}


class BenchmarkDataError(ValueError):
    """A benchmark file that does not follow its official layout."""

    def __init__(self, path: str, message: str, *, line: int | None = None) -> None:
        where = f"{path}:{line}" if line is not None else path
        super().__init__(f"{where}: {message}")
        self.path, self.line = path, line


@dataclass(frozen=True, slots=True)
class Item:
    """One multiple-choice question."""

    suite: str
    subject: str
    split: str
    index: int  # 0-based position in its file
    id: str  # the file's id column (C-Eval, CMMLU), else the index
    question: str
    choices: tuple[str, str, str, str]
    answer: str | None  # "A".."D"; None where the split hides answers (C-Eval test)
    explanation: str | None = None


@dataclass(slots=True)
class BenchmarkData:
    """Items of one suite by split, and the sha256 of every file read (the fingerprint)."""

    suite: str
    items: dict[str, list[Item]] = field(default_factory=dict)
    file_hashes: dict[str, str] = field(default_factory=dict)  # split/file name → sha256

    def by_subject(self, split: str) -> dict[str, list[Item]]:
        grouped: dict[str, list[Item]] = {}
        for item in self.items.get(split, []):
            grouped.setdefault(item.subject, []).append(item)
        return grouped

    @property
    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        for path in sorted(self.file_hashes):
            digest.update(f"{path}\0{self.file_hashes[path]}\n".encode())
        return digest.hexdigest()


class _Source:
    """A folder or a zip, read as relative POSIX paths to bytes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.zip = zipfile.ZipFile(path) if path.is_file() else None
        if self.zip is None and not path.is_dir():
            raise BenchmarkDataError(str(path), "no such folder or zip file")

    def files(self) -> list[str]:
        if self.zip is not None:
            names = [n for n in self.zip.namelist() if not n.endswith("/")]
        else:
            names = [p.relative_to(self.path).as_posix() for p in self.path.rglob("*") if p.is_file()]
        return sorted(n for n in names if not n.startswith("__MACOSX/"))

    def read(self, name: str) -> bytes:
        if self.zip is not None:
            return self.zip.read(name)
        return (self.path / name).read_bytes()

    def display(self, name: str) -> str:
        return f"{self.path}!{name}" if self.zip is not None else str(self.path / name)

    def close(self) -> None:
        if self.zip is not None:
            self.zip.close()


def _subject_of(suite: str, split: str, filename: str) -> str | None:
    suffix = ".csv" if suite == "cmmlu" else f"_{split}.csv"
    return filename[: -len(suffix)] if filename.endswith(suffix) else None


def _split_files(source: _Source, suite: Suite, split: str) -> dict[str, str]:
    """``subject → path`` for one split, under a single root (any top-level folder prefix)."""
    found: dict[str, dict[str, str]] = {}  # root → subject → path
    for name in source.files():
        parts = PurePosixPath(name).parts
        if len(parts) < 2 or parts[-2] != split or not parts[-1].endswith(".csv"):
            continue
        subject = _subject_of(suite.name, split, parts[-1])
        if subject is None:
            continue
        found.setdefault("/".join(parts[:-2]), {})[subject] = name
    if not found:
        raise BenchmarkDataError(str(source.path), f"no {suite.title} {split} files found")
    if len(found) > 1:
        roots = ", ".join(repr(r) for r in sorted(found))
        raise BenchmarkDataError(str(source.path), f"{split} files under several roots: {roots}")
    (files,) = found.values()
    for subject, name in files.items():
        if subject not in suite.subjects:
            raise BenchmarkDataError(source.display(name), f"unknown {suite.title} subject "
                                     f"{subject!r}")
    return files


def _parse(data: bytes, *, display: str, suite: str, subject: str, split: str) -> list[Item]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise BenchmarkDataError(display, f"not UTF-8 ({exc.reason})", line=line) from None
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    header = _HEADERS[suite][split]
    rows: list[tuple[int, list[str]]] = []
    start = 1
    try:
        for row in reader:
            rows.append((start, row))
            start = reader.line_num + 1
    except csv.Error as exc:
        raise BenchmarkDataError(display, f"bad CSV: {exc}", line=start) from None
    if header is not None:
        if not rows or tuple(rows[0][1]) != header:
            got = rows[0][1] if rows else "an empty file"
            raise BenchmarkDataError(display, f"expected header {','.join(header)}, got {got}",
                                     line=1)
        rows = rows[1:]
    width = 6 if header is None else len(header)
    items = []
    for index, (line, row) in enumerate(rows):
        if len(row) != width:
            raise BenchmarkDataError(display, f"expected {width} fields, got {len(row)}", line=line)
        answer: str | None
        explanation: str | None = None
        if header is None:
            row_id, (question, a, b, c, d, answer) = str(index), row
        else:
            row_id, question, a, b, c, d = row[:6]
            answer = row[6] if width > 6 else None
            if width > 7:
                explanation = row[7]
        if answer is not None and answer not in LETTERS:
            raise BenchmarkDataError(display, f"answer must be one of A, B, C, D, got {answer!r}",
                                     line=line)
        if not question.strip():
            raise BenchmarkDataError(display, "empty question", line=line)
        items.append(Item(suite=suite, subject=subject, split=split, index=index, id=row_id,
                          question=question, choices=(a, b, c, d), answer=answer,
                          explanation=explanation))
    return items


def load_benchmark(path: str | Path, suite: str, *, splits: Iterable[str] | None = None,
                   subjects: Iterable[str] | None = None) -> BenchmarkData:
    """Load ``suite`` from a folder or zip at ``path``.

    ``splits`` defaults to all the suite's splits; ``subjects`` (default: every subject present)
    restricts what is read. Items come in subject order, then file order.
    """
    table = get_suite(suite)
    wanted = None if subjects is None else [table.subject(s).name for s in subjects]
    chosen = list(table.splits if splits is None else splits)
    for split in chosen:
        if split not in table.splits:
            raise ValueError(f"{table.title} has no split {split!r} (it has "
                             f"{', '.join(table.splits)})")
    result = BenchmarkData(suite=table.name)
    source = _Source(Path(path))
    try:
        for split in chosen:
            files = _split_files(source, table, split)
            names = sorted(files) if wanted is None else wanted
            items: list[Item] = []
            for subject in names:
                if subject not in files:
                    raise BenchmarkDataError(str(source.path), f"no {split} file for {subject}")
                data = source.read(files[subject])
                relative = f"{split}/{PurePosixPath(files[subject]).name}"  # same for zip/folder
                result.file_hashes[relative] = hashlib.sha256(data).hexdigest()
                items += _parse(data, display=source.display(files[subject]), suite=table.name,
                                subject=subject, split=split)
            result.items[split] = items
    finally:
        source.close()
    return result
