"""Checkpoints in safetensors, written atomically (used by :mod:`diffkit.training` and :mod:`diffkit.cache`).

A checkpoint is one ``.safetensors`` file: tensors under prefixes (``model.``, ``ema.``, ``optim.``, ``rng.``)
plus string metadata (JSON).  :func:`save` writes to a temporary file in the same folder, flushes it to disk
and renames it over the target, so a crash mid-write leaves either the old file or the new one — never a
truncated file.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file
from torch import Tensor

__all__ = ["save", "load", "read_metadata", "flatten_optimizer", "unflatten_optimizer", "CheckpointError"]


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, unreadable or does not match what it is loaded into."""


def save(path: str | os.PathLike, tensors: dict[str, Tensor], metadata: dict[str, Any] | None = None) -> Path:
    """Write ``tensors`` (and JSON-serialisable ``metadata``) to ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {k: json.dumps(v) for k, v in (metadata or {}).items()}
    # safetensors wants contiguous CPU tensors that do not share memory
    flat = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(flat, tmp, metadata=meta)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The metadata stored by :func:`save` (decoded from JSON)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (OSError, SafetensorError) as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from exc
    return {k: json.loads(v) for k, v in meta.items()}


def load(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Return ``(tensors, metadata)`` of a checkpoint."""
    if not Path(path).exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        tensors = load_file(str(path), device=str(device))
    except (OSError, SafetensorError) as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from exc
    return tensors, read_metadata(path)


def prefixed(prefix: str, state: dict[str, Tensor]) -> dict[str, Tensor]:
    return {f"{prefix}.{k}": v for k, v in state.items()}


def unprefixed(prefix: str, tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    n = len(prefix) + 1
    return {k[n:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}


def flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Split ``optimizer.state_dict()`` into tensors (per-parameter state) and JSON (hyper-parameters, scalars)."""
    tensors, scalars = {}, {}
    for idx, pstate in state["state"].items():
        for name, value in pstate.items():
            if isinstance(value, Tensor):
                tensors[f"{idx}.{name}"] = value
            else:
                scalars[f"{idx}.{name}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def unflatten_optimizer(tensors: dict[str, Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`flatten_optimizer`."""
    state: dict[int, dict[str, Any]] = {}
    for key, value in list(tensors.items()) + list(meta["scalars"].items()):
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    return {"state": state, "param_groups": meta["param_groups"]}
