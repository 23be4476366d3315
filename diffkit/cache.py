"""A cache of trained models keyed by everything that shapes them (used by every chapter that trains).

A model trained in one chapter is loaded, not retrained, by later chapters.  The simplest call lets the cache
train with a :class:`~diffkit.training.Trainer`::

    model, info = cached_model("toy-mlp-fm", build=lambda: MLP(num_classes=8), objective=losses.objective("cfm"),
                               data=sampler, config=TrainConfig(steps=2000))

Its key covers the name, the TrainConfig, the objective (kind, path, target, options:
:meth:`diffkit.losses.Objective.to_dict`), a fingerprint of the data (:func:`fingerprint`: the tensors' bytes, or
a data function's first draws), the model's class and constructor arguments, and diffkit's version, so changing
any of them trains a new model; the file is a :func:`diffkit.checkpoints.save_model` file (it also loads with
``checkpoints.load_model``).  A custom training closure still works, ``cached_model(name, config, build,
train)``, and then everything the closure uses must be in ``config`` — or passed as ``objective=`` and ``data=``,
which join the key.  The stored file carries its key's content, compared again on load, so a stale model is
never used.  Files live in ``$DIFFKIT_CACHE_DIR`` (default ``~/.cache/diffkit``) as safetensors; the folder is
checked to be writable before any training starts.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from . import checkpoints
from .losses import Objective

__all__ = ["cache_dir", "config_key", "cached_model", "cache_path", "fingerprint", "seconds_saved"]

_LOADED_RUNS: dict[str, float] = {}  # run key -> training seconds its file records, for runs loaded here
_TRAINED_RUNS: set[str] = set()  # run keys trained in this process

#: Rows a data function is asked for when it is fingerprinted.
FINGERPRINT_ROWS = 256


def cache_dir() -> Path:
    """``$DIFFKIT_CACHE_DIR`` if set, else ``~/.cache/diffkit``."""
    return Path(os.environ.get("DIFFKIT_CACHE_DIR") or Path.home() / ".cache" / "diffkit")


def _hash_tensor(h: Any, x: Tensor) -> None:
    x = x.detach().cpu().contiguous()
    h.update(f"{x.dtype}{tuple(x.shape)}".encode())
    h.update(x.view(torch.uint8).numpy().tobytes() if x.numel() else b"")


def fingerprint(data: Any) -> str:
    """A SHA-256 (hex) of training data: a tensor, an ``(x, y)`` pair (``y`` may be ``None``), or a data function
    ``data(batch_size, generator) -> (x, y)``, fingerprinted by its first :data:`FINGERPRINT_ROWS` rows drawn
    from a generator seeded with 0 (so it must draw from the generator it is given; checked)."""
    h = hashlib.sha256()
    if callable(data) and not isinstance(data, Tensor):
        draws = [data(FINGERPRINT_ROWS, torch.Generator().manual_seed(0)) for _ in range(2)]
        prints = [fingerprint(d if isinstance(d, tuple) else (d, None)) for d in draws]
        if prints[0] != prints[1]:
            raise ValueError("data: two draws with the same seed differ, so the data cannot be fingerprinted; "
                             "draw from the generator passed in (data(batch_size, generator))")
        h.update(b"function" + prints[0].encode())
    elif isinstance(data, Tensor):
        _hash_tensor(h, data)
    elif isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], Tensor) and \
            (data[1] is None or isinstance(data[1], Tensor)):
        _hash_tensor(h, data[0])
        h.update(b"labels" if data[1] is not None else b"no labels")
        if data[1] is not None:
            _hash_tensor(h, data[1])
    else:
        raise TypeError(f"data must be a tensor, a tuple (x, y) of tensors or a data function, got "
                        f"{type(data).__name__}")
    return h.hexdigest()


def _canonical(config: Any) -> Any:
    if isinstance(config, Objective):
        return _canonical(config.to_dict())
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return _canonical(dataclasses.asdict(config))
    if isinstance(config, dict):
        return {str(k): _canonical(v) for k, v in config.items()}
    if isinstance(config, (list, tuple)):
        return [_canonical(v) for v in config]
    if config is None or isinstance(config, (bool, int, float, str)):
        return config
    raise TypeError(f"config must contain only numbers, strings, booleans, None, lists, dicts, dataclasses or "
                    f"objectives; got a {type(config).__name__} (data goes in data=, its fingerprint in the key)")


def config_key(name: str, config: Any) -> str:
    from . import __version__

    blob = json.dumps({"name": name, "config": _canonical(config), "diffkit": __version__}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def cache_path(name: str, config: Any) -> Path:
    if not isinstance(name, str) or not name or any(c in name for c in "/\\ "):
        raise ValueError(f"name must be a non-empty string without slashes or spaces, got {name!r}")
    return cache_dir() / f"{name}-{config_key(name, config)[:20]}.safetensors"


def _key_content(config: Any, objective: Objective | None, data: Any, model: nn.Module | None) -> Any:
    """What the key hashes (besides the name and diffkit's version): the configuration, and the objective, the
    data's fingerprint and the model's class and arguments when they are known."""
    content: dict[str, Any] = {"config": _canonical(config)}
    if objective is not None:
        if not isinstance(objective, Objective):
            raise TypeError(f"objective must be a diffkit.losses.Objective (losses.objective(...)), got "
                            f"{type(objective).__name__}")
        content["objective"] = objective.to_dict()
    if data is not None:
        content["data"] = fingerprint(data)
    if model is not None and hasattr(model, "_config"):
        content["model"] = checkpoints.model_record(model)
    return content if len(content) > 1 else content["config"]  # a bare config keeps the keys it always had


def _check_snapshots(snapshots: Sequence[int], config: Any, managed: bool) -> list[int]:
    if isinstance(snapshots, (int, str)) or not isinstance(snapshots, Sequence):
        raise TypeError(f"snapshots must be a sequence of step counts, e.g. (800,), got {snapshots!r}")
    if snapshots and not managed:
        raise ValueError("snapshots= needs managed training (a TrainConfig, objective= and data=, no train=)")
    for k in snapshots:
        if isinstance(k, bool) or not isinstance(k, int) or not 0 < k < config.steps:
            raise ValueError(f"snapshots must be step counts strictly between 0 and config.steps = {config.steps}, "
                             f"got {k!r}")
    return sorted(set(snapshots))


def cached_model(name: str, config: Any = None, build: Callable[[], nn.Module] | None = None,
                 train: Callable[[nn.Module], nn.Module] | None = None, *, objective: Objective | None = None,
                 data: Any = None, refresh: bool = False, verbose: bool = True,
                 snapshots: Sequence[int] = ()) -> Any:
    """Load the model trained with this configuration from the cache, or train it and store the result.

    Without ``train``: ``config`` is a :class:`~diffkit.training.TrainConfig`, and ``objective`` and ``data``
    are required; ``build`` is called after seeding with ``config.seed``, the model is trained by a
    :class:`~diffkit.training.Trainer`, and ``(ema_model, info)`` is returned (as
    :func:`diffkit.checkpoints.load_model`).  With ``train``: it receives ``build()`` and returns the module to
    keep (e.g. the EMA weights), which is returned alone; ``objective`` and ``data``, when given, join the key.
    Either way the model records the objective it was trained on (``model.diffkit_objective``: a Trainer's, or
    ``objective=``), stored in the file and restored on load, so that the samplers take its target from it.
    The file also records how long the training took, set on the returned model as ``diffkit_train_seconds``;
    :func:`seconds_saved` adds up what loading skipped.
    """
    from .training import TrainConfig, Trainer, precision_used, seed_everything

    if build is None or not callable(build):
        raise TypeError("build must be a function build() -> nn.Module")
    managed = train is None
    if managed:
        if not isinstance(config, TrainConfig):
            raise TypeError(f"config must be a diffkit.training.TrainConfig when cached_model trains (no train=), "
                            f"got {type(config).__name__}")
        if objective is None or data is None:
            raise TypeError("cached_model trains with objective= (losses.objective(...)) and data=: pass both, "
                            "or your own train=")
        seed_everything(config.seed)
    snapshots = _check_snapshots(snapshots, config, managed)
    model = build()
    if not isinstance(model, nn.Module):
        raise TypeError(f"build must return a torch.nn.Module, got {type(model).__name__}")
    content = _key_content(config, objective, data, model if managed else None)
    if managed:  # the precision the Trainer will compute in here: a bf16 run is another model than an fp32 one
        precision = precision_used(config)
        if precision != "fp32":  # (fp32 runs keep the keys they always had)
            content["precision"] = precision
    path = cache_path(name, content)
    checkpoints.check_writable(path, "the cache file (DIFFKIT_CACHE_DIR)")
    if path.exists() and not refresh:
        try:
            tensors, meta = checkpoints.load(path)
            if meta.get("key" if managed else "config") == content and meta.get("name") == name:
                if managed:
                    out: Any = (model.eval(), checkpoints.load_weights(path, model))
                else:
                    checkpoints.load_state(model, tensors, path)
                    record = meta.get("objective")  # what the model was trained on, for the samplers
                    checkpoints.record_objective(model, Objective.from_dict(record) if record else objective)
                    out = model.eval()
                run = meta.get("run", _run_id(content))  # a snapshot belongs to the run that stored it
                if isinstance(meta.get("seconds"), (int, float)):
                    _LOADED_RUNS[run] = max(_LOADED_RUNS.get(run, 0.0), float(meta["seconds"]))
                    model.diffkit_train_seconds = float(meta["seconds"])
                if verbose:
                    print(f"{name}: loaded from the cache (trained in {meta.get('seconds', '?')} s)")
                return out
            warnings.warn(f"{path} holds a model for another configuration: retraining", stacklevel=2)
        except (checkpoints.CheckpointError, RuntimeError) as exc:
            warnings.warn(f"{path} could not be loaded ({exc}): retraining", stacklevel=2)
    if verbose:
        print(f"{name}: not in the cache, training ...")
    t0 = time.perf_counter()
    if managed:
        trainer = Trainer(model, objective, data, config)
        for k in snapshots:
            trainer.fit(steps=k, progress=verbose)
            snap_content = _key_content(dataclasses.replace(config, steps=k), objective, data, model)
            if "precision" in content:
                snap_content["precision"] = content["precision"]
            snap_stamp = {"name": name, "seconds": round(time.perf_counter() - t0, 1),
                          "created": time.strftime("%Y-%m-%d %H:%M:%S"), "key": snap_content, "run": _run_id(content)}
            checkpoints.save_model(cache_path(name, snap_content), trainer, extra_metadata=snap_stamp)
            if verbose:
                print(f"{name}: snapshot at step {k} stored in the cache")
        trainer.fit(progress=verbose)
        trained = trainer.ema_model
    else:
        trained = train(model)
        if not isinstance(trained, nn.Module):
            raise TypeError(f"train must return the trained torch.nn.Module, got {type(trained).__name__}")
    seconds = round(time.perf_counter() - t0, 1)
    _TRAINED_RUNS.add(_run_id(content))
    model.diffkit_train_seconds = trained.diffkit_train_seconds = seconds
    stamp = {"name": name, "seconds": seconds, "created": time.strftime("%Y-%m-%d %H:%M:%S")}
    if managed:
        checkpoints.save_model(path, trainer, extra_metadata={**stamp, "key": content})
        trained = trained.cpu()
        out = (trained.eval(), checkpoints.load_model(path)[1])
    else:
        if objective is not None and getattr(trained, "diffkit_objective", None) is None:
            checkpoints.record_objective(trained, objective)
        record = getattr(trained, "diffkit_objective", None)
        record = record.to_dict() if isinstance(record, Objective) else None
        checkpoints.save(path, trained.state_dict(), {**stamp, "config": content, "objective": record})
        out = trained.cpu().eval()  # on the CPU, as a model loaded from the cache is (a Trainer may use a GPU)
    if verbose:
        print(f"{name}: trained in {seconds} s, stored in the cache")
    return out


def _run_id(content: Any) -> str:
    return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()[:20]


def seconds_saved() -> float:
    """Seconds of training that :func:`cached_model` skipped in this process by loading models instead of
    training them: the sum of the training times their files record (measured on the machine that trained
    them), each run once — a snapshot is part of its run, and counts nothing when its run was trained or loaded
    here too.  A chapter run from the cache adds it to its own time to state what a cold run costs."""
    return sum(s for run, s in _LOADED_RUNS.items() if run not in _TRAINED_RUNS)
