"""Fine-tuning: LoRA, QLoRA or full, on instructions or plain text, as a recipe.

``validate_data`` and :class:`FinetuneConfig` import neither torch nor transformers (the control
plane checks a job with them); :func:`train` loads them when it is first asked for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from model_workers.finetune.config import (
    FinetuneConfig,
    FinetuneDataError,
    FinetuneError,
    TrainingCancelled,
    TrainProgress,
    TrainResult,
)
from model_workers.finetune.data import DataSummary, validate_data

if TYPE_CHECKING:
    from model_workers.finetune.recipe import train

__all__ = ["DataSummary", "FinetuneConfig", "FinetuneDataError", "FinetuneError",
           "TrainProgress", "TrainResult", "TrainingCancelled", "train", "validate_data"]


def __getattr__(name: str) -> Any:
    if name == "train":
        from model_workers.finetune.recipe import train

        return train
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
