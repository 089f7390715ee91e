"""Delta weights, the way Vicuna, Alpaca and Koala were published: ``target = base + delta``.

A delta directory looks like a checkpoint (the target's config and tokenizer, safetensors
weights) whose tensors are ``target − base``. Both directions work tensor by tensor straight
from the weight files, so memory stays near one output shard, whatever the model size.

* **Vocabulary extension.** Vicuna's deltas added a pad token (base 32000 rows, delta 32001).
  When a tensor's first dimension is the vocabulary size of each config and the delta's is the
  larger, the base is added to the first rows and the extra rows are taken from the delta as
  they are (they are the new tokens' weights).
* **Exact round trip.** By default :func:`make_delta` stores each tensor in the narrowest of
  (the target's dtype, float32, float64) for which ``apply_delta`` gives the target back bit for
  bit, and records the target's dtype in the safetensors metadata. ``dtype="float16"`` instead
  stores the compact, FastChat-compatible form whose round trip is only approximately exact.
* **Other deltas.** ``apply_delta`` also reads foreign deltas (``pytorch_model.bin``, sharded or
  not): without our metadata, a result tensor takes the delta tensor's dtype. The sum is
  computed in at least float32 and rounded once.
* Integer and boolean tensors (buffers) are not differences: the delta holds the target's value.
"""

from __future__ import annotations

import json
import logging
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

logger = logging.getLogger(__name__)

MAX_SHARD_BYTES = 2 * 1024**3  # one output shard is held in memory before it is written
TARGET_DTYPES_KEY = "delta_target_dtypes"  # safetensors metadata: name -> dtype of the result
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".gguf")


class DeltaError(ValueError):
    """The base, target or delta checkpoints cannot be combined; nothing was written."""


# ---------------------------------------------------------------------------------- reading


class _Weights:
    """The tensors of one checkpoint directory, read one at a time without loading the rest."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._handles: dict[str, Any] = {}
        self._recorded_dtypes: dict[str, dict[str, str]] = {}
        index_names = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
        for index_name in index_names:
            if (directory / index_name).is_file():
                weight_map = json.loads((directory / index_name).read_text())["weight_map"]
                self.files = dict(weight_map)
                break
        else:
            single = [n for n in ("model.safetensors", "pytorch_model.bin")
                      if (directory / n).is_file()]
            if not single:
                raise DeltaError(f"{directory}: no weights (looked for model.safetensors, "
                                 "pytorch_model.bin and their .index.json)")
            self.files = dict.fromkeys(self._open(single[0]).keys(), single[0])
        self.names = sorted(self.files)

    def _open(self, file: str) -> Any:  # a safetensors handle, or a dict of mmap'd tensors
        if file not in self._handles:
            path = self.directory / file
            if not path.is_file():
                raise DeltaError(f"{path} is missing (named in the checkpoint's index)")
            if file.endswith(".safetensors"):
                self._handles[file] = safe_open(str(path), framework="pt", device="cpu")
            else:
                try:
                    state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
                except RuntimeError:  # the pre-zip format cannot be memory-mapped
                    state = torch.load(path, map_location="cpu", weights_only=True)
                self._handles[file] = state
        return self._handles[file]

    def shape(self, name: str) -> tuple[int, ...]:
        handle = self._open(self.files[name])
        if isinstance(handle, dict):
            return tuple(handle[name].shape)
        return tuple(handle.get_slice(name).get_shape())

    def get(self, name: str) -> torch.Tensor:
        handle = self._open(self.files[name])
        return handle[name] if isinstance(handle, dict) else handle.get_tensor(name)

    def target_dtype(self, name: str) -> torch.dtype | None:
        """The dtype recorded by :func:`make_delta` for ``name``'s result, if any."""
        file = self.files[name]
        if file not in self._recorded_dtypes:
            handle = self._open(file)
            metadata = {} if isinstance(handle, dict) else handle.metadata() or {}
            self._recorded_dtypes[file] = json.loads(metadata.get(TARGET_DTYPES_KEY, "{}"))
        recorded = self._recorded_dtypes[file].get(name)
        return getattr(torch, recorded) if recorded else None


def _read_config(directory: Path, role: str) -> dict:
    path = Path(directory) / "config.json"
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DeltaError(f"{role} config {path} is not readable: {exc}") from exc
    if not isinstance(config, dict) or "model_type" not in config:
        raise DeltaError(f"{role} config {path} has no model_type")
    return config


def _check_compatible(
    base: _Weights, other: _Weights, base_config: dict, other_config: dict, role: str
) -> dict[str, int]:
    """Refuse unless ``other`` (target or delta) matches ``base`` tensor for tensor.

    Returns the tensors whose vocabulary rows ``other`` extends, with the base's row count.
    """
    if base_config["model_type"] != other_config["model_type"]:
        raise DeltaError(f"the base is a {base_config['model_type']!r} model but the {role} is "
                         f"a {other_config['model_type']!r} model: a delta only combines with "
                         "the architecture it was made from")
    unpaired = sorted(set(base.names) ^ set(other.names))
    if unpaired:
        has, lacks = ("base", role) if unpaired[0] in base.files else (role, "base")
        raise DeltaError(f"tensor {unpaired[0]!r} is in the {has} but not in the {lacks} "
                         f"({len(unpaired)} unpaired tensors)")
    base_vocab, other_vocab = base_config.get("vocab_size"), other_config.get("vocab_size")
    extended: dict[str, int] = {}
    for name in base.names:
        base_shape, other_shape = base.shape(name), other.shape(name)
        if base_shape == other_shape:
            continue
        grows_vocab = (
            len(base_shape) == len(other_shape) >= 1
            and base_shape[1:] == other_shape[1:]
            and (base_shape[0], other_shape[0]) == (base_vocab, other_vocab)
            and other_shape[0] > base_shape[0]
        )
        if not grows_vocab:
            raise DeltaError(f"tensor {name!r} has shape {list(base_shape)} in the base but "
                             f"{list(other_shape)} in the {role}")
        extended[name] = base_shape[0]
    return extended


# ---------------------------------------------------------------------------------- writing


@contextmanager
def _staging(out_dir: Path) -> Iterator[Path]:
    """A temporary directory next to ``out_dir``, renamed to it only if the block succeeds."""
    if out_dir.exists():
        raise DeltaError(f"{out_dir} already exists: remove it or choose another directory")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    # mkdir, not mkdtemp: the directory keeps the umask's permissions (mkdtemp's are 0700)
    staging = out_dir.parent / f".{out_dir.name}.partial-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        yield staging
        staging.rename(out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


class _ShardWriter:
    """Writes tensors into safetensors shards of at most ``max_bytes`` (plus one tensor)."""

    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory, self.max_bytes = directory, max_bytes
        self.pending: dict[str, torch.Tensor] = {}
        self.pending_dtypes: dict[str, str] = {}
        self.shards: list[list[str]] = []
        self.total_bytes = 0

    def add(self, name: str, tensor: torch.Tensor, target_dtype: torch.dtype) -> None:
        self.pending[name] = tensor.contiguous()
        self.pending_dtypes[name] = str(target_dtype).removeprefix("torch.")
        if sum(t.nbytes for t in self.pending.values()) >= self.max_bytes:
            self._flush()

    def _flush(self) -> None:
        if not self.pending:
            return
        metadata = {"format": "pt", TARGET_DTYPES_KEY: json.dumps(self.pending_dtypes)}
        save_file(self.pending, str(self._part(len(self.shards))), metadata=metadata)
        self.total_bytes += sum(t.nbytes for t in self.pending.values())
        self.shards.append(list(self.pending))
        self.pending, self.pending_dtypes = {}, {}

    def _part(self, i: int) -> Path:
        return self.directory / f"shard-{i:05d}.part"

    def close(self) -> None:
        """Write the last shard and give the shards their final names (plus the index)."""
        self._flush()
        if len(self.shards) == 1:
            self._part(0).rename(self.directory / "model.safetensors")
            return
        weight_map = {}
        for i, names in enumerate(self.shards):
            file = f"model-{i + 1:05d}-of-{len(self.shards):05d}.safetensors"
            self._part(i).rename(self.directory / file)
            weight_map.update(dict.fromkeys(names, file))
        index = {"metadata": {"total_size": self.total_bytes}, "weight_map": weight_map}
        (self.directory / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))


def _copy_non_weights(src: Path, dst: Path) -> None:
    """Copy config, generation config, tokenizer and other small files (not the weights)."""
    for path in src.iterdir():
        if path.is_file() and not path.name.startswith(".") and not (
            path.name.endswith(_WEIGHT_SUFFIXES) or path.name.endswith(".index.json")
        ):
            shutil.copy2(path, dst / path.name)


# ---------------------------------------------------------------------------------- arithmetic


def _add(base: torch.Tensor, delta: torch.Tensor, out_dtype: torch.dtype) -> torch.Tensor:
    """``base + delta`` computed in at least float32 and rounded once to ``out_dtype``."""
    compute = torch.promote_types(torch.promote_types(base.dtype, delta.dtype), torch.float32)
    return (base.to(compute) + delta.to(compute)).to(out_dtype)


def _combine(base: torch.Tensor, delta: torch.Tensor, out_dtype: torch.dtype) -> torch.Tensor:
    """What apply_delta makes of one tensor (vocabulary rows beyond the base's come as-is)."""
    if not (delta.is_floating_point() and base.is_floating_point()):
        return delta.clone()
    if base.shape == delta.shape:
        return _add(base, delta, out_dtype)
    rows = base.shape[0]
    return torch.cat([_add(base, delta[:rows], out_dtype), delta[rows:].to(out_dtype)])


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and bool(((a == b) | (a.isnan() & b.isnan())).all())


def _difference(base: torch.Tensor, target: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    """``target − base`` in ``dtype``; None picks the narrowest dtype that round-trips exactly."""
    if not (target.is_floating_point() and base.is_floating_point()):
        return target.clone()
    exact = target.to(torch.float64, copy=True)
    if base.shape == target.shape:
        exact -= base.to(torch.float64)
    else:  # vocabulary extension: the new rows are stored as they are
        exact[: base.shape[0]] -= base.to(torch.float64)
    if dtype is not None:
        return exact.to(dtype)
    candidates = [target.dtype, torch.float32, torch.float64]
    for candidate in dict.fromkeys(c for c in candidates if c.itemsize >= target.dtype.itemsize):
        delta = exact.to(candidate)
        if _same(_combine(base, delta, target.dtype), target):
            return delta
    logger.warning("delta of %s elements cannot round-trip exactly even in float64; "
                   "stored in float64", target.numel())
    return exact


# ---------------------------------------------------------------------------------- public


def make_delta(
    base_dir: Path,
    target_dir: Path,
    out_dir: Path,
    *,
    dtype: str | None = None,
    max_shard_bytes: int = MAX_SHARD_BYTES,
) -> Path:
    """Save ``target − base`` as a checkpoint directory (config and tokenizer of the target).

    ``dtype=None`` keeps the round trip exact (see the module docstring); a dtype name such as
    ``"float16"`` stores every floating tensor in that dtype. Raises :class:`DeltaError` (and
    writes nothing) when the two checkpoints do not match tensor for tensor.
    """
    base_dir, target_dir, out_dir = Path(base_dir), Path(target_dir), Path(out_dir)
    store_dtype = _parse_dtype(dtype)
    base_config = _read_config(base_dir, "base")
    target_config = _read_config(target_dir, "target")
    base, target = _Weights(base_dir), _Weights(target_dir)
    _check_compatible(base, target, base_config, target_config, "target")
    with _staging(out_dir) as staging:
        writer = _ShardWriter(staging, max_shard_bytes)
        for name in target.names:
            target_tensor = target.get(name)
            writer.add(name, _difference(base.get(name), target_tensor, store_dtype),
                       target_tensor.dtype)
        writer.close()
        _copy_non_weights(target_dir, staging)
    logger.info("delta of %s against %s saved to %s", target_dir, base_dir, out_dir)
    return out_dir


def apply_delta(
    base_dir: Path, delta_dir: Path, out_dir: Path, *, max_shard_bytes: int = MAX_SHARD_BYTES
) -> Path:
    """Materialise ``base + delta`` into ``out_dir`` (config and tokenizer of the delta).

    Everything is checked before anything is written: both configs readable, the same
    ``model_type``, the same tensor names and shapes (vocabulary extension aside). On failure
    :class:`DeltaError` names the problem and ``out_dir`` is not created.
    """
    base_dir, delta_dir, out_dir = Path(base_dir), Path(delta_dir), Path(out_dir)
    base_config = _read_config(base_dir, "base")
    delta_config = _read_config(delta_dir, "delta")
    base, delta = _Weights(base_dir), _Weights(delta_dir)
    _check_compatible(base, delta, base_config, delta_config, "delta")
    with _staging(out_dir) as staging:
        writer = _ShardWriter(staging, max_shard_bytes)
        for name in delta.names:
            delta_tensor = delta.get(name)
            out_dtype = delta.target_dtype(name) or delta_tensor.dtype
            writer.add(name, _combine(base.get(name), delta_tensor, out_dtype), out_dtype)
        writer.close()
        _copy_non_weights(delta_dir, staging)
    logger.info("%s + %s saved to %s", base_dir, delta_dir, out_dir)
    return out_dir


def _parse_dtype(name: str | None) -> torch.dtype | None:
    if name is None:
        return None
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise DeltaError(f"dtype must name a torch floating-point dtype, got {name!r}")
    return dtype
