"""A cache of trained models keyed by their full configuration (used by every chapter that trains).

A model trained in one chapter is loaded, not retrained, by later chapters::

    config = {"model": {...}, "train": {"steps": 4000, "batch_size": 128}, "data": "mnist", "loss": "cfm"}
    model = cached_model("mnist-dit-fm", config, build=lambda: DiT(**config["model"]),
                         train=lambda m: training.train(m, loss_fn, data, TrainConfig(**config["train"])))

The key is the SHA-256 of ``name`` + the canonical JSON of ``config`` + diffkit's version, so any change to the
configuration (architecture, training budget, data, loss, seed) trains a new model; the stored file carries
its configuration, which is compared again on load, so a stale model is never used.  Files live in
``$DIFFKIT_CACHE_DIR`` (default ``~/.cache/diffkit``) as safetensors.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from . import checkpoints

__all__ = ["cache_dir", "config_key", "cached_model", "cache_path"]


def cache_dir() -> Path:
    """``$DIFFKIT_CACHE_DIR`` if set, else ``~/.cache/diffkit``."""
    return Path(os.environ.get("DIFFKIT_CACHE_DIR") or Path.home() / ".cache" / "diffkit")


def _canonical(config: Any) -> Any:
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return _canonical(dataclasses.asdict(config))
    if isinstance(config, dict):
        return {str(k): _canonical(v) for k, v in config.items()}
    if isinstance(config, (list, tuple)):
        return [_canonical(v) for v in config]
    if config is None or isinstance(config, (bool, int, float, str)):
        return config
    raise TypeError(f"config must contain only numbers, strings, booleans, None, lists, dicts or dataclasses; "
                    f"got a {type(config).__name__}")


def config_key(name: str, config: Any) -> str:
    from . import __version__

    blob = json.dumps({"name": name, "config": _canonical(config), "diffkit": __version__}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def cache_path(name: str, config: Any) -> Path:
    if not isinstance(name, str) or not name or any(c in name for c in "/\\ "):
        raise ValueError(f"name must be a non-empty string without slashes or spaces, got {name!r}")
    return cache_dir() / f"{name}-{config_key(name, config)[:20]}.safetensors"


def cached_model(name: str, config: Any, build: Callable[[], nn.Module], train: Callable[[nn.Module], nn.Module],
                 *, refresh: bool = False, verbose: bool = True) -> nn.Module:
    """Load the model trained with ``config`` from the cache, or ``train(build())`` it and store the result.

    ``train`` receives a freshly built model and returns the module to keep (e.g. the EMA weights).
    """
    path = cache_path(name, config)
    canonical = _canonical(config)
    if path.exists() and not refresh:
        try:
            tensors, meta = checkpoints.load(path)
            if meta.get("config") == canonical and meta.get("name") == name:
                model = build()
                model.load_state_dict(tensors)
                if verbose:
                    print(f"{name}: loaded from the cache ({path.name}, trained in {meta.get('seconds', '?')} s)")
                return model.eval()
            warnings.warn(f"{path} holds a model for another configuration: retraining", stacklevel=2)
        except (checkpoints.CheckpointError, RuntimeError) as exc:
            warnings.warn(f"{path} could not be loaded ({exc}): retraining", stacklevel=2)
    if verbose:
        print(f"{name}: not in the cache, training ...")
    t0 = time.perf_counter()
    model = train(build())
    if not isinstance(model, nn.Module):
        raise TypeError(f"train must return the trained torch.nn.Module, got {type(model).__name__}")
    seconds = round(time.perf_counter() - t0, 1)
    checkpoints.save(path, model.state_dict(), {"name": name, "config": canonical, "seconds": seconds,
                                                "created": time.strftime("%Y-%m-%d %H:%M:%S")})
    if verbose:
        print(f"{name}: trained in {seconds} s, stored as {path}")
    return model.eval()
