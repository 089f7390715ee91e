"""Checkpoints that make a crash cost at most ``save_steps`` steps, and an atomic final artifact.

Layout of an output folder::

    output_dir/checkpoints/step-000040/  state.pt (trainable weights, optimizer, scheduler, RNG)
                                          progress.json (step, losses, tokens, the run's identity)
    output_dir/final/                     the adapter or full weights, and finetune_result.json

Every folder is written under a temporary name and renamed into place, so a crash at any moment
leaves either the previous checkpoint or the new one, never half of one. Only the newest
checkpoint is kept, and none once ``final`` exists.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from model_workers.finetune.config import (
    RESUMABLE_CHANGES,
    FinetuneConfig,
    FinetuneDataError,
    FinetuneError,
    TrainResult,
)

logger = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
FINAL = "final"
RESULT_FILE = "finetune_result.json"
STATE_FILE = "state.pt"
PROGRESS_FILE = "progress.json"
_TMP = ".tmp-"


@dataclasses.dataclass
class Progress:
    """What a checkpoint records besides tensors (``progress.json``)."""

    step: int = 0
    losses: list[float] = dataclasses.field(default_factory=list)
    tokens_seen: int = 0
    run: dict[str, Any] = dataclasses.field(default_factory=dict)


def run_identity(config: FinetuneConfig, *, base_path: Path, template: str,
                 fingerprint: str) -> dict[str, Any]:
    """Everything that decides a run's arithmetic; a resume must find the same."""
    settings = {k: v for k, v in config.model_dump(mode="json").items()
                if k not in RESUMABLE_CHANGES}
    return {"config": settings, "base": str(Path(base_path).resolve()), "template": template,
            "data_fingerprint": fingerprint}


def check_same_run(found: dict[str, Any], run: dict[str, Any], where: Path) -> None:
    if found.get("data_fingerprint") != run["data_fingerprint"]:
        raise FinetuneDataError(
            f"the data changed since {where} was written (sha256 "
            f"{str(found.get('data_fingerprint'))[:12]}… → {run['data_fingerprint'][:12]}…); "
            "train the new data into a new output folder")
    changed = [f"{key}: {found.get('config', {}).get(key)!r} → {value!r}"
               for key, value in run["config"].items() if found.get("config", {}).get(key) != value]
    changed += [f"{key}: {found.get(key)!r} → {run[key]!r}" for key in ("base", "template")
                if found.get(key) != run[key]]
    if changed:
        raise FinetuneError(f"{where} belongs to a run with other settings ({'; '.join(changed)}"
                            "); resume with the same settings or use a new output folder")


def clean_partial(output_dir: Path) -> None:
    """Remove what a crash left half-written (temporary folders)."""
    for parent in (output_dir, output_dir / CHECKPOINTS):
        if parent.is_dir():
            for path in parent.glob(f"{_TMP}*"):
                shutil.rmtree(path, ignore_errors=True)


def latest(output_dir: Path) -> Path | None:
    folder = output_dir / CHECKPOINTS
    if not folder.is_dir():
        return None
    done = [p for p in folder.glob("step-*") if (p / PROGRESS_FILE).is_file()]
    return max(done, key=lambda p: int(p.name.split("-")[1])) if done else None


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def save(output_dir: Path, progress: Progress, *, model: Any, optimizer: Any, scheduler: Any,
         scaler: Any) -> Path:
    """Write a checkpoint of ``progress.step`` and drop the older ones; its folder."""
    folder = output_dir / CHECKPOINTS
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f"{_TMP}{uuid.uuid4().hex}"
    tmp.mkdir()
    state = {
        "params": {n: p.detach().cpu() for n, p in model.named_parameters() if p.requires_grad},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "rng": _rng_state(),
    }
    torch.save(state, tmp / STATE_FILE)
    _write_json(tmp / PROGRESS_FILE, dataclasses.asdict(progress))
    final = folder / f"step-{progress.step:06d}"
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in folder.glob("step-*"):
        if old != final:
            shutil.rmtree(old, ignore_errors=True)
    logger.info("checkpoint at step %d: %s", progress.step, final)
    return final


def restore(path: Path, run: dict[str, Any], *, model: Any, optimizer: Any, scheduler: Any,
            scaler: Any, device: torch.device) -> Progress:
    """Load the checkpoint at ``path`` into the model, optimizer, scheduler and RNGs."""
    progress = Progress(**json.loads((path / PROGRESS_FILE).read_text()))
    check_same_run(progress.run, run, path)
    state = torch.load(path / STATE_FILE, map_location="cpu", weights_only=True)
    params = dict(model.named_parameters())
    missing = sorted(n for n, p in params.items() if p.requires_grad and n not in state["params"])
    if missing:
        raise FinetuneError(f"{path} lacks trainable weights ({', '.join(missing[:3])}…)")
    with torch.no_grad():
        for name, value in state["params"].items():
            params[name].copy_(value.to(device))
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and state["scaler"] is not None:
        scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(state["rng"]["cpu"])
    if "cuda" in state["rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng"]["cuda"])
    return progress


def finished(output_dir: Path, run: dict[str, Any]) -> TrainResult | None:
    """The result recorded in ``output_dir/final`` by an earlier call, else None."""
    record = output_dir / FINAL / RESULT_FILE
    if not record.is_file():
        return None
    saved = json.loads(record.read_text())
    check_same_run(saved.pop("run"), run, output_dir / FINAL)
    shutil.rmtree(output_dir / CHECKPOINTS, ignore_errors=True)
    saved["output_path"] = Path(saved["output_path"])
    return TrainResult(**saved)


def write_final(output_dir: Path, result: TrainResult, run: dict[str, Any],
                write: Callable[[Path], None]) -> None:
    """Have ``write`` fill a temporary folder, record ``result`` in it, rename it to ``final``,
    then remove the checkpoints."""
    tmp = output_dir / f"{_TMP}final-{uuid.uuid4().hex}"
    tmp.mkdir(parents=True)
    write(tmp)
    record = {**dataclasses.asdict(result), "output_path": str(result.output_path), "run": run}
    _write_json(tmp / RESULT_FILE, record)
    final = output_dir / FINAL
    if final.exists():  # a final without its record: an interrupted copy by hand, not ours
        shutil.rmtree(final)
    os.replace(tmp, final)
    shutil.rmtree(output_dir / CHECKPOINTS, ignore_errors=True)


def _write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
