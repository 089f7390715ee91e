"""Tiny samples of MMLU, C-Eval and CMMLU in their official layouts (folder and zip forms)."""

from __future__ import annotations

import csv
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

Rows = list[list[str]]


def _mc(prefix: str, n: int, *, answers: str = "ABCDA", explanation: bool = False) -> Rows:
    rows = []
    for i in range(n):
        row = [f"{prefix} q{i}", f"{prefix} a{i}", f"{prefix} b{i}", f"{prefix} c{i}",
               f"{prefix} d{i}", answers[i % len(answers)]]
        if explanation:
            row.append(f"{prefix} 解析{i}")
        rows.append(row)
    return rows


def write_csv(path: Path, rows: Rows, header: list[str] | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        if header is not None:
            writer.writerow(header)
        writer.writerows(rows)


def write_mmlu(root: Path) -> Path:
    for subject in ("abstract_algebra", "anatomy"):
        dev = _mc(subject, 5)
        test = _mc(f"{subject} test", 3, answers="BCD")
        if subject == "anatomy":  # quoting: a comma, a quote and a line break in one question
            test[1][0] = 'Which "bone",\nif any?'
        write_csv(root / "data" / "dev" / f"{subject}_dev.csv", dev)
        write_csv(root / "data" / "val" / f"{subject}_val.csv", _mc(f"{subject} val", 2))
        write_csv(root / "data" / "test" / f"{subject}_test.csv", test)
    return root


def write_ceval(root: Path) -> Path:
    head = ["id", "question", "A", "B", "C", "D", "answer"]
    for subject in ("logic", "college_physics"):
        dev = [[str(i), *row] for i, row in enumerate(_mc(f"{subject}逻辑", 5, explanation=True))]
        val = [[str(i), *row] for i, row in enumerate(_mc(f"{subject}验证", 3, answers="CAB"))]
        test = [[str(i), *row[:5]] for i, row in enumerate(_mc(f"{subject}测试", 2))]
        write_csv(root / "dev" / f"{subject}_dev.csv", dev, [*head, "explanation"])
        write_csv(root / "val" / f"{subject}_val.csv", val, head)
        write_csv(root / "test" / f"{subject}_test.csv", test, head[:6])
    return root


def write_cmmlu(root: Path) -> Path:
    head = ["", "Question", "A", "B", "C", "D", "Answer"]
    for subject in ("logical", "ancient_chinese"):
        dev = [[str(i), *row] for i, row in enumerate(_mc(f"{subject}题", 5))]
        test = [[str(i), *row] for i, row in enumerate(_mc(f"{subject}试", 3, answers="DBA"))]
        write_csv(root / "dev" / f"{subject}.csv", dev, head)
        write_csv(root / "test" / f"{subject}.csv", test, head)
    return root


WRITERS: dict[str, Callable[[Path], Path]] = {
    "mmlu": write_mmlu, "ceval": write_ceval, "cmmlu": write_cmmlu}


def zip_folder(folder: Path, target: Path, *, prefix: str = "") -> Path:
    with zipfile.ZipFile(target, "w") as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, prefix + path.relative_to(folder).as_posix())
    return target


@pytest.fixture()
def sample(tmp_path: Path) -> Callable[[str], Path]:
    """``sample("ceval")`` writes a tiny C-Eval folder and returns it."""

    def make(suite: str) -> Path:
        return WRITERS[suite](tmp_path / suite)

    return make


@pytest.fixture(scope="session")
def served_llama(tmp_path_factory: pytest.TempPathFactory,
                 tiny_models: dict[str, Path]) -> Iterator[Any]:
    """``arena serve`` with the tiny llama registered as "tiny-llama" and one ``arena worker``
    serving it, shared by the session's tests (the control plane is yielded;
    ``.extra["worker"]`` is the worker)."""
    import httpx

    from tests.conftest import (
        ADMIN_KEY,
        Proc,
        _control_plane,
        arena_cmd,
        free_port,
        register,
        spawn,
        wait_for,
    )

    root = tmp_path_factory.mktemp("served")
    planes = _control_plane(root)
    plane = next(planes)
    worker: Proc | None = None
    try:
        assert register(plane, name="tiny-llama",
                        source=str(tiny_models["llama"])).status_code == 201
        port = free_port()
        log = root / "worker.log"
        proc = spawn(arena_cmd("worker", "--controller", plane.url, "--port", str(port),
                               "--api-key", ADMIN_KEY, "--log-level", "warning",
                               "--checkpoint", "tiny-llama"), log=log, env={})
        worker = Proc(proc=proc, log=log, url=f"http://127.0.0.1:{port}")
        wait_for(lambda: any(r["address"] == worker.url and r["healthy"]  # type: ignore[union-attr]
                             for r in httpx.get(plane.url + "/api/workers").json()),
                 timeout_s=120, what="worker registration", proc=proc)
        plane.extra["worker"] = worker
        yield plane
    finally:
        if worker is not None:
            worker.stop()
        planes.close()
